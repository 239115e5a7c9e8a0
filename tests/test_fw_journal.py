"""The journald source against a real systemd-journald and journalctl.

Each test starts ``systemd-journald`` in a journal namespace of its own (its sockets under
``/run/systemd/journal.<ns>``, its files under ``/var/log/journal/<machine-id>.<ns>``, both removed
afterwards) and writes Postfix's lines to the namespace's ``/dev/log`` socket as RFC 3164
datagrams, as Postfix's ``syslog()`` does.  ``journalctl --namespace`` reads them back.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from mailpulse.pi_firmware.events import DeliveryEvent, Event
from mailpulse.pi_firmware.journal import JournalSettings, JournalSource
from mailpulse.pi_firmware.node import build_node
from mailpulse.pi_firmware.pipeline import CountingSink
from mailpulse.pi_firmware.replay import replay
from mailpulse.pi_firmware.synthlog import Expected, generate

from mailpulse.config.node import check_config

JOURNALD = "/lib/systemd/systemd-journald"
IDENTIFIERS = ["postfix/smtp", "postfix/qmgr", "postfix/cleanup", "postfix/local", "postfix/lmtp",
               "postfix/virtual", "postfix/pipe", "postfix/smtpd", "postfix/bounce", "postfix/postscreen"]
_counter = itertools.count()


@pytest.fixture
def journal_ns() -> Iterator[str]:
    if not (os.path.exists(JOURNALD) and shutil.which("journalctl")):
        pytest.skip("systemd-journald or journalctl is not installed")
    if os.geteuid() != 0:
        pytest.skip("systemd-journald needs root to open its namespace sockets under /run/systemd")
    ns = f"mailpulse-test-{os.getpid()}-{next(_counter)}"
    proc = subprocess.Popen([JOURNALD, ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/run/systemd/journal.{ns}/dev-log"):
            assert proc.poll() is None and time.monotonic() < deadline, "systemd-journald did not start"
            time.sleep(0.02)
        yield ns
    finally:
        proc.terminate()
        proc.wait(10)
        for d in glob.glob(f"/var/log/journal/*.{ns}") + glob.glob(f"/run/log/journal/*.{ns}") + \
                [f"/run/systemd/journal.{ns}"]:
            shutil.rmtree(d, ignore_errors=True)


def _syslog(ns: str, lines: list[str]) -> None:
    """Send log lines (``STAMP HOST PROG[PID]: MSG``) to journald as Postfix's syslog() would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for line in lines:
            stamp, rest = line[:15], line[16:].split(" ", 1)[1].rstrip("\n")
            s.sendto(f"<22>{stamp} {rest}".encode(), f"/run/systemd/journal.{ns}/dev-log")


def _log(n: int, seed: int) -> tuple[list[str], Expected]:
    exp = Expected()
    return list(generate(n, seed, expected=exp)), exp


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, evs: Sequence[Event]) -> None:
        self.events.extend(evs)

    def wait(self, n: int, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.events) >= n


def _run(src: JournalSource, emit: Collect) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
    t.start()
    return t, stop


def test_follows_the_journal_and_keeps_its_cursor_across_restarts(journal_ns: str, tmp_path: Path) -> None:
    lines, _ = _log(1200, seed=21)
    first, second = lines[:700], lines[700:]
    settings = JournalSettings(enabled=True, identifiers=IDENTIFIERS, namespace=journal_ns,
                               state_file=str(tmp_path / "journal.cursor"), from_start=True, poll_s=0.05)
    # what the file follower finds in the same lines: the reference
    want_first = replay_lines(tmp_path / "a.log", first)
    src = JournalSource(settings, "n1", year=2026)
    got = Collect()
    t, stop = _run(src, got)
    _syslog(journal_ns, first)
    assert got.wait(want_first), (len(got.events), want_first, src.counters())
    time.sleep(0.3)
    stop.set()
    t.join(10)
    assert len(got.events) == want_first and (tmp_path / "journal.cursor").exists()
    assert src.counters()["bad_entries"] == 0 and src.parser is not None and src.parser.counters.unparsed == 0
    # while the source is down, more mail; the restarted source reads exactly the new entries
    _syslog(journal_ns, second)
    again = Collect()
    src2 = JournalSource(settings, "n1", year=2026)
    t, stop = _run(src2, again)
    want_all = replay_lines(tmp_path / "b.log", lines)
    assert again.wait(want_all - want_first), (len(again.events), want_all - want_first)
    time.sleep(0.5)
    stop.set()
    t.join(10)
    ids = [e.id for e in got.events + again.events]
    assert len(ids) == len(set(ids)) == want_all
    # the join survived the restart: deliveries read after it still carry qmgr's size
    sizes = [e.size for e in again.events if isinstance(e, DeliveryEvent) and e.status == "sent"]
    assert sizes and all(s is not None for s in sizes)


