"""Log lines (issue: the node never stops watching): outcomes, unreadable lines, every format, replay.

Each log is generated here (``synthlog``) and rewritten into every format the parser reads.
"""

from __future__ import annotations

import collections
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from mailpulse.collector.archive import ArchiveWriter
from mailpulse.collector.retrain import _archive_arrays
from mailpulse.pi_firmware.pipeline import CountingSink, load_scoring_model
from mailpulse.pi_firmware.postfix import PostfixParser, parse_lines
from mailpulse.pi_firmware.replay import read_lines, replay
from mailpulse.pi_firmware.synthlog import FORMATS, Expected, generate, reformat

from mailpulse import features as F
from mailpulse.errors import UserError

VERIFY = ("Nov 26 10:00:00 mx postfix/qmgr[9]: 4D1ABC: from=<double-bounce@mx.example>, size=251, nrcpt=1 "
          "(queue active)\n"
          "Nov 26 10:00:01 mx postfix/smtp[7]: 4D1ABC: to=<a@example.net>, relay=mx.example.net[192.0.2.1]:25, "
          "delay=0.3, delays=0/0/0.21/0.09, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)\n"
          "Nov 26 10:00:02 mx postfix/smtp[7]: 4D1ABC: to=<b@example.net>, relay=mx.example.net[192.0.2.1]:25, "
          "delay=0.3, delays=0/0/0.21/0.09, dsn=5.1.1, status=undeliverable (host said: 550 5.1.1 unknown)\n")


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


# -- finding 4: outcomes --------------------------------------------------------------------------


def test_address_verification_is_an_outcome_of_its_own() -> None:
    evs, c = parse_lines(VERIFY.splitlines(), year=2026)
    assert [e.status for e in evs] == ["deliverable", "undeliverable"]
    assert c.status["deliverable"] == c.status["undeliverable"] == 1 and c.status["expired"] == 0
    outcomes = [e.raw_features()["outcome"] for e in evs]
    assert outcomes == [4.0, 5.0] and F.OUTCOMES["expired"] not in outcomes
    assert [e.raw_row()[5] for e in evs] == outcomes
    x = [e.vector()[5] for e in evs]
    assert x == [4 * 4096, 5 * 4096] and len(set(x) | {F.feature("outcome").encode(3)}) == 3
    assert evs[0].payload()["schema"] == F.SCHEMA_VERSION == 2


