"""Starting the Flink job from the ``mailpulse`` command (no pyflink here).

PyFlink lives in its own virtual environment (``.venv-flink``, made by ``make setup``; its pins
conflict with the ``pynq`` extra's).  :func:`flink_python` finds an interpreter that has it: this
one, ``$MAILPULSE_FLINK_PYTHON``, or the checkout's ``.venv-flink``; :func:`run_job` starts the
job there (``python -m mailpulse.collector.flink``) and yields its output records as they come.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailpulse.collector.archive import closed_segments
from mailpulse.collector.correlate import CorrelateSettings

import mailpulse
from mailpulse.errors import UserError

from .feed import IncidentFeed

__all__ = ["JobOptions", "flink_python", "latest_checkpoint", "run_job"]


def flink_python() -> str:
    """An interpreter with pyflink (this one first); :class:`UserError` when there is none."""
    if importlib.util.find_spec("pyflink") is not None:
        return sys.executable
    env = os.environ.get("MAILPULSE_FLINK_PYTHON")
    if env:
        if not os.access(env, os.X_OK):
            raise UserError(f"MAILPULSE_FLINK_PYTHON={env} is not an executable Python")
        return env
    venv = Path(mailpulse.__file__).resolve().parent.parent / ".venv-flink" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise UserError("PyFlink is not installed here: run 'make setup' (it makes .venv-flink) or point "
                    "MAILPULSE_FLINK_PYTHON at a Python that has apache-flink and mailpulse")


def latest_checkpoint(state_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete retained checkpoint (``chk-N`` with ``_metadata``) below ``state_dir``."""
    root = Path(state_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p.parent for p in root.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])), default=None)


@dataclass
class JobOptions:
    """What ``mailpulse flink run`` passes to the job."""

    archives: Sequence[str]
    settings: CorrelateSettings = field(default_factory=CorrelateSettings)
    #: ``[relays] names`` (the tree's relay names and the interval routes)
    names: dict[str, str] = field(default_factory=dict)
    #: routes with a latency interval (the collector's ``[metrics] label_values``)
    interval_routes: int = 50
    follow: bool = False
    parallelism: int = 2
    state_dir: str | None = None
    incidents: str | None = None
    checkpoint_ms: int = 2000
    idle_s: float = 30.0
    python_mode: str = "thread"
    extra: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        out = ["--settings", self.settings.model_dump_json(), "--parallelism", str(self.parallelism),
               "--checkpoint-ms", str(self.checkpoint_ms), "--idle-s", str(self.idle_s),
               "--python-mode", self.python_mode, "--relay-names", json.dumps(self.names),
               "--interval-routes", str(self.interval_routes)]
        for a in self.archives:
            out += ["--archive", str(Path(a).resolve())]
        if self.follow:
            out.append("--follow")
        if self.state_dir:
            out += ["--state-dir", str(Path(self.state_dir).resolve())]
            chk = latest_checkpoint(self.state_dir)
            if chk is not None:
                out += ["--resume-from", str(chk)]
        if self.incidents:
            out += ["--incidents", str(Path(self.incidents).resolve())]
        return out + self.extra


def check_archives(archives: Sequence[str], follow: bool) -> None:
    """Each archive folder exists (and, for a finished archive, holds closed segments)."""
    for a in archives:
        if not Path(a).is_dir():
            raise UserError(f"archive folder {a} does not exist")
        if not follow and not closed_segments(a):
            raise UserError(f"archive folder {a} holds no closed segments (*.jsonl.gz)")


def job_command(opts: JobOptions) -> list[str]:
    return [flink_python(), "-m", "mailpulse.collector.flink", *opts.argv()]


def run_job(opts: JobOptions) -> Iterator[dict[str, Any]]:
    """Run the job; yield its output records (see :mod:`.steps`) as they come (with ``follow``,
    from the incident log as its checkpoints commit them; a temporary one without ``incidents``).

    :class:`UserError` when it fails (with the last lines of its error output).
    """
    check_archives(opts.archives, opts.follow)
    with tempfile.TemporaryDirectory(prefix="mailpulse-flink-") as tmp:
        if opts.follow and not opts.incidents:
            opts.incidents = tmp
        if not opts.state_dir:
            # checkpoints always go to files: in the JobManager's memory they are capped at 5 MB, which
            # the global step's state passed on a 512-node archive (7.3 MB); a temporary one resumes nothing
            opts.state_dir = str(Path(tmp, "state"))
        with tempfile.TemporaryFile("w+") as err:
            with subprocess.Popen(job_command(opts), stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1) as p:
                assert p.stdout is not None
                try:
                    yield from (_follow(p, IncidentFeed(opts.incidents or tmp)) if opts.follow else
                                (json.loads(x) for x in p.stdout if x.startswith("{")))
                finally:
                    if p.poll() is None:
                        p.terminate()
                rc = p.wait()
            err.seek(0)
            tail = err.read()
    if rc != 0 and rc != -15:
        causes = [ln.strip() for ln in tail.splitlines() if "Caused by" in ln or "Error" in ln]
        raise UserError(f"the Flink job failed (status {rc}): {causes[-1] if causes else tail[-300:].strip()}")


def _follow(p: subprocess.Popen[str], feed: IncidentFeed) -> Iterator[dict[str, Any]]:
    while p.poll() is None:
        yield from feed.poll()
        time.sleep(0.2)
    yield from feed.poll()
