"""The fault-scenario bench (:mod:`mailpulse.lab.scenarios`) on the real lab parts, two scenarios:
the relay-a of a two-relay Postfix chain turns slow; the collector opens an incident during the
fault whose root cause is that relay, by its name (``relay-a.mailpulse.test``, from the
``[relays] names`` map: Postfix knows it only as ``127.0.0.1[127.0.0.1]:PORT``), and it resolves
after the fault ends.  Then relay-b recompresses images: no delivery looks different, only the
probes of route b arrive damaged, and the correlation's probe failure test names relay-b."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from collector_synth import stream
from mailpulse.collector.archive import ArchiveWriter

from mailpulse.errors import UserError
from mailpulse.lab.scenarios import REPLAY_FILE, Plan, main, replay, run_bench, why_not

pytestmark = pytest.mark.xdist_group("faults-bench")


def test_slow_and_recompressing_relays_are_found_and_named() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # history 30 s: the scenarios wait until the correlation's window and history hold the new model's verdicts
    plan = Plan(warmup_events=200, day_s=60.0, fault_s=25.0, recovery_s=15.0, history_s=30.0)
    lines: list[str] = []
    keep = Path(tempfile.mkdtemp(prefix="mpk-"))      # short: Dovecot's sockets live below it
    keep.chmod(0o755)                                 # Postfix and Dovecot run as their own users
    try:
        results, summary = run_bench(plan, ["slow_relay", "recompress"], out=lines.append, normal=False, keep=keep)
        again, _ = replay(Path(summary["work"]), out=lambda s: None)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    assert [r.name for r in results] == ["slow_relay", "recompress"], lines
    r = results[0]
    assert r.found, (lines, summary)
    assert r.root == "relay-a.mailpulse.test", (lines, summary)
    assert r.detect_s is not None and 0 <= r.detect_s <= plan.fault_s + 10, lines
    assert r.resolve_s is not None, (lines, summary)
    assert lines[0].startswith("scenario slow_relay found yes root relay-a.mailpulse.test detect_s ")
    assert summary["traffic"]["refused"] == 0 and summary["traffic"]["sent"] > 0
    rc = results[1]
    assert rc.found and rc.root == "relay-b.mailpulse.test", (lines, summary)
    assert rc.detect_s is not None and 0 <= rc.detect_s <= plan.fault_s + 10, lines
    # the kept work dir replayed offline: the same culprits, found at nearly the same moment
    # (correlation time is event time; the live collector also evaluates on its own timer)
    assert [(r.name, r.found, r.root) for r in again] == [(r.name, r.found, r.root) for r in results], (again, results)
    for live, off in zip(results, again):
        assert off.detect_s is not None and live.detect_s is not None and abs(off.detect_s - live.detect_s) <= 3.0


@pytest.mark.parametrize("extra", [["--no-normal"], ["--scenario", "slow_relay"]])
def test_only_normal_refuses_scenarios_and_no_normal(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--quick", "--only-normal", *extra])
    assert e.value.code == 2 and "--only-normal runs no scenario and needs the normal run" in capsys.readouterr().err


def _kept_run(work: Path) -> Path:
    """A work dir as a kept bench run leaves it: an archive (relay2.example.net fails from 600 s)
    and its replay.json."""
    t0 = 1_790_000_000.0
    evs = list(stream(900, seed=7, fault="relay2.example.net", fault_from=600, t0=t0))
    for i, e in enumerate(evs):
        e["t"] = e["received"] = t0 + i / 20.0
    with ArchiveWriter(work / "archive", fsync=False, clock=lambda: t0 + 900) as w:
        w.write(evs)
    (work / REPLAY_FILE).write_text(json.dumps({
        "names": {}, "correlate": {"history_s": 600.0}, "days": 1, "model_changed": None,
        "normal_window": [t0, t0 + 590], "faults": [
            {"name": "relay2_fails", "culprit": "relay2.example.net", "start": t0 + 600, "end": t0 + 900}]}))
    return work


def test_replay_of_a_kept_run_and_its_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--replay`` runs a kept work dir's archive through the correlation with the run's settings, or
    others (``--set``); bad input is one sentence and status 2.  No root, no lab."""
    work = _kept_run(tmp_path)
    results, summary = replay(work, out=lambda s: None)
    assert results[0].found and results[0].root == "relay2.example.net" and summary["false_incidents"] == []
    assert main(["--replay", str(work), "--set", "min_anomalies=100000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("normal false_incidents 0 days 1")
    assert out[1].startswith("scenario relay2_fails found no root ")      # no relay has that many
    for bad, says in ((["--set", "z_min=high"], "not usable"), (["--set", "no_such=1"], "not usable")):
        assert main(["--replay", str(work), *bad]) == 2
        assert says in capsys.readouterr().err
    assert main(["--replay", str(tmp_path / "archive")]) == 2
    assert "holds no replay.json" in capsys.readouterr().err
    good = (work / REPLAY_FILE).read_text()
    for hostile in ("{", '{"correlate": {}, "names": 3}', '{"correlate": {}, "names": {}, "faults": [{"name": 1}]}',
                    '{"correlate": {}, "names": {}, "normal_window": ["x"]}'):
        (work / REPLAY_FILE).write_text(hostile)
        assert main(["--replay", str(work)]) == 2, hostile
        assert "not usable" in capsys.readouterr().err
    (work / REPLAY_FILE).write_text(good)
    with pytest.raises(SystemExit):
        main(["--set", "z_min=4"])
    with pytest.raises(UserError, match="longer than 40 characters"):
        run_bench(Plan(), [], keep=tmp_path / ("x" * 40))
    private = Path(tempfile.mkdtemp(prefix="mpk-"))   # mode 0700
    try:
        with pytest.raises(UserError, match="cannot be entered by other users"):
            run_bench(Plan(), [], keep=private)
    finally:
        private.rmdir()
