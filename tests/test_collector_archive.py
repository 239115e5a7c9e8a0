"""Archive: rotation, compression, reading, and crash safety under kill -9."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailpulse.collector.archive import ArchiveWriter, closed_segments, read_events

from mailpulse.datasets import load_archive

ROOT = Path(__file__).resolve().parent.parent


def _ev(i: int) -> dict:
    return {"schema": 1, "id": f"e{i}", "kind": "delivery", "ts": "2026-11-26T10:00:00.000Z", "fields": {},
            "x": [i, 1, 2, 3, 4, 5, 6, 7], "site": "lab", "node": "n"}


def test_rotation_by_size_and_age_and_reading(tmp_path: Path) -> None:
    now = [1000.0]
    w = ArchiveWriter(tmp_path, max_bytes=2048, max_age_s=60, clock=lambda: now[0])
    for i in range(100):
        w.write([_ev(i)])
        w.sync()
    assert len(w.closed) >= 2, "size rotation did not happen"
    assert all(p.name.endswith(".jsonl.gz") for p in closed_segments(tmp_path))
    w.write([_ev(100)])
    now[0] += 61
    w.tick()  # age rotation
    assert w.open_path is None
    ids = [e["id"] for e in read_events(tmp_path)]
    assert ids == [f"e{i}" for i in range(101)]
    # the trainer's reader sees the same events
    ds = load_archive(tmp_path)
    assert ds.n_samples == 101
    # an open segment is never visible to readers
    w.write([_ev(101)])
    assert w.open_path is not None and w.open_path.name.endswith(".tmp")
    assert len(list(read_events(tmp_path))) == 101
    w.close()
    assert len(list(read_events(tmp_path))) == 102


def test_recover_repairs_leftovers(tmp_path: Path) -> None:
    # a torn .tmp (last line without newline), a stale .part and a .tmp whose .gz already exists
    (tmp_path / "seg-20260101T000000Z-000000.jsonl.tmp").write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c')
    (tmp_path / "seg-20260101T000000Z-000001.jsonl.gz.part").write_bytes(b"garbage")
    gz = tmp_path / "seg-20260101T000000Z-000002.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"id":"d"}\n'))
    (tmp_path / "seg-20260101T000000Z-000002.jsonl.tmp").write_bytes(b'{"id":"d"}\n')
    w = ArchiveWriter(tmp_path)
    assert [p.name for p in w.recovered] == ["seg-20260101T000000Z-000000.jsonl.gz"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith((".tmp", ".part"))]
    assert [e["id"] for e in read_events(tmp_path)] == ["a", "b", "d"]
    w.write([{"id": "e"}])
    w.close()
    assert closed_segments(tmp_path)[-1].name.endswith("000003.jsonl.gz")  # sequence continues


_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from mailpulse.collector.archive import ArchiveWriter
w = ArchiveWriter(sys.argv[1], max_bytes=20000, max_age_s=3600)
i = 0
while True:
    w.write([{"id": f"{sys.argv[3]}-{i}", "x": [i, 0, 0, 0, 0, 0, 0, 0], "pad": "p" * 150}])
    w.sync()
    print(i, flush=True)   # acknowledged: fsynced
    i += 1
"""


def test_kill_9_mid_segment_leaves_no_half_visible_segment(tmp_path: Path) -> None:
    arch = tmp_path / "arch"
    for round_ in range(3):
        tag = f"r{round_}"
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(arch), str(ROOT), tag], stdout=subprocess.PIPE,
                             text=True)
        try:
            acked = -1
            deadline = time.monotonic() + 30
            target = 400 + 137 * round_   # several closed segments and one open one, killed mid-segment
            assert p.stdout is not None
            while acked < target and time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                acked = int(line)
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        assert acked >= target, "the writer did not get far enough"
        assert any(q.name.endswith(".jsonl.tmp") for q in arch.iterdir()), "killed between segments"
        # before any recovery: every closed segment is complete, readable, and the open one invisible
        for seg in closed_segments(arch):
            assert gzip.decompress(seg.read_bytes()).endswith(b"\n")
        visible = [e["id"] for e in read_events(arch)]
        assert len(visible) == len(set(visible))
        # restart: the open segment is recovered with every acknowledged (fsynced) event
        w = ArchiveWriter(arch)
        assert w.recovered
        w.close()
        assert not [q for q in arch.iterdir() if q.name.endswith((".tmp", ".part"))]
        ids = [e["id"] for e in read_events(arch)]
        assert len(ids) == len(set(ids)), "an event appears twice"
        mine = [int(x.split("-")[1]) for x in ids if x.startswith(tag + "-")]
        assert mine[: acked + 1] == list(range(acked + 1)), "an acknowledged event was lost or reordered"
    assert load_archive(arch).n_samples >= 400 + 537 + 674  # the trainer reads the whole archive
