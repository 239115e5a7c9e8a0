"""The fault soak: real Mosquitto, real node daemons and the real collector, in the secure set-up
(``collector init``: TLS, client certificates, passwords, ACL), put through the faults a fleet
meets, with every event accounted for.

Topology (:class:`Namespaces`, when we are root and ``ip netns`` works): the broker and the
collector run in one network namespace (``core``), the node daemons in another (``edge``), joined
by a veth pair; the addresses exist only inside the namespaces.  A network partition is the edge
end of the veth going down (no RST, no FIN: the TCP connections just stall, as when a cable or a
router dies).  Without namespaces (:class:`Loopback`) everything runs on 127.0.0.1 and the
partition fault is skipped, saying why.

Each node daemon (``mailpulse node run``) follows its own Postfix log, which the driver writes
from :func:`mailpulse.pi_firmware.synthlog.generate`.  What the nodes *produced* is known
independently: the same lines parsed by :class:`~mailpulse.pi_firmware.postfix.PostfixParser`
give the events' deterministic ids.  What was *archived* is read from the collector's archive
(closed segments and the open one).  After each fault the writer pauses and the driver waits for
the archive to hold every produced event, then accounts: lost (produced, not archived),
duplicated (archived more than once, by (node, id)), unexpected (archived, never produced), and
whether the collector's ``mailpulse_events_total`` per node equals what its current process
archived.  The ingest gap is the time from the broker's (or the link's, or the collector's)
return to the first event the collector counts, sampled every 0.1 s.

Faults (:class:`Soak`): ``broker_down`` (SIGTERM, down for a while, started again),
``broker_restart``, ``node_kill9`` (mid-publish: during a burst), ``collector_kill9`` (mid-ingest:
during a burst), ``partition`` (node <-> broker, for a while).

``python -m mailpulse.lab.faults [--long]`` runs the sequence and prints one JSON object per fault
(``bench/bench_faults_live.py`` and ``tests/test_fault_soak.py`` use :func:`run_soak`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mailpulse.collector.archive import read_segment
from mailpulse.config.collector import load_config
from mailpulse.lab.servers import Mosquitto, make_root, missing_tools
from mailpulse.lab.webclient import WebClient
from mailpulse.pi_firmware.postfix import PostfixParser
from mailpulse.pi_firmware.synthlog import generate

__all__ = ["FaultResult", "Loopback", "Namespaces", "Soak", "SoakPlan", "run_soak"]

ROOT = Path(__file__).resolve().parents[2]
SITE = "soak"
_CLONE_NEWNET = 0x40000000
_SEG = re.compile(r"^seg-\d{8}T\d{6}Z-(\d{6})\.jsonl")


# --------------------------------------------------------------------------------------------
# topology
# --------------------------------------------------------------------------------------------


class Loopback:
    """Everything on 127.0.0.1 in this network namespace; no partitions."""

    core_addr = "127.0.0.1"
    core_ns: str | None = None
    edge_ns: str | None = None
    partition_reason = "network namespaces are not available here"

    def wrap(self, ns: str | None, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def partition(self) -> None:
        raise RuntimeError(self.partition_reason)

    def heal(self) -> None:
        raise RuntimeError(self.partition_reason)

    def in_core(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(1, thread_name_prefix="soak-core")

    def cleanup(self) -> None:
        pass


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (setns(2) acts per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespaces:
    """Two network namespaces (``core``: broker and collector; ``edge``: the nodes) and a veth pair."""

    partition_reason = ""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        self.core_ns, self.edge_ns = f"mpc{tag}", f"mpe{tag}"
        self._veth_core, self._veth_edge = f"mpc{tag}v", f"mpe{tag}v"
        net = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.core_addr, self.edge_addr = f"{net}.1", f"{net}.2"
        try:
            _ip("netns", "add", self.core_ns)
            _ip("netns", "add", self.edge_ns)
            _ip("link", "add", self._veth_core, "type", "veth", "peer", "name", self._veth_edge)
            _ip("link", "set", self._veth_core, "netns", self.core_ns)
            _ip("link", "set", self._veth_edge, "netns", self.edge_ns)
            for ns, dev, addr in ((self.core_ns, self._veth_core, self.core_addr),
                                  (self.edge_ns, self._veth_edge, self.edge_addr)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.cleanup()
            raise

    @staticmethod
    def unavailable() -> str | None:
        """Why namespaces cannot be used here, or None."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if missing_tools("ip"):
            return "the ip command (iproute2) is not installed"
        try:
            Namespaces().cleanup()
        except (RuntimeError, OSError) as e:
            return f"ip netns does not work here ({e})"
        return None

    def wrap(self, ns: str | None, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)

    def partition(self) -> None:
        _ip("-n", self.edge_ns, "link", "set", self._veth_edge, "down")

    def heal(self) -> None:
        _ip("-n", self.edge_ns, "link", "set", self._veth_edge, "up")

    def in_core(self) -> ThreadPoolExecutor:
        """A one-thread executor living in the core namespace (to reach the collector's web port)."""
        return ThreadPoolExecutor(1, thread_name_prefix="soak-core", initializer=_enter_netns,
                                  initargs=(self.core_ns,))

    def cleanup(self) -> None:
        for ns in (self.core_ns, self.edge_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


# --------------------------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------------------------


class _Proc:
    """A child process in its own session (killed as a group)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def signal(self, sig: int, timeout: float = 20.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            return p.wait(5)
        finally:
            self.proc = None


@dataclass
class _Node:
    """A node daemon, its log, and what its lines produce."""

    name: str
    config: Path
    log: Path
    proc: _Proc
    parser: PostfixParser
    lines: Iterator[str]
    produced: set[str] = field(default_factory=set)
    written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, n: int) -> None:
        """Append ``n`` lines to the log (the writer thread and a burst may both call this)."""
        with self.lock:
            chunk = list(itertools.islice(self.lines, n))
            with open(self.log, "a") as f:
                f.writelines(chunk)
            self.written += len(chunk)
            self.produced.update(e.id for e in self.parser.feed(chunk))


@dataclass
class FaultResult:
    """The accounting after one fault (cumulative since the soak started, and this phase's share)."""

    fault: str
    seconds: float
    produced: int
    archived: int
    lost: int
    duplicated: int
    unexpected: int
    phase_produced: int
    counters_agree: bool
    ingest_gap_s: float | None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0 and self.counters_agree


@dataclass(frozen=True)
class SoakPlan:
    """How long and how hard: the short run of ``make test`` or the long one (``MAILPULSE_SOAK=1``)."""

    nodes: int = 2
    lines_per_s: int = 400          # per node (about 15 events/s)
    burst_lines: int = 4000         # per node, for the kills mid-publish / mid-ingest
    warm_s: float = 3.0
    broker_down_s: float = 20.0
    partition_s: float = 15.0
    settle_s: float = 90.0
    keepalive_s: int = 4

    @classmethod
    def long(cls) -> SoakPlan:
        return cls(nodes=3, lines_per_s=400, burst_lines=20000, warm_s=10.0, broker_down_s=600.0,
                   partition_s=120.0, settle_s=600.0)


class Soak:
    """The running system and its faults (see the module docstring)."""

    def __init__(self, work: Path, plan: SoakPlan, net: Loopback | Namespaces) -> None:
        self.work, self.plan, self.net = work, plan, net
        names = [f"n{i}" for i in range(plan.nodes)]
        self.broker = Mosquitto.lab(work / "deployment", nodes=[(SITE, n) for n in names],
                                    hosts=[net.core_addr], netns=net.core_ns)
        self.dep = self.broker.deployment
        self.archive = work / "archive"
        self._collector_config()
        self.collector = _Proc(net.wrap(net.core_ns, [sys.executable, "-m", "mailpulse", "collector", "run",
                                                      "--config", str(work / "collector.toml")]),
                               work / "collector.log")
        self.nodes = [self._node(n, i) for i, n in enumerate(names)]
        self.core = net.in_core()
        self.web: WebClient | None = None
        self.collector_seq0 = 0
        self._cache: dict[Path, list[tuple[str, str]]] = {}
        self._writing = threading.Event()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="soak-writer", daemon=True)
        self._t_phase = time.monotonic()
        self._produced_before = 0

    # -- set-up -----------------------------------------------------------------------------------

    def _collector_config(self) -> None:
        import tomli_w

        doc = load_toml(self.dep.collector_config)
        doc["archive"] = {"dir": str(self.archive), "max_age_s": 30.0}
        doc["web"] = {**doc["web"], "port": 0, "host": "127.0.0.1", "rate_per_s": 100.0, "rate_burst": 200}
        doc["mqtt"]["client_id"] = "soak-collector"
        (self.work / "collector.toml").write_text(tomli_w.dumps(doc))
        self.cfg = load_config(self.work / "collector.toml")

    def _node(self, name: str, i: int) -> _Node:
        b = self.dep.bundle(SITE, name)
        d = self.work / name
        d.mkdir()
        log = d / "maillog"
        log.write_text("")
        mqtt = "".join(f'{k} = "{v}"\n' for k, v in b.client.mqtt_doc(self.dep.url).items())
        config = d / "node.toml"
        config.write_text(f'[node]\nid = "{name}"\nsite = "{SITE}"\nstate_dir = "{d / "state"}"\n'
                          f'secrets_file = "{b.secrets}"\n[mqtt]\n{mqtt}keepalive_s = {self.plan.keepalive_s}\n'
                          'ha_discovery = false\n[fleet]\nheartbeat_s = 2.0\n[probe]\nenabled = false\n'
                          f'[postfix]\nlog = "{log}"\nfrom_start = true\npoll_s = 0.1\n')
        argv = self.net.wrap(self.net.edge_ns, [sys.executable, "-m", "mailpulse", "node", "run", "--config",
                                                str(config), "--log-level", "warning"])
        return _Node(name, config, log, _Proc(argv, d / "node.out"), PostfixParser(name),
                     generate(10**9, seed=1000 + i))

    def start(self) -> None:
        self.broker.start()
        self.start_collector()
        for n in self.nodes:
            n.proc.start()
        self._writer.start()
        self._writing.set()

    def start_collector(self) -> None:
        seqs = [int(m.group(1)) for p in self.archive.glob("seg-*") if (m := _SEG.match(p.name))] \
            if self.archive.is_dir() else []
        self.collector_seq0 = max(seqs, default=-1) + 1
        size = self.collector.log.stat().st_size if self.collector.log.exists() else 0
        self.collector.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.collector.log.read_bytes()[size:].decode(errors="replace")
            m = re.search(r"dashboard at (\S+),", text)
            if m:
                self.web = WebClient.metrics(m.group(1), self.cfg.web, self.dep.ca_file)
                return
            if self.collector.proc is not None and self.collector.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the collector did not start: {self.collector.log.read_text()[-2000:]}")

    def close(self) -> None:
        self._stop.set()
        self._writing.set()
        if self._writer.is_alive():
            self._writer.join(10)
        for n in self.nodes:
            n.proc.signal(signal.SIGTERM)
        self.collector.signal(signal.SIGTERM)
        self.broker.stop()
        self.core.shutdown(wait=False)

    # -- traffic ----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        period = 0.1
        per_tick = max(1, round(self.plan.lines_per_s * period))
        while not self._stop.is_set():
            self._writing.wait()
            if self._stop.is_set():
                return
            for n in self.nodes:
                n.write(per_tick)
            time.sleep(period)

    def burst(self, nodes: Sequence[_Node] | None = None) -> None:
        for n in nodes or self.nodes:
            n.write(self.plan.burst_lines)

    # -- observing --------------------------------------------------------------------------------

    def counted(self) -> dict[str, float] | None:
        """The collector's ``mailpulse_events_total`` per node (None when it does not answer)."""
        web = self.web
        if web is None:
            return None

        def fetch() -> str:
            return web.metrics_text(timeout=5)

        try:
            text = self.core.submit(fetch).result(10)
        except Exception:
            return None
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name == "mailpulse_events":
                for s in fam.samples:
                    if s.name == "mailpulse_events_total":
                        out[s.labels["node"]] = out.get(s.labels["node"], 0.0) + s.value
        return out

    def gap_after(self, t0: float, timeout: float) -> float | None:
        """Seconds from ``t0`` (monotonic) until the collector counts a new event, sampled every 0.1 s."""
        base = sum((self.counted() or {}).values())
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            c = self.counted()
            if c is not None and sum(c.values()) > base:
                return time.monotonic() - t0
            time.sleep(0.1)
        return None

    def archived(self, current_only: bool = False) -> list[tuple[str, str]]:
        """(node, id) of every archived event (closed segments cached, the open one read as it is)."""
        out: list[tuple[str, str]] = []
        if not self.archive.is_dir():
            return out
        for p in sorted(self.archive.iterdir()):
            m = _SEG.match(p.name)
            if m is None or p.name.endswith(".part"):
                continue
            if current_only and int(m.group(1)) < self.collector_seq0:
                continue
            if p.name.endswith(".tmp"):
                out += _read_open_segment(p)
                continue
            if p not in self._cache:
                with contextlib.suppress(OSError, EOFError):
                    self._cache[p] = [(str(e.get("node")), str(e.get("id"))) for e in read_segment(p)]
            out += self._cache.get(p, [])
        return out

    def produced(self) -> set[tuple[str, str]]:
        """(node, id) of every event the lines written so far produce (the writer may be adding)."""
        out: set[tuple[str, str]] = set()
        for n in self.nodes:
            with n.lock:
                out.update((n.name, i) for i in n.produced)
        return out

    def settle(self) -> bool:
        """Pause the writer and wait until every produced event is archived."""
        self._writing.clear()
        time.sleep(0.2)
        want = self.produced()
        deadline = time.monotonic() + self.plan.settle_s
        while time.monotonic() < deadline:
            if want <= set(self.archived()):
                return True
            time.sleep(1.0)
        return False

    def account(self, fault: str, gap: float | None, note: str = "") -> FaultResult:
        """Settle, then count (see the module docstring); the writer resumes."""
        settled = self.settle()
        time.sleep(1.0)     # the collector's counters follow the archive within a batch
        want = self.produced()
        got = Counter(self.archived())
        current = Counter(node for node, _ in self.archived(current_only=True))
        counted = self.counted() or {}
        agree = all(counted.get(n.name, 0.0) == current.get(n.name, 0) for n in self.nodes)
        res = FaultResult(fault=fault, seconds=round(time.monotonic() - self._t_phase, 1), produced=len(want),
                          archived=len(got), lost=len(want - set(got)), duplicated=sum(c - 1 for c in got.values()),
                          unexpected=len(set(got) - want), phase_produced=len(want) - self._produced_before,
                          counters_agree=agree, ingest_gap_s=None if gap is None else round(gap, 2),
                          note=note if settled else f"{note} (not settled within {self.plan.settle_s:g} s)".strip())
        self._produced_before = len(want)
        self._t_phase = time.monotonic()
        self._writing.set()
        return res

    # -- faults -----------------------------------------------------------------------------------

    def steady(self) -> FaultResult:
        time.sleep(self.plan.warm_s)
        return self.account("steady", None)

    def broker_down(self, seconds: float, name: str = "broker_down") -> FaultResult:
        time.sleep(self.plan.warm_s)
        self.broker.stop()
        time.sleep(seconds)
        self.broker.start()
        gap = self.gap_after(time.monotonic(), 60.0)
        return self.account(name, gap, f"broker stopped (SIGTERM) for {seconds:g} s")

    def broker_restart(self) -> FaultResult:
        return self.broker_down(0.0, "broker_restart")

    def _in_flight(self, node: str | None = None) -> int:
        """Produced events not archived yet (of one node, or all)."""
        want = {k for k in self.produced() if node is None or k[0] == node}
        return len(want - set(self.archived()))

    def node_kill9(self) -> FaultResult:
        time.sleep(self.plan.warm_s)
        victim = self.nodes[0]
        before = (self.counted() or {}).get(victim.name, 0.0)
        self.burst([victim])
        deadline = time.monotonic() + 10       # kill as soon as the burst's first events arrive: mid-publish
        while time.monotonic() < deadline and (self.counted() or {}).get(victim.name, 0.0) <= before:
            time.sleep(0.02)
        victim.proc.signal(signal.SIGKILL)
        pending = self._in_flight(victim.name)
        time.sleep(1.0)
        victim.proc.start()
        return self.account("node_kill9", None, f"node {victim.name} SIGKILLed during a burst of "
                                                f"{self.plan.burst_lines} lines ({pending} of its events not yet "
                                                "archived at the kill), restarted 1 s later")

    def collector_kill9(self) -> FaultResult:
        time.sleep(self.plan.warm_s)
        self.burst()
        before = self.counted() or {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum((self.counted() or {}).values()) <= sum(before.values()):
            time.sleep(0.05)
        self.collector.signal(signal.SIGKILL)
        pending = self._in_flight()
        time.sleep(1.0)
        self.start_collector()
        gap = self.gap_after(time.monotonic(), 60.0)
        return self.account("collector_kill9", gap, f"collector SIGKILLed while ingesting a burst ({pending} events "
                                                    "not yet archived at the kill), restarted 1 s later")

    def partition(self, seconds: float) -> FaultResult:
        if self.net.partition_reason:
            return FaultResult("partition", 0.0, 0, 0, 0, 0, 0, 0, True, None,
                               f"skipped: {self.net.partition_reason}")
        time.sleep(self.plan.warm_s)
        self.net.partition()
        time.sleep(seconds)
        self.net.heal()
        gap = self.gap_after(time.monotonic(), 60.0)
        return self.account("partition", gap, f"node <-> broker link down for {seconds:g} s (veth in netns)")


def load_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _read_open_segment(path: Path) -> list[tuple[str, str]]:
    out = []
    with contextlib.suppress(OSError):
        data = path.read_bytes()
        for line in data.split(b"\n")[:-1]:     # the last piece has no newline yet (or is empty)
            with contextlib.suppress(ValueError):
                e = json.loads(line)
                out.append((str(e.get("node")), str(e.get("id"))))
    return out


def run_soak(plan: SoakPlan, *, faults: Sequence[str] | None = None,
             report: Callable[[FaultResult], None] | None = None) -> list[FaultResult]:
    """Run the faults (default: all, in order) and return their results."""
    order = list(faults or ("steady", "broker_down", "broker_restart", "node_kill9", "collector_kill9", "partition"))
    reason = Namespaces.unavailable()
    net: Loopback | Namespaces = Loopback() if reason else Namespaces()
    if reason:
        net.partition_reason = reason
    work = make_root("mailpulse-soak-")
    soak = None
    results: list[FaultResult] = []
    try:
        soak = Soak(work, plan, net)
        soak.start()
        steps: dict[str, Callable[[], FaultResult]] = {
            "steady": soak.steady, "broker_down": lambda: soak.broker_down(plan.broker_down_s),
            "broker_restart": soak.broker_restart, "node_kill9": soak.node_kill9,
            "collector_kill9": soak.collector_kill9, "partition": lambda: soak.partition(plan.partition_s)}
        for name in order:
            r = steps[name]()
            results.append(r)
            if report is not None:
                report(r)
        return results
    finally:
        if soak is not None:
            soak.close()
        net.cleanup()
        if all(r.ok for r in results):
            shutil.rmtree(work, ignore_errors=True)
        elif report is not None:
            print(f"soak: kept {work} for inspection", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fault soak of the secure set-up (see mailpulse.lab.faults)")
    ap.add_argument("--long", action="store_true", help="10-minute broker outage, 2-minute partition, 3 nodes")
    ap.add_argument("--fault", action="append", help="run only these faults (repeatable)")
    args = ap.parse_args(argv)
    plan = SoakPlan.long() if args.long else SoakPlan()
    results = run_soak(plan, faults=args.fault, report=lambda r: print(json.dumps(asdict(r)), flush=True))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
