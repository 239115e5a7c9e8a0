"""The disk spool: order, durability across reopen (and SIGKILL), bound and drop policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pi_firmware.spool import Spool, SpoolError


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
        from pi_firmware.spool import Spool
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
