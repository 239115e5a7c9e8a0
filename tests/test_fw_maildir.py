"""The Maildir watcher: new messages become message events once, across restarts and new/ -> cur/ moves."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from mailpulse.pi_firmware.events import MessageEvent
from mailpulse.pi_firmware.maildir import MaildirWatcher


def _maildir(tmp_path: Path) -> Path:
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    return md


def test_new_messages_once(tmp_path: Path, repo_data: Path) -> None:
    md = _maildir(tmp_path)
    shutil.copy(repo_data / "mail" / "sa_009.eml", md / "new" / "1.old.host")
    state = tmp_path / "seen.json"
    w = MaildirWatcher(md, "n1", state)
    assert w.poll() == []                                     # what was there at the first start is old
    shutil.copy(repo_data / "mail" / "sa_001.eml", md / "new" / "2.a.host")
    (ev,) = w.poll()
    assert isinstance(ev, MessageEvent)
    assert ev.KIND == "message" and ev.key == "2.a.host" and len(ev.hops) == 6
    assert ev.mailbox_delay_s is not None and ev.mailbox_delay_s > 0
    x = ev.vector()
    assert len(x) == 8 and ev.payload()["fields"]["hops"][0]["by"] == "milkplus"
    w.commit()
    (md / "new" / "2.a.host").rename(md / "cur" / "2.a.host:2,S")   # a reader saw it
    assert w.poll() == []
    w2 = MaildirWatcher(md, "n1", state)                      # restart
    assert w2.poll() == []
    shutil.copy(repo_data / "mail" / "sa_004.eml", md / "new" / "3.b.host")
    (ev3,) = w2.poll()
    assert isinstance(ev3, MessageEvent)
    assert ev3.mime["attachments"] == 1 and ev3.id != ev.id


def test_backlog_and_run_loop(tmp_path: Path, repo_data: Path) -> None:
    md = _maildir(tmp_path)
    for i, f in enumerate(sorted((repo_data / "mail").glob("*.eml"))):
        shutil.copy(f, md / "new" / f"{i}.x.host")
    got: list = []
    stop = threading.Event()
    w = MaildirWatcher(md, "n1", backlog=True, poll_s=0.01)

    def emit(evs: list) -> None:
        got.extend(evs)
        stop.set()

    w.run(emit, stop)
    assert len(got) == 9 and len({e.id for e in got}) == 9
