"""The disk spool: order, durability across reopen (and SIGKILL), bound and drop policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mailpulse.pi_firmware.spool import Spool, SpoolError


def test_order_ack_and_duplicates(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_rows=100)
    assert s.put_many([("events", f"e{i}", f"p{i}".encode()) for i in range(10)]) == 10
    assert s.put_many([("events", "e3", b"again"), ("anomalies", "e3", b"p3")]) == 1  # (id, channel) unique
    rows = s.peek(100)
    assert [r.event_id for r in rows] == [f"e{i}" for i in range(10)] + ["e3"]
    assert rows[3].payload == b"p3" and rows[-1].channel == "anomalies"
    assert [r.event_id for r in s.peek(3, after=rows[4].seq)] == ["e5", "e6", "e7"]
    assert s.ack([r.seq for r in rows[:4]]) == 4
    assert s.ack([rows[0].seq]) == 0
    assert len(s) == 7 and s.stats().acked == 4
    s.close()


def test_reopen_keeps_rows_and_counters(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_rows=3)
    s.put_many([("events", f"e{i}", b"x") for i in range(5)])
    s.close()
    s = Spool(tmp_path / "s.db", max_rows=3)
    assert [r.event_id for r in s.peek(10)] == ["e2", "e3", "e4"]
    st = s.stats()
    assert st.depth == 3 and st.full and st.dropped_events == 2 and st.dropped_anomalies == 0
    s.close()


def test_bound_drops_ordinary_events_before_anomalies(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_rows=4)
    s.put_many([("anomalies", "a0", b"x"), ("events", "e0", b"x"), ("anomalies", "a1", b"x"), ("events", "e1", b"x")])
    s.put_many([("events", "e2", b"x"), ("events", "e3", b"x")])
    assert [r.event_id for r in s.peek(10)] == ["a0", "a1", "e2", "e3"]
    s.put_many([("anomalies", "a2", b"x"), ("anomalies", "a3", b"x"), ("anomalies", "a4", b"x")])
    # all ordinary events go first, then the oldest anomaly
    assert [r.event_id for r in s.peek(10)] == ["a1", "a2", "a3", "a4"]
    st = s.stats()
    assert (st.dropped_events, st.dropped_anomalies) == (4, 1)
    s.close()


def test_rows_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    """A row is durable once put_many returned: kill -9 the writer right after, all rows are there."""
    db = tmp_path / "s.db"
    code = textwrap.dedent(f"""
        import os, sys
        from mailpulse.pi_firmware.spool import Spool
        s = Spool({str(db)!r})
        for k in range(50):
            s.put_many([("events", f"{{k}}-{{i}}", b"x" * 200) for i in range(100)])
            print(k, flush=True)
        os.kill(os.getpid(), 9)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert p.stdout.split()[-1] == "49"
    s = Spool(db)
    assert len(s) == 5000
    assert s.peek(1)[0].event_id == "0-0"
    s.close()


def test_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notadb"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(SpoolError, match="cannot open the spool"):
        Spool(bad)
    with pytest.raises(ValueError, match="max_rows"):
        Spool(tmp_path / "x.db", max_rows=0)


def test_batches_are_messages_and_partial_drops_are_rewritten(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_rows=8, max_events=3, max_bytes=1024)
    assert s.put_many([("events", f"e{i}", f'{{"i":{i}}}'.encode()) for i in range(5)]
                      + [("anomalies", "e1", b'{"i":1}')]) == 6
    b = s.peek_batches(10)
    assert [(x.channel, x.n, x.payload) for x in b] == [
        ("events", 3, b'{"i":0},{"i":1},{"i":2}'), ("events", 2, b'{"i":3},{"i":4}'), ("anomalies", 1, b'{"i":1}')]
    assert s.peek_batches(10, after=b[0].seq)[0].seq == b[1].seq
    # 4 more ordinary events: 10 > 8, the two oldest ordinary events go (part of the first batch)
    s.put_many([("events", f"e{i}", f'{{"i":{i}}}'.encode()) for i in range(5, 9)])
    assert [r.event_id for r in s.peek(3)] == ["e2", "e3", "e4"]
    first = s.peek_batches(1)[0]
    assert (first.n, first.payload) == (1, b'{"i":2}')          # published without the dropped events
    assert s.ack_batches([first.seq, first.seq]) == 1 and len(s) == 7
    assert s.stats().dropped_events == 2 and s.stats().acked == 1
    # bytes bound: a batch never exceeds max_bytes of joined JSON (an oversize event stands alone)
    s.put_many([("events", f"big{i}", b"x" * 400) for i in range(3)] + [("events", "huge", b"y" * 2000)])
    sizes = [len(x.payload) for x in s.peek_batches(100) if x.payload[:1] in (b"x", b"y")]
    assert sizes == [801, 400, 2000]
    s.close()


def test_dedup_window_survives_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", dedup_window=4)
    s.put_many([("events", f"e{i}", b"x") for i in range(6)])
    s.close()
    s = Spool(tmp_path / "s.db", dedup_window=4)
    assert s.put_many([("events", "e5", b"x"), ("events", "e2", b"x")]) == 0   # the newest 4 are remembered
    assert s.put_many([("events", "e0", b"x")]) == 1                            # beyond the window: queued again
    s.close()


def test_a_bad_event_id_rolls_the_whole_call_back(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    with pytest.raises(ValueError, match="U\\+001F"):
        s.put_many([("events", "ok", b"1"), ("events", "bad\x1fid", b"2")])
    assert len(s) == 0 and s.peek(10) == []
    assert s.put_many([("events", "ok", b"1")]) == 1          # not remembered as a duplicate either
    s.close()
