"""Replay throughput against pflogsumm on the same large, realistic Postfix log, whole processes.

Generates a deterministic log (``mailpulse.pi_firmware.synthlog``: smtpd/cleanup/qmgr/smtp/local/lmtp/
virtual/pipe lines, deferrals with retries, bounces, expiries, address-verification probes; cached under
``build/bench``) or takes ``--log``, then times, each as its own process (interpreter start and imports
included; wall clock and CPU time of the process and its threads):

* ``pflogsumm`` (Debian package; counts and summarises);
* ``mailpulse node replay --no-publish`` (parse, join by queue id, featurise, score with the model
  backend in batches);
* ``mailpulse node replay`` publishing: the node's secure default set-up, a local Mosquitto with TLS,
  password authentication and an ACL, QoS 1, every event first committed to the SQLite spool, timed
  until the broker has acknowledged every event (Mosquitto's CPU reported apart).  ``--plain-mqtt``
  uses the plain listener instead.

and prints lines/s and the ratios to pflogsumm.  The command publishes from a second process
(:mod:`mailpulse.pi_firmware.pubproc`: JSON, spool and MQTT beside the parser) when a core is free,
else from its own (the bench prints which).  ``--profile``
runs the publishing path once more in this interpreter, the daemon's arrangement, and says where
the time goes: CPU time per thread (the main thread: parse, score, JSON, spool writes; the pump:
spool reads and paho's publish; paho's network thread: TLS and the socket) and the main thread's
top functions (cProfile).  ``--formats`` also replays the log written
in every format the parser reads (same counts required).

The machine may be shared: the load average is printed with the results; compare ratios of one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mailpulse.pi_firmware.node import make_sink
from mailpulse.pi_firmware.replay import replay
from mailpulse.pi_firmware.synthlog import FORMATS, Expected, generate, reformat

from mailpulse.config.node import load_config
from mailpulse.lab.servers import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def make_log(n: int, seed: int = 1, fmt: str = "rfc3164") -> tuple[Path, int]:
    d = ROOT / "build" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"postfix-{n}-seed{seed}-{fmt}.log"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            if fmt == "rfc3164":
                f.writelines(generate(n, seed, expected=Expected()))
            else:
                f.writelines(reformat(x, fmt) for x in generate(n, seed, rfc3339=True, expected=Expected()))
        tmp.rename(path)
    return path, count_lines(path)


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a command to its end: (wall s, CPU s of the process and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with status {r.returncode}: {r.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, by Python thread name."""
    out = {}
    for t in threading.enumerate():
        nid = t.native_id
        if nid is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{nid}/stat").read_text().rsplit(")", 1)[1].split()
            out[t.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return out


class Broker:
    """A local Mosquitto as the secure default set-up runs it (``collector init``: TLS with client
    certificates, passwords, the per-node ACL) and a node config; ``tls=False`` adds the explicit
    plaintext listener the node then uses."""

    def __init__(self, tls: bool) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mailpulse-bench-")
        d = Path(self.tmp.name)
        self.mq = Mosquitto.lab(d / "mq", nodes=[("lab", "bench")], plaintext=not tls)
        self.tls = tls
        self.config = d / "node.toml"
        self.state = d / "state"

    def start(self) -> None:
        self.mq.start()
        bundle = self.mq.node("lab", "bench")
        doc = bundle.client.mqtt_doc(self.mq.url)
        if not self.tls:
            doc = {k: v for k, v in doc.items() if k in ("username",)} | {
                "host": "127.0.0.1", "port": self.mq.plaintext_port, "tls": False}
        mqtt_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in doc.items())
        self.config.write_text(f'[node]\nid = "bench"\nsite = "lab"\nstate_dir = "{self.state}"\n'
                               f'secrets_file = "{bundle.secrets}"\n'
                               f"[mqtt]\n{mqtt_lines}ha_discovery = false\n[postfix]\nyear = 2026\n")

    def fresh_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)

    def cpu(self) -> float:
        assert self.mq.proc is not None
        return _proc_cpu(self.mq.proc.pid)

    def stop(self) -> None:
        self.mq.stop()
        self.tmp.cleanup()


def _mailpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailpulse", "node", "replay", *args]


def _rate(lines: int, wall: float, cpu: float) -> str:
    return f"{lines / wall:>9,.0f} lines/s wall, {lines / cpu:>9,.0f} lines/s CPU ({wall:.2f} s, CPU {cpu:.2f} s)"