def test_recognised_but_unreadable_lines_are_unparsed_with_examples(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(VERIFY
                   + "Nov 26 10:00:03 mx postfix/smtp[7]: 4D1ABD: to=c@example.net, relay=none, delay=0.1, "
                     "delays=0/0/0/0.1, dsn=2.0.0, status=sent (ok)\n"
                   + "Nov 26 10:00:04 mx postfix/smtp[7]: 4D1ABE: to=<d@example.net>, relay=none, delay=0.1, "
                     "delays=0/0/0/0.1, dsn=4.0.0, status=softbounce (new)\n"
                   + "Nov 26 10:00:05 mx postfix/qmgr[9]: 4D1ABF: from=e@example.net, size=1, nrcpt=1 (queue active)\n"
                   + "Nov 26 10:00:06 mx postfix/smtpd[5]: connect from unknown[192.0.2.7]\n")
    s = replay(log, CountingSink(), year=2026)
    assert (s.lines, s.events, s.unparsed) == (7, 2, 3)
    reasons = [r for r, _ in s.examples]
    assert any("fields do not parse" in r for r in reasons) and any("'softbounce'" in r for r in reasons)
    assert all(line.startswith("unparsed: ") for line in s.example_lines())


def test_replay_cli_without_config_prints_examples_then_the_summary(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mailpulse.cli import main

    log = tmp_path / "mail.log"
    log.write_text(VERIFY + "garbage\n")
    assert main(["node", "replay", "--no-publish", "--log", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("unparsed: not a log line") and "garbage" in out[0]
    assert re.fullmatch(r"lines 4 events 2 sent 0 deferred 0 bounced 0 expired 0 unparsed 1 lines_per_s \d+ "
                        r"deliverable 1 undeliverable 1", out[-1]), out[-1]
    assert main(["node", "replay", "--log", str(log)]) == 2
    assert "--config" in capsys.readouterr().err


def test_models_and_retraining_respect_the_schema(tmp_path: Path) -> None:
    from test_fw_pipeline import _model_file

    with pytest.raises(UserError, match="feature schema '1'"):
        load_scoring_model(_model_file(tmp_path, "1"), "small")
    rng = np.random.default_rng(0)
    with ArchiveWriter(tmp_path / "archive") as w:
        w.write([{"schema": v, "kind": "delivery", "id": f"e{v}-{i}", "node": "n", "ts": "2026-11-26T10:00:00.000Z",
                  "fields": {}, "x": [int(q) for q in rng.integers(0, 3000, 8)]} for v in (1, 2) for i in range(30)])
    skipped: collections.Counter[str] = collections.Counter()
    x, labels = _archive_arrays(tmp_path / "archive", skipped)
    assert x.shape == (30, F.D) and len(labels) == 30
    assert skipped == {"other_feature_schema": 30}   # schema 1 vectors: counted, not trained on


# -- finding 5: formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "<22>1 2023-11-26T10:00:00.123Z mx postfix/smtp 26709 - - 4D1ABC: to=<a@example.net>, relay=r[192.0.2.1]:25, "
    "delay=0.3, delays=0/0/0.21/0.09, dsn=2.0.0, status=sent (ok)",
    "<22>Nov 26 10:00:00 mx postfix/smtp[26709]: 4D1ABC: to=<a@example.net>, relay=r[192.0.2.1]:25, "
    "delay=0.3, delays=0/0/0.21/0.09, dsn=2.0.0, status=sent (ok)",
    "Thu 2026-11-26 10:00:00 UTC mx postfix/smtp[26709]: 4D1ABC: to=<a@example.net>, relay=r[192.0.2.1]:25, "
    "delay=0.3, delays=0/0/0.21/0.09, dsn=2.0.0, status=sent (ok)",
    "1795687200.123456 mx postfix/smtp[26709]: 4D1ABC: to=<a@example.net>, relay=r[192.0.2.1]:25, "
    "delay=0.3, delays=0/0/0.21/0.09, dsn=2.0.0, status=sent (ok)",
])
def test_formats_that_gave_no_event(line: str) -> None:
    evs, c = parse_lines([line], year=2026)
    assert len(evs) == 1 and c.unparsed == 0 and evs[0].host == "mx" and evs[0].agent == "smtp"


def test_one_log_in_every_format_gives_the_same_counts_and_events(tmp_path: Path) -> None:
    exp = Expected()
    lines = list(generate(6000, seed=11, rfc3339=True, garbage_every=700, expected=exp))
    base: tuple[object, ...] | None = None
    for fmt in FORMATS:
        log = tmp_path / f"{fmt}.log"
        log.write_text("".join(reformat(x, fmt) for x in lines), encoding="utf-8")
        s = replay(log, CountingSink(), year=2026)
        counts = (s.lines, s.events, s.sent, s.deferred, s.bounced, s.expired, s.unparsed, s.deliverable,
                  s.undeliverable)
        assert counts == (exp.lines, exp.events, *(exp.status[k] for k in ("sent", "deferred", "bounced", "expired")),
                          exp.garbage, exp.status["deliverable"], exp.status["undeliverable"]), fmt
        evs, _ = parse_lines([reformat(x, fmt) for x in lines], year=2026)
        joined = [(e.queue_id, e.recipient, e.status, e.size, e.sender, e.message_id, int(e.ts)) for e in evs]
        if base is None:
            base = tuple(joined)
        assert tuple(joined) == base, fmt


def test_a_log_of_which_no_line_parses_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mailpulse.cli import main

    log = tmp_path / "bin.log"
    log.write_bytes(b"\x00\x01\x02 binary\n" * 100)
    with pytest.raises(UserError, match="no line of the log"):
        replay(log, CountingSink())
    assert main(["node", "replay", "--no-publish", "--log", str(log)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert replay(empty, CountingSink()).lines == 0


def test_lines_without_newlines_are_cut_not_held() -> None:
    cuts = [0]
    stream = io.BytesIO(b"a" * (5 << 20) + b"\nNov 26 10:00:00 mx x[1]: y\n" + b"b" * 300_000)
    batches = list(read_lines(stream, 1000, cuts))
    lines = [x for b in batches for x in b]
    assert [len(x) for x in lines] == [1000, 26, 1000] and cuts == [2]


def test_a_line_whose_handling_raises_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[tuple[str, str]] = []
    p = PostfixParser("n", year=2026, on_error=lambda line, why: errors.append((line, why)))
    real = p.timestamp

    def flaky(text: str) -> float:
        if text.endswith("10:00:01"):
            raise RuntimeError(f"clock bug {object()!r}")
        return real(text)

    monkeypatch.setattr(p, "timestamp", flaky)
    evs = list(p.feed(VERIFY.splitlines()))
    assert [e.status for e in evs] == ["undeliverable"]
    assert p.counters.errors == 1 and len(errors) == 1 and "RuntimeError" in errors[0][1] and "0x" not in errors[0][1]


def test_journal_json_with_binary_message_and_multiline() -> None:
    doc = {"__REALTIME_TIMESTAMP": "1795687200000000", "_HOSTNAME": "mx", "SYSLOG_IDENTIFIER": "postfix/smtp",
           "MESSAGE": list(b"4D1ABC: to=<a@ex\xffample.net>, relay=r, delay=1, delays=0/0/0/1, dsn=2.0.0, "
                           b"status=sent (a\nb)")}
    evs, c = parse_lines([json.dumps(doc), '{"MESSAGE": 5}', "{not json"], year=2026)
    assert len(evs) == 1 and evs[0].ts == 1795687200.0 and c.unparsed == 2 and c.not_log == 2
    json.dumps(evs[0].payload())