def replay_lines(path: Path, lines: list[str]) -> int:
    path.write_text("".join(lines))
    return replay(path, CountingSink(), year=2026).events


def test_a_dead_journalctl_is_reported(tmp_path: Path) -> None:
    settings = JournalSettings(enabled=True, identifiers=["postfix/smtp"], journalctl=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError):
        JournalSource(settings, "n1").run(Collect(), threading.Event())
    fake = tmp_path / "journalctl"
    fake.write_text("#!/bin/sh\necho 'Failed to add match: Invalid argument' >&2\nexit 1\n")
    fake.chmod(0o755)
    settings.journalctl = str(fake)
    with pytest.raises(RuntimeError, match="status 1: Failed to add match"):
        JournalSource(settings, "n1").run(Collect(), threading.Event())


@pytest.mark.parametrize("fmt", ["short", "short-precise", "short-iso", "short-iso-precise", "short-full",
                                 "short-unix", "json"])
def test_replay_reads_every_journalctl_export_alike(journal_ns: str, tmp_path: Path, fmt: str) -> None:
    lines, exp = _log(1500, seed=5)
    _syslog(journal_ns, lines)
    out = tmp_path / f"{fmt}.log"
    deadline = time.monotonic() + 20
    while True:
        with out.open("wb") as f:
            subprocess.run(["journalctl", f"--namespace={journal_ns}", "--no-pager", "-o", fmt,
                            *[f"--identifier={t}" for t in IDENTIFIERS]], stdout=f, check=True)
        n = sum(1 for _ in out.open("rb"))
        if n >= len(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    s = replay(out, CountingSink(), year=2026)
    assert (s.lines, s.unparsed) == (len(lines), 0), s.examples
    assert (s.events, s.sent, s.deferred, s.bounced, s.expired, s.deliverable, s.undeliverable) == (
        exp.events, *(exp.status[k] for k in ("sent", "deferred", "bounced", "expired", "deliverable",
                                              "undeliverable")))


def test_node_run_wiring_follows_the_journal(journal_ns: str, tmp_path: Path) -> None:
    """``[journal]`` in the node config: ``build_node`` adds the source, the daemon spools its events."""
    cfg = tmp_path / "node.toml"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg.write_text("\n".join([
        "[node]", 'id = "n1"', 'site = "lab"', f'state_dir = "{tmp_path / "state"}"',
        "[mqtt]", 'host = "127.0.0.1"', f"port = {port}", 'username = "n1"', 'password_env = "MP_TEST_PW"',
        "[probe]", "enabled = false", "[postfix]", "year = 2026",
        "[journal]", "enabled = true", f"identifiers = {IDENTIFIERS!r}".replace("'", '"'),
        f'namespace = "{journal_ns}"', "from_start = true", "poll_s = 0.05",
    ]) + "\n")
    os.environ["MP_TEST_PW"] = "x"
    loaded, errors = check_config(cfg)
    assert not errors and loaded is not None and loaded.journal.state_file == str(tmp_path / "state" / "journal.cursor")
    lines, _ = _log(400, seed=2)
    want = replay_lines(tmp_path / "a.log", lines)
    node = build_node(loaded)
    node.start()
    try:
        _syslog(journal_ns, lines)
        deadline = time.monotonic() + 30
        while len(node.spool) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(node.spool) == want, (len(node.spool), want, node.errors)
        assert node._status()["sources"]["journal"]["events"] == want
    finally:
        node.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace(f"identifiers = {IDENTIFIERS!r}".replace("'", '"'), "units = []"))
    _, errors = check_config(bad)
    assert errors == ["[journal] is enabled but names no units and no identifiers to read."]
