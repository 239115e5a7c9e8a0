"""Acknowledging and silencing incidents: kept across restarts, a hostile state file costs one
sentence, and the alerts honour them (unit tests; the dashboard's side is in test_collector_web)."""

from __future__ import annotations

import json
import logging
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from mailpulse.collector.actions import MAX_ENTRIES, MAX_SILENCE_S, IncidentActions
from mailpulse.collector.alerts import AlertManager
from test_collector_hostile import collector

from mailpulse.config.collector import AlertSettings


def _inc(iid: str = "i1", cause: str = "mx > relay2", severity: str = "major") -> dict[str, Any]:
    return {"id": iid, "root_cause": cause, "severity": severity, "state": "open", "opened": 1000.0,
            "updated": 1000.0, "resolved": None, "affected_nodes": ["lab/node-a"], "affected_routes": [],
            "evidence": {"anomalies": 30, "events": 40, "window_s": 60}}


def test_actions_survive_a_restart(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "state" / "incident-actions.json"
    a = IncidentActions(path, clock=lambda: now[0])
    a.acknowledge("i1", "mx > relay2", by="alice", note="on it")
    a.silence("i2", 600, "mx > relay3", by="bob")
    assert json.loads(path.read_text())["schema"] == 1
    b = IncidentActions(path, clock=lambda: now[0])
    assert b.load_error is None
    v = b.view()
    assert v["i1"]["acked"] == 1000.0 and v["i1"]["acked_by"] == "alice" and v["i1"]["note"] == "on it"
    assert v["i2"]["silenced"] and v["i2"]["silenced_until"] == 1600.0 and v["i2"]["silenced_by"] == "bob"
    b.clear("i1")
    assert "i1" not in IncidentActions(path, clock=lambda: now[0]).view()
    now[0] = 1601.0
    assert not IncidentActions(path, clock=lambda: now[0]).view()["i2"]["silenced"]   # expired
    with pytest.raises(ValueError, match="at most"):
        b.silence("i3", MAX_SILENCE_S + 1)
    with pytest.raises(ValueError):
        b.silence("i3", float("nan"))


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"schema": 2, "incidents": {}}', b"\xff\xfe",
                                     b"[" * 100_000])
def test_a_corrupt_state_file_is_one_sentence_and_a_clean_start(tmp_path: Path, content: bytes,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "incident-actions.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, "mailpulse.collector.actions"):
        a = IncidentActions(path)
    assert a.view() == {}
    assert a.load_error is not None and a.load_error.count(".") >= 1 and "\n" not in a.load_error
    assert [r.getMessage() for r in caplog.records] == [a.load_error]
    assert (tmp_path / "incident-actions.json.bad").read_bytes() == content and not path.exists()
    a.acknowledge("i1")                      # and it works from there
    assert IncidentActions(path).view()["i1"]["acked"] is not None


def test_hostile_entries_are_skipped_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "incident-actions.json"
    good = {"root_cause": "x", "acked": 5.0, "acked_by": "a", "silenced_until": None, "changed": 5.0}
    path.write_text(json.dumps({"schema": 1, "incidents": {
        "ok": good, "str": "nope", "nothing": {"acked": None}, "nan": {"acked": "yesterday"},
        "long": {**good, "acked_by": "x" * 10_000}, "x" * 500: good}}))
    v = IncidentActions(path).view()
    assert sorted(v) == ["long", "ok"] and len(v["long"]["acked_by"]) == 200


def test_entries_are_bounded(tmp_path: Path) -> None:
    now = [0.0]
    a = IncidentActions(None, clock=lambda: now[0])
    for i in range(MAX_ENTRIES + 50):
        now[0] += 1
        a.acknowledge(f"i{i}")
    assert len(a.view()) == MAX_ENTRIES and "i0" not in a.view() and f"i{MAX_ENTRIES + 49}" in a.view()


def _manager(actions: IncidentActions, now: list[float]) -> tuple[AlertManager, list[EmailMessage]]:
    sent: list[EmailMessage] = []
    s = AlertSettings(to=["ops@example.net"], rate_limit_per_hour=100, min_interval_s=0)
    return AlertManager(s, send=sent.append, clock=lambda: now[0], actions=actions), sent


def test_a_silenced_incident_sends_nothing_until_the_silence_expires() -> None:
    now = [1000.0]
    actions = IncidentActions(None, clock=lambda: now[0])
    am, sent = _manager(actions, now)
    assert am.handle("opened", _inc())
    actions.silence("i1", 600, "mx > relay2", by="alice")
    assert not am.handle("severity", _inc(severity="critical"), previous="major")
    # a new incident at the same root cause is silenced too; one elsewhere is not
    assert not am.handle("opened", _inc("i9"))
    assert am.handle("opened", _inc("j1", cause="mx > relay3"))
    now[0] += 300
    assert not am.handle("resolved", dict(_inc(), state="resolved", resolved=now[0]))
    assert am.suppressed["silenced"] == 3
    assert [m["Subject"].split(":")[0] for m in sent] == ["[mailpulse] OPEN", "[mailpulse] OPEN"]
    # the silence expires: the next transition is mailed
    now[0] += 301
    assert am.handle("severity", _inc("i9", severity="critical"), previous="major")
    assert len(sent) == 3


def test_an_acknowledged_incident_stops_repeating_but_its_resolution_is_mailed() -> None:
    now = [1000.0]
    actions = IncidentActions(None, clock=lambda: now[0])
    am, sent = _manager(actions, now)
    assert am.handle("opened", _inc())
    actions.acknowledge("i1", "mx > relay2", by="alice")
    assert not am.handle("severity", _inc(severity="critical"), previous="major")
    assert not am.handle("severity", _inc(severity="major"), previous="critical")
    assert am.suppressed["acknowledged"] == 2
    assert am.handle("resolved", dict(_inc(), state="resolved", resolved=now[0]))
    assert len(sent) == 2
    # clearing the acknowledgement brings the mails back
    actions.clear("i1")
    assert am.handle("severity", _inc(severity="critical"), previous="major")


def test_a_collector_with_a_corrupt_state_file_starts_clean_and_says_so(tmp_path: Path) -> None:
    state = tmp_path / "archive" / "state"
    state.mkdir(parents=True)
    (state / "incident-actions.json").write_bytes(b'{"schema": 1, "incidents": ')
    col = collector(tmp_path)
    assert col.actions.view() == {}
    snap = col.state.snapshot()
    assert snap["actions"] == {} and "set aside" in snap["actions_error"]
    assert (state / "incident-actions.json.bad").exists()
    col.actions.silence("i1", 60)
    assert json.loads((state / "incident-actions.json").read_text())["incidents"]["i1"]["silenced_until"]
