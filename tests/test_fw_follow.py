"""The log follower: appends, partial lines, rename and copytruncate rotation, restarts."""

from __future__ import annotations

import os
from pathlib import Path

from mailpulse.pi_firmware.follow import Follower


def _append(p: Path, text: str) -> None:
    with p.open("a") as f:
        f.write(text)


def test_appends_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("a\nb\n")
    f = Follower(log, from_start=True)
    assert list(f.read_lines()) == ["a", "b"]
    _append(log, "c\npart")
    assert list(f.read_lines()) == ["c"]
    _append(log, "ial\n")
    assert list(f.read_lines()) == ["partial"]
    assert list(f.read_lines()) == []


def test_starts_at_end_without_state(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("old\n")
    f = Follower(log)
    assert list(f.read_lines()) == []
    _append(log, "new\n")
    assert list(f.read_lines()) == ["new"]


def test_rename_rotation_reads_old_tail_then_new_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("1\n")
    f = Follower(log, from_start=True)
    assert list(f.read_lines()) == ["1"]
    _append(log, "2\n")                       # written before the rotation, not yet read
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("3\n")
    assert list(f.read_lines()) == ["2", "3"]
    assert f.rotations == 1


def test_copytruncate_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("one line that is long\n")
    f = Follower(log, from_start=True)
    assert list(f.read_lines()) == ["one line that is long"]
    log.write_text("x\n")                     # truncated and rewritten
    assert list(f.read_lines()) == ["x"]
    assert f.truncations == 1
    with log.open("r+") as h:                 # truncated, then grown beyond the old offset
        h.truncate(0)
    log.write_text("a different first line, longer than before\n")
    assert list(f.read_lines()) == ["a different first line, longer than before"]
    assert f.truncations == 2


def test_restart_continues_where_it_was(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "pos.json"
    log.write_text("a\nb\n")
    f = Follower(log, state, from_start=True)
    assert list(f.read_lines()) == ["a", "b"]
    f.commit()
    f.close()
    _append(log, "c\n")
    g = Follower(log, state)
    assert list(g.read_lines()) == ["c"]
    # uncommitted lines are read again after a restart (at least once)
    h = Follower(log, state)
    assert list(h.read_lines()) == ["c"]


def test_restart_after_rotation_while_down(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "pos.json"
    log.write_text("a\n")
    f = Follower(log, state, from_start=True)
    assert list(f.read_lines()) == ["a"]
    f.commit()
    f.close()
    _append(log, "b\n")
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("c\n")
    g = Follower(log, state)
    assert list(g.read_lines()) == ["b", "c"]
    g.commit()
    assert list(Follower(log, state).read_lines()) == []


def test_restart_after_file_replaced_in_place(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "pos.json"
    log.write_text("aaaa\nbbbb\n")
    f = Follower(log, state, from_start=True)
    list(f.read_lines())
    f.commit()
    f.close()
    with log.open("r+b") as h:                # same inode, other content, longer
        h.write(b"zzzz\nyyyy\nxxxx\n")
    assert list(Follower(log, state).read_lines()) == ["zzzz", "yyyy", "xxxx"]


def test_missing_file_and_binary_garbage(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    f = Follower(log, from_start=True, max_line=10)
    assert list(f.read_lines()) == []
    log.write_bytes(b"\xff\xfe\x00ok\n" + b"y" * 50 + b"\nz\n")
    out = list(f.read_lines())
    assert out[0] == b"\xff\xfe\x00ok".decode("utf-8", "surrogateescape")
    assert out[1] == "y" * 10 and out[2] == "z" and f.long_lines == 1


def test_consumer_may_stop_early(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "pos.json"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    f = Follower(log, state, from_start=True, chunk=4096)
    got: list[str] = []
    while True:
        batch = []
        for line in f.read_lines():
            batch.append(line)
            if len(batch) >= 37:
                break
        if not batch:
            break
        got.extend(batch)
        f.commit()
        if len(got) == 37 * 5:   # a restart in the middle: the saved position is exact
            f.close()
            f = Follower(log, state, chunk=4096)
    assert got == [f"line {i}" for i in range(1000)]