def profile_publishing(broker: Broker, log: Path, top: int) -> None:
    """The publishing path in one interpreter (the daemon's arrangement: parse, score, JSON and spool
    writes in the caller's thread, the pump and paho in their own): wall and CPU per thread, then the
    caller thread's top functions (cProfile)."""
    broker.fresh_state()
    cfg = load_config(broker.config)
    sink, spool = make_sink(cfg)
    sink.start()
    base = _thread_cpu()
    c0 = time.process_time()
    t0 = time.perf_counter()
    summary = replay(log, sink, node=cfg.node_id, year=2026)
    if not sink.flush(1800):
        print("profile: the broker did not acknowledge every event")
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    threads = _thread_cpu()
    sink.close(5)
    spool.close()
    print(f"profile, one interpreter: {_rate(summary.lines, wall, cpu)}")
    print("profile: CPU seconds by thread (MainThread = parse, score, JSON, spool writes; mqtt-pump = spool "
          "reads, acks, paho publish; paho's thread = TLS, socket):")
    for name, c in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<40} {c - base.get(name, 0.0):7.2f}")
    broker.fresh_state()
    sink, spool = make_sink(cfg)
    sink.start()
    prof = cProfile.Profile()
    prof.runcall(replay, log, sink, node=cfg.node_id, year=2026)
    sink.flush(1800)
    sink.close(5)
    spool.close()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    print("profile: the main thread's functions by own time (under cProfile):")
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:8000])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=int(os.environ.get("MAILPULSE_BENCH_LINES", "1000000")),
                    help="lines of the generated log (default 1000000, or $MAILPULSE_BENCH_LINES)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated log")
    ap.add_argument("--log", type=Path, help="replay this log instead of a generated one")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest is kept")
    ap.add_argument("--no-publish-only", action="store_true", help="skip the publishing replay")
    ap.add_argument("--plain-mqtt", action="store_true", help="publish without TLS (the default set-up uses TLS)")
    ap.add_argument("--profile", action="store_true", help="profile the publishing path (see above)")
    ap.add_argument("--profile-top", type=int, default=25, help="functions shown by --profile")
    ap.add_argument("--formats", action="store_true", help="also replay the log in every format the parser reads")
    args = ap.parse_args(argv)

    if args.log is not None:
        log, lines = args.log, count_lines(args.log)
    else:
        log, lines = make_log(args.lines, args.seed)
    print(f"log: {log} ({lines} lines, {log.stat().st_size / 1e6:.0f} MB); load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")

    have_pf = shutil.which("pflogsumm") is not None
    if not have_pf:
        print("pflogsumm: not installed (apt-get install pflogsumm)")
    publish = not args.no_publish_only and shutil.which("mosquitto") is not None
    if not args.no_publish_only and not publish:
        print("publishing: mosquitto is not installed")
    broker = Broker(tls=not args.plain_mqtt) if publish else None
    if broker is not None:
        broker.start()
    # rounds of (pflogsumm, --no-publish, publishing), interleaved so that each round sees the same
    # load; the fastest run of each is kept
    runs: dict[str, list[tuple[float, float, str, str]]] = {"pflogsumm": [], "no-publish": [], "publish": []}
    try:
        for _ in range(args.repeat):
            if have_pf:
                runs["pflogsumm"].append((*timed(["pflogsumm", str(log)]), ""))
            runs["no-publish"].append((*timed(_mailpulse("--no-publish", "--log", str(log))), ""))
            if broker is not None:
                broker.fresh_state()
                m0 = broker.cpu()
                cores, load = os.cpu_count() or 1, os.getloadavg()[0]
                where = "second process" if cores >= 2 and load < cores - 1 else "one process"
                w, c, out = timed(_mailpulse("--config", str(broker.config), "--log", str(log)))
                runs["publish"].append(
                    (w, c, out, f"{where} at load {load:.1f}; Mosquitto {broker.cpu() - m0:.2f} s CPU"))
        best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items() if v}
        pf = best.get("pflogsumm")
        if pf is not None:
            print(f"pflogsumm:                        {_rate(lines, pf[0], pf[1])}")
        transport = "TLS" if broker and broker.tls else "plain"
        for key, title in (("no-publish", "replay --no-publish:             "),
                           ("publish", f"replay publishing ({transport}, QoS 1, spool):")):
            if key not in best:
                continue
            w, c, out, note = best[key]
            print(f"{title} {_rate(lines, w, c)}{f'; {note}' if note else ''}")
            print(f"  {out.strip().splitlines()[-1]}")
            if pf is not None:
                print(f"  ratio to pflogsumm: {pf[0] / w:.2f} (wall), {pf[1] / c:.2f} (CPU)")
        if args.formats:
            for fmt in FORMATS:
                flog, flines = make_log(args.lines, args.seed, fmt) if args.log is None else (log, lines)
                fw, fc, fout = timed(_mailpulse("--no-publish", "--log", str(flog)))
                counts = " ".join(fout.strip().splitlines()[-1].split()[:14])
                print(f"  format {fmt:<18} {_rate(flines, fw, fc)}  {counts}")
        if args.profile and broker is not None:
            profile_publishing(broker, log, args.profile_top)
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
