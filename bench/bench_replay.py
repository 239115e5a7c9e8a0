"""Replay throughput against pflogsumm on the same large, realistic Postfix log.

Generates a deterministic log (``pi_firmware.synthlog``: smtpd/cleanup/qmgr/smtp/local/lmtp/virtual/
pipe lines, deferrals with retries, bounces, expiries; cached under ``build/bench``), then times

* ``pflogsumm`` (Debian package; counts and summarises), and
* ``mailpulse node replay --no-publish`` (parse, join by queue id, featurise, score with the model
  backend in batches),

and prints lines/s for both (wall clock and CPU time: the machine may be shared, CPU time is the
fairer comparison) and their ratio.  ``MAILPULSE_BENCH_LINES`` sets the log size (default 1M).

Then, when Mosquitto is installed, ``mailpulse node replay`` *with* publishing (spool + QoS 1 to a
local Mosquitto started on loopback, timed until the broker acknowledged every event) on the first
``MAILPULSE_BENCH_PUBLISH_LINES`` lines (default 200k).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pi_firmware.cli import replay
from pi_firmware.pipeline import CountingSink
from pi_firmware.synthlog import Expected, generate

ROOT = Path(__file__).resolve().parent.parent


def make_log(n: int, seed: int = 1) -> tuple[Path, int]:
    d = ROOT / "build" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"postfix-{n}-seed{seed}.log"
    if not path.exists():
        exp = Expected()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.writelines(generate(n, seed, expected=exp))
        tmp.rename(path)
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return path, lines


def time_pflogsumm(path: Path) -> tuple[float, float] | None:
    exe = shutil.which("pflogsumm")
    if exe is None:
        print("pflogsumm: not installed (apt-get install pflogsumm)")
        return None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([exe, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def time_replay(path: Path) -> tuple[float, float, str]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    s = replay(path, CountingSink(), year=2026)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return wall, cpu, s.line()


def time_publish(path: Path, n_lines: int) -> str | None:
    if shutil.which("mosquitto") is None:
        print("publishing: mosquitto is not installed")
        return None
    import tempfile

    from mailpulse.testing.servers import Mosquitto
    with tempfile.TemporaryDirectory(prefix="mailpulse-bench-") as tmp:
        d = Path(tmp)
        small = d / "mail.log"
        with path.open() as src, small.open("w") as dst:
            for i, line in enumerate(src):
                if i >= n_lines:
                    break
                dst.write(line)
        broker = Mosquitto(d / "mq", {"bench": "pw"}, ["user bench", "topic readwrite mailpulse/#"], tls=False)
        broker.start()
        try:
            cfg = d / "node.toml"
            cfg.write_text(f'[node]\nid = "bench"\nsite = "lab"\nstate_dir = "{d}/state"\n'
                           f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = "bench"\n'
                           'password_env = "MAILPULSE_BENCH_PW"\nha_discovery = false\n[postfix]\nyear = 2026\n')
            env = dict(os.environ, MAILPULSE_BENCH_PW="pw")
            r = subprocess.run([sys.executable, "-m", "mailpulse.cli", "node", "replay", "--config", str(cfg),
                                "--log", str(small)], capture_output=True, text=True, env=env, timeout=1800)
            if r.returncode != 0:
                print(f"publishing: replay failed: {r.stderr.strip()[-500:]}")
                return None
            return r.stdout.strip().splitlines()[-1]
        finally:
            broker.stop()


def main() -> int:
    n = int(os.environ.get("MAILPULSE_BENCH_LINES", "1000000"))
    path, lines = make_log(n)
    print(f"log: {path} ({lines} lines, {path.stat().st_size / 1e6:.0f} MB)")
    pf = time_pflogsumm(path)
    wall, cpu, line = time_replay(path)
    print(f"replay --no-publish: {line}")
    print(f"replay --no-publish: {lines / wall:,.0f} lines/s wall, {lines / cpu:,.0f} lines/s CPU")
    if pf is not None:
        pw, pc = pf
        print(f"pflogsumm:           {lines / pw:,.0f} lines/s wall, {lines / pc:,.0f} lines/s CPU")
        print(f"ratio replay/pflogsumm: {pw / wall:.2f} (wall), {pc / cpu:.2f} (CPU)")
    pub = time_publish(path, int(os.environ.get("MAILPULSE_BENCH_PUBLISH_LINES", "200000")))
    if pub is not None:
        print(f"replay (publishing, QoS 1, local mosquitto): {pub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
