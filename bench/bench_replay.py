"""Replay throughput against pflogsumm on the same large, realistic Postfix log.

Generates a deterministic log (``mailpulse.pi_firmware.synthlog``: smtpd/cleanup/qmgr/smtp/local/lmtp/virtual/
pipe lines, deferrals with retries, bounces, expiries; cached under ``build/bench``), then times

* ``pflogsumm`` (Debian package; counts and summarises), and
* ``mailpulse node replay --no-publish`` (parse, join by queue id, featurise, score with the model
  backend in batches),

and prints lines/s for both (wall clock and CPU time: the machine may be shared, CPU time is the
fairer comparison) and their ratio.  ``MAILPULSE_BENCH_LINES`` sets the log size (default 1M).

Then, when Mosquitto is installed, ``mailpulse node replay`` *with* publishing (spool on disk +
QoS 1 to a local Mosquitto started on loopback, timed until the broker acknowledged every event: the
command's own code path, :func:`mailpulse.pi_firmware.replay.replay_node`, run in this process so that its CPU time - all threads:
parser, pump, paho - can be measured apart from Mosquitto's) on the first
``MAILPULSE_BENCH_PUBLISH_LINES`` lines (default: the whole log, as pflogsumm).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailpulse.pi_firmware.pipeline import CountingSink
from mailpulse.pi_firmware.replay import replay, replay_node
from mailpulse.pi_firmware.synthlog import Expected, generate

from mailpulse.config.node import load_config
from mailpulse.lab.servers import Mosquitto

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


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def time_publish(path: Path, n_lines: int) -> tuple[str, int, float, float, float] | None:
    """``node replay`` publishing: (summary line, lines, wall s, CPU s of the node, CPU s of Mosquitto)."""
    if shutil.which("mosquitto") is None:
        print("publishing: mosquitto is not installed")
        return None
    with tempfile.TemporaryDirectory(prefix="mailpulse-bench-") as tmp:
        d = Path(tmp)
        log = path
        lines = 0
        if n_lines > 0:
            log = d / "mail.log"
            with path.open() as src, log.open("w") as dst:
                for lines, line in enumerate(src, 1):
                    dst.write(line)
                    if lines >= n_lines:
                        break
        else:
            with path.open("rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        # the broker as `collector init` writes it (TLS with client certificates, passwords, ACL)
        broker = Mosquitto.lab(d / "mq", nodes=[("lab", "bench")])
        broker.start()
        try:
            cfg = d / "node.toml"
            bundle = broker.node("lab", "bench")
            mqtt_lines = "".join(f'{k} = "{v}"\n' for k, v in bundle.client.mqtt_doc(broker.url).items())
            cfg.write_text(f'[node]\nid = "bench"\nsite = "lab"\nstate_dir = "{d}/state"\n'
                           f'secrets_file = "{bundle.secrets}"\n'
                           f'[mqtt]\n{mqtt_lines}ha_discovery = false\n[postfix]\nyear = 2026\n')
            node_cfg = load_config(cfg)
            assert broker.proc is not None
            m0 = _proc_cpu(broker.proc.pid)
            c0 = time.process_time()
            t0 = time.perf_counter()
            summary = replay_node(node_cfg, log, publish=True, flush_timeout=1800.0)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            mcpu = _proc_cpu(broker.proc.pid) - m0
            if summary.unflushed is not None:
                print(f"publishing: the broker did not acknowledge every event ({summary.unflushed} rows left)")
                return None
            return summary.line(), lines, wall, cpu, mcpu
        finally:
            broker.stop()


def main() -> int:
    n = int(os.environ.get("MAILPULSE_BENCH_LINES", "1000000"))
    path, lines = make_log(n)
    print(f"log: {path} ({lines} lines, {path.stat().st_size / 1e6:.0f} MB)")
    pf = time_pflogsumm(path)
    wall, cpu, line = time_replay(path)
    events = int(line.split()[3])
    print(f"replay --no-publish: {line}")
    print(f"replay --no-publish: {lines / wall:,.0f} lines/s wall, {lines / cpu:,.0f} lines/s CPU; "
          f"{events / wall:,.0f} events/s wall, {events / cpu:,.0f} events/s CPU")
    if pf is not None:
        pw, pc = pf
        print(f"pflogsumm:           {lines / pw:,.0f} lines/s wall, {lines / pc:,.0f} lines/s CPU")
        print(f"ratio replay --no-publish / pflogsumm: {pw / wall:.2f} (wall), {pc / cpu:.2f} (CPU)")
    pub = time_publish(path, int(os.environ.get("MAILPULSE_BENCH_PUBLISH_LINES", "0")))
    if pub is not None:
        summary, plines, pwall, pcpu, mcpu = pub
        pev = int(summary.split()[3])
        print(f"replay (publishing, QoS 1, spool on disk, local mosquitto): {summary}")
        print(f"replay (publishing): {plines / pwall:,.0f} lines/s wall, {plines / pcpu:,.0f} lines/s CPU "
              f"(node, all threads); {pev / pwall:,.0f} events/s wall, {pev / pcpu:,.0f} events/s CPU; "
              f"Mosquitto used {mcpu:.2f} s CPU")
        if pf is not None:
            pw, pc = pf
            print(f"ratio replay (publishing) / pflogsumm: {(plines / pwall) / (lines / pw):.2f} (wall), "
                  f"{(plines / pcpu) / (lines / pc):.2f} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
