"""The fleet simulation: real node publishers in two data centres, two collector shards, the Flink job.

Topology (all real, on loopback, in the secure set-up of ``collector init``)::

    dc1: N/2 nodes (workers) --mqtts--> Mosquitto 1 --> collector shard 1 --> archive 1 --+
                                                                                          +--> flink run --follow
    dc2: N/2 nodes (workers) --mqtts--> Mosquitto 2 --> collector shard 2 --> archive 2 --+    (incident log)

Each data centre is a deployment of its own (``collector init`` + ``add-node`` per node: its own
CA, broker, passwords, ACL, node bundles).  The collector shards are the real service
(``mailpulse collector run``), each with its own persistent MQTT session, archive (segments closed
every ``segment_s``) and, through ``[flink] incidents_dir``, the Flink job's incidents on its
dashboard.  The Flink job reads both archives as they grow.

Run (:class:`FleetRun`): warm-up traffic, then ``faults`` split faults ``fault_every_s`` apart.  A
split fault's relay is used, while it is bad, by ``min_anomalies - 1`` nodes of each data centre
(one deferred delivery each): neither shard alone has enough anomalies to name it, both together
have.  Midway between two faults one shard is killed with SIGKILL and started again ``down_s``
later (its broker keeps its session's messages meanwhile).

Accounting (:func:`account`): every event the workers spooled, by (node, id), against both
archives' closed segments: lost, duplicated, unexpected, ids shared by two nodes (what a
de-duplication by id alone would drop); ingest lag = the collector's ``received`` stamp minus the
time the event was in the node's spool; per fault, the time from its first event to the Flink
job's incident naming the relay, and from its last event's ingest to that incident; the
correlation of each shard alone and of both (``mailpulse correlate --archive``); CPU seconds per
stage from ``/proc`` (workers, brokers, collectors, Flink and its JVM).

``python -m mailpulse.lab.fleet`` runs it (``bench/bench_fleet.py`` and ``tests/test_fleet.py``
use :func:`run_fleet`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mailpulse import features as F
from mailpulse.collector.archive import read_events
from mailpulse.collector.flink.runner import latest_checkpoint
from mailpulse.collector.trainer import train
from mailpulse.config.collector import CorrelateSettings
from mailpulse.datasets import Dataset
from mailpulse.hdl.params import get_params
from mailpulse.lab.fleetnodes import NodeSpec, WorkerPlan, event_pool, fault_relay, worker_main
from mailpulse.lab.procs import CpuMeter, Proc
from mailpulse.lab.servers import Mosquitto, make_root
from mailpulse.pi_firmware.pipeline import featurise

__all__ = ["FleetPlan", "FleetRun", "account", "run_fleet", "train_fleet_model"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FleetPlan:
    """Size and timeline of a run (the defaults are the benchmark's)."""

    nodes: int = 512                # over two data centres
    workers: int = 8                # node processes
    sites_per_dc: int = 16           # 16 nodes per site: each node follows its site's status (the daemon's Fleet)
    rate: float = 10.0              # events/s per node
    tick_s: float = 1.0             # a node's read round
    warm_s: float = 20.0            # traffic before the first fault
    faults: int = 4
    fault_every_s: float = 15.0
    kill: bool = True               # SIGKILL one shard midway between the first two faults
    down_s: float = 3.0
    tail_s: float = 15.0            # traffic after the last fault
    segment_s: float = 1.0          # archive segments closed this often (Flink reads closed ones)
    heartbeat_s: float = 10.0
    eval_interval_s: float = 2.0    # [correlate] of the shards and the Flink job
    checkpoint_ms: int = 1000
    pool_lines: int = 60_000        # synthetic log lines each worker parses for its events
    train_lines: int = 200_000
    flink: bool = True
    flink_batch: bool = True        # also run the Flink job over the finished archives (batch) and compare
    keep: bool = False              # keep the work folder

    @property
    def split(self) -> int:
        """Fault events per data centre: one short of what one shard needs to name the relay."""
        return CorrelateSettings().min_anomalies - 1


def train_fleet_model(path: Path, lines: int, seed: int = 1) -> Path:
    """A model file trained (mailpulse.collector.trainer) on the fleet's ordinary traffic."""
    pool = event_pool(seed, lines)
    x = featurise(pool).astype(np.float64)
    res = train(Dataset(x, None, "fleet ordinary traffic", "synthlog"), get_params("full"), seed=0,
                false_alarm_rate=1e-5, feature_schema=str(F.SCHEMA_VERSION))
    return res.model.save(path)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


@dataclass
class _Dc:
    name: str
    broker: Mosquitto
    nodes: list[NodeSpec]
    config: Path
    archive: Path
    collector: Proc


@dataclass
class FleetRun:
    """The running fleet (see the module docstring)."""

    work: Path
    plan: FleetPlan
    dcs: list[_Dc] = field(default_factory=list)
    cpu: CpuMeter = field(default_factory=CpuMeter)
    flink: Proc | None = None
    flink_out: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    timeline: dict[str, Any] = field(default_factory=dict)
    worker_counts: list[dict[str, float]] = field(default_factory=list)
    cpu0: dict[tuple[str, int], float] = field(default_factory=dict)

    # -- set-up -----------------------------------------------------------------------------------

    def setup(self) -> None:
        p = self.plan
        t0 = time.monotonic()
        self.model = train_fleet_model(self.work / "fleet.model", p.train_lines)
        self.timeline["train_s"] = round(time.monotonic() - t0, 1)
        per_dc = p.nodes // 2
        for d in range(2):
            name = f"dc{d + 1}"
            sites = [f"{name}-s{j}" for j in range(p.sites_per_dc)]
            pairs = [(sites[i % len(sites)], f"{name}-n{i:03d}") for i in range(per_dc)]
            broker = Mosquitto.lab(self.work / name / "deployment", nodes=pairs)
            specs = [self._node_config(broker, name, site, node) for site, node in pairs]
            cfg, archive = self._shard_config(broker, name)
            coll = Proc([sys.executable, "-m", "mailpulse", "collector", "run", "--config", str(cfg)],
                         self.work / name / "collector.log")
            self.dcs.append(_Dc(name, broker, specs, cfg, archive, coll))
        self.timeline["provision_s"] = round(time.monotonic() - t0 - self.timeline["train_s"], 1)

    def _node_config(self, broker: Mosquitto, dc: str, site: str, node: str) -> NodeSpec:
        dep = broker.deployment
        b = dep.bundle(site, node)
        mqtt = "".join(f'{k} = "{v}"\n' for k, v in b.client.mqtt_doc(dep.url).items())
        config = b.dir / "fleet-node.toml"
        config.write_text(f'[node]\nid = "{node}"\nsite = "{site}"\nstate_dir = "{b.dir / "state"}"\n'
                          f'secrets_file = "{b.secrets}"\n[mqtt]\n{mqtt}ha_discovery = false\n'
                          f'[fleet]\nheartbeat_s = {self.plan.heartbeat_s}\n[probe]\nenabled = false\n')
        return NodeSpec(site, node, dc, str(config))

    def _shard_config(self, broker: Mosquitto, dc: str) -> tuple[Path, Path]:
        import tomli_w

        dep = broker.deployment
        doc = tomllib.loads(dep.collector_config.read_text())
        archive = self.work / dc / "archive"
        doc["archive"] = {"dir": str(archive), "max_age_s": self.plan.segment_s}
        doc["web"] = {**doc["web"], "port": 0, "host": "127.0.0.1"}
        doc["mqtt"]["client_id"] = f"collector-{dc}"
        doc["correlate"] = {"eval_interval_s": self.plan.eval_interval_s}
        doc["flink"] = {"incidents_dir": str(self.work / "flink" / "incidents")}
        path = self.work / dc / "collector.toml"
        path.write_text(tomli_w.dumps(doc))
        return path, archive

    # -- parts ------------------------------------------------------------------------------------

    def start_collector(self, dc: _Dc) -> None:
        size = dc.collector.log.stat().st_size if dc.collector.log.exists() else 0
        dc.collector.start()
        self.cpu.track("collectors", dc.collector.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "dashboard at" in dc.collector.log.read_bytes()[size:].decode(errors="replace"):
                return
            if dc.collector.proc is not None and dc.collector.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"collector {dc.name} did not start: {dc.collector.log.read_text()[-2000:]}")

    def start_flink(self) -> None:
        fl = self.work / "flink"
        (fl / "incidents").mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mailpulse", "flink", "run", "--follow", "--json", "--incidents",
                str(fl / "incidents"), "--state-dir", str(fl / "state"), "--config", str(self.dcs[0].config),
                "--checkpoint-ms", str(self.plan.checkpoint_ms)]
        for dc in self.dcs:
            argv += ["--archive", str(dc.archive)]
        for dc in self.dcs:
            dc.archive.mkdir(parents=True, exist_ok=True)
        self.flink = Proc(argv, fl / "flink.log")
        self.flink.start(stdout=subprocess.PIPE)
        self.cpu.track("flink", self.flink.pid)
        threading.Thread(target=self._read_flink, name="flink-out", daemon=True).start()

    def wait_flink(self, timeout: float = 180.0) -> None:
        """Wait for the Flink job's first completed checkpoint (it is running)."""
        t0 = time.monotonic()
        while latest_checkpoint(self.work / "flink" / "state") is None:
            if self.flink is None or self.flink.proc is None or self.flink.proc.poll() is not None \
                    or time.monotonic() - t0 > timeout:
                log = (self.work / "flink" / "flink.log").read_text()
                raise RuntimeError(f"the Flink job did not start: {log[-2000:]}")
            time.sleep(0.2)
        self.timeline["flink_ready"] = time.time()

    def wait_incidents(self, timeout: float = 300.0) -> None:
        """Wait until the Flink job named every fault's relay (it may be behind), at most ``timeout`` s."""
        want = {fault_relay(k).split("[", 1)[0] for k in range(self.plan.faults)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {rec.get("incident", {}).get("root_cause") for _, rec in list(self.flink_out)
                    if rec.get("kind") == "opened"}
            if want <= seen:
                break
            time.sleep(0.5)
        self.timeline["incidents_waited"] = time.time()

    def _read_flink(self) -> None:
        p = self.flink.proc if self.flink else None
        if p is None or p.stdout is None:
            return
        for line in p.stdout:
            with contextlib.suppress(ValueError):
                self.flink_out.append((time.time(), json.loads(line)))

    def start_workers(self) -> list[tuple[Any, Any]]:
        p = self.plan
        specs = [s for dc in self.dcs for s in dc.nodes]
        ctx = multiprocessing.get_context("spawn")
        out = []
        for w in range(p.workers):
            mine = specs[w::p.workers]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, name=f"fleet-worker-{w}", daemon=True,
                               args=(child, mine, str(self.model), str(self.work / f"emitted-{w}.tsv"), 100 + w,
                                     p.pool_lines))
            proc.start()
            child.close()
            self.cpu.track("clients", proc.pid)
            out.append((proc, parent))
        for _, conn in out:
            kind, info = conn.recv()
            if kind != "ready":
                raise RuntimeError(f"a fleet worker failed: {info}")
            if info["connected"] != info["nodes"]:
                raise RuntimeError(f"a fleet worker connected {info['connected']} of {info['nodes']} nodes")
        return out

    def fault_schedule(self, t_go: float) -> list[tuple[int, str, float]]:
        """(fault, node, time): ``split`` nodes of each data centre, 0.25 s apart, per fault."""
        p = self.plan
        out = []
        for k in range(p.faults):
            t = t_go + p.warm_s + k * p.fault_every_s
            for j in range(p.split):
                for dc in self.dcs:
                    node = dc.nodes[(k * p.split + j) % len(dc.nodes)]
                    out.append((k, node.node, t + 0.25 * j))
        return out

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        p = self.plan
        self.cpu.start()
        for dc in self.dcs:
            dc.broker.start()
            self.cpu.track("brokers", dc.broker.proc.pid if dc.broker.proc else None)
            self.start_collector(dc)
        if p.flink:
            self.start_flink()
        workers = self.start_workers()
        if p.flink:
            self.wait_flink()
        t_go = time.time() + 1.0
        schedule = self.fault_schedule(t_go)
        wplan = WorkerPlan(p.rate, p.tick_s, p.heartbeat_s, tuple(schedule))
        for _, conn in workers:
            conn.send(("go", wplan))
        time.sleep(max(0.0, t_go - time.time()))
        self.cpu0 = self.cpu.snapshot()
        t_end = t_go + p.warm_s + (p.faults - 1) * p.fault_every_s + p.tail_s
        self.timeline.update(go=t_go, end=t_end, faults=[t_go + p.warm_s + k * p.fault_every_s
                                                         for k in range(p.faults)])
        if p.kill:
            t_kill = t_go + p.warm_s + 0.5 * p.fault_every_s
            time.sleep(max(0.0, t_kill - time.time()))
            victim = self.dcs[1]
            victim.collector.signal(signal.SIGKILL)
            self.timeline["kill"] = time.time()
            time.sleep(p.down_s)
            self.start_collector(victim)
            self.timeline["restarted"] = time.time()
        time.sleep(max(0.0, t_end - time.time()))
        for _, conn in workers:
            if conn.poll(0):
                raise RuntimeError(f"a fleet worker failed: {conn.recv()}")
            conn.send(("stop", None))
        self.timeline["stopped"] = time.time()
        for proc, conn in workers:
            msg: tuple[str, Any] = conn.recv() if conn.poll(120) else ("error", "no answer in 120 s")
            kind, info = msg
            if kind != "done":
                raise RuntimeError(f"a fleet worker failed: {info}")
            self.worker_counts.append(info)
            proc.join(30)

    def settle(self, produced: int, timeout: float = 300.0) -> None:
        """Wait until the archives hold ``produced`` lines (open segments included), then stop the
        collectors (they close their segments)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _archived_lines([dc.archive for dc in self.dcs]) < produced:
            time.sleep(0.5)
        self.timeline["archived"] = time.time()
        for dc in self.dcs:
            dc.collector.signal(signal.SIGTERM)

    def close(self) -> None:
        if self.flink is not None:
            self.flink.signal(signal.SIGTERM)
        for dc in self.dcs:
            dc.collector.signal(signal.SIGTERM)
            dc.broker.stop()
        self.cpu.stop()


def _archived_lines(archives: Sequence[Path]) -> int:
    n = 0
    for a in archives:
        for seg in a.glob("seg-*.jsonl.tmp"):
            with contextlib.suppress(OSError):
                n += seg.read_bytes().count(b"\n")
        n += sum(_closed_count(s) for s in a.glob("seg-*.jsonl.gz"))
    return n


_COUNTS: dict[Path, int] = {}


def _closed_count(seg: Path) -> int:
    if seg not in _COUNTS:
        import gzip

        with contextlib.suppress(OSError, EOFError):
            _COUNTS[seg] = gzip.decompress(seg.read_bytes()).count(b"\n")
    return _COUNTS.get(seg, 0)


# --------------------------------------------------------------------------------------------
# accounting
# --------------------------------------------------------------------------------------------


def _q(xs: Sequence[float], q: float) -> float | None:
    return None if not len(xs) else round(float(np.quantile(np.asarray(xs), q)), 3)


def _incidents(command: Sequence[str], archives: Sequence[Path]) -> list[dict[str, Any]]:
    """The incidents ``mailpulse <command> --archive ... --json`` prints (the command itself)."""
    argv = [sys.executable, "-m", "mailpulse", *command, "--json"]
    for a in archives:
        argv += ["--archive", str(a)]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"mailpulse {' '.join(command)} failed: {r.stderr[-500:]}")
    out: list[dict[str, Any]] = json.loads(r.stdout)
    return out


def _causes(incidents: list[dict[str, Any]]) -> list[str]:
    return sorted({inc["root_cause"] for inc in incidents})


def account(run: FleetRun, cpu: dict[str, float]) -> dict[str, Any]:
    """The figures of a finished run (see the module docstring)."""
    p, tl = run.plan, run.timeline
    emitted: dict[tuple[str, str], float] = {}
    fault_of: dict[tuple[str, str], int] = {}
    produced_twice = 0
    for f in sorted(run.work.glob("emitted-*.tsv")):
        for line in f.read_text().splitlines():
            node, eid, t, fault = line.split("\t")
            if (node, eid) in emitted:
                produced_twice += 1
            emitted[(node, eid)] = float(t)
            if int(fault) >= 0:
                fault_of[(node, eid)] = int(fault)
    got: Counter[tuple[str, str]] = Counter()
    received: dict[tuple[str, str], float] = {}
    shard_of: dict[tuple[str, str], str] = {}
    nodes_of_id: dict[str, set[str]] = {}
    for dc in run.dcs:
        for ev in read_events(dc.archive):
            key = (str(ev.get("node")), str(ev.get("id")))
            got[key] += 1
            received.setdefault(key, float(ev.get("received") or 0.0))
            shard_of.setdefault(key, dc.name)
            nodes_of_id.setdefault(key[1], set()).add(key[0])
    lags = [received[k] - t for k, t in emitted.items() if k in received]
    by_shard: dict[str, list[float]] = {}
    for key, t_spooled in emitted.items():
        if key in received:
            by_shard.setdefault(shard_of[key], []).append(received[key] - t_spooled)
    traffic_s = tl["stopped"] - tl["go"]
    faults: list[dict[str, Any]] = []
    for k in range(p.faults):
        relay = fault_relay(k).split("[", 1)[0]
        keys = [key for key, kk in fault_of.items() if kk == k]
        t_first = min((emitted[key] for key in keys), default=None)
        t_ingested = max((received.get(key, 0.0) for key in keys), default=None)
        seen = next((t for t, rec in run.flink_out if rec.get("kind") == "opened"
                     and rec.get("incident", {}).get("root_cause") == relay), None)
        faults.append({"relay": relay, "events": len(keys), "found": seen is not None,
                       "fault_to_incident_s": None if seen is None or t_first is None else round(seen - t_first, 2),
                       "ingest_to_incident_s": None if seen is None or t_ingested is None
                       else round(seen - t_ingested, 2)})
    found = [f for f in faults if f["found"]]
    events = len(emitted)
    res: dict[str, Any] = {
        "nodes": p.nodes, "workers": p.workers, "rate_per_node": p.rate, "traffic_s": round(traffic_s, 1),
        "produced": events, "produced_twice": produced_twice, "events_per_s": round(events / traffic_s, 1),
        "archived_events_per_s": round(events / (tl["archived"] - tl["go"]), 1),
        "drain_s": round(tl["archived"] - tl["stopped"], 1),
        "archived": len(got), "lost": len(set(emitted) - set(got)), "duplicated": sum(c - 1 for c in got.values()),
        "unexpected": len(set(got) - set(emitted)),
        "ids_on_two_nodes": sum(1 for ns in nodes_of_id.values() if len(ns) > 1),
        "ingest_lag_p50_s": _q(lags, 0.5), "ingest_lag_p99_s": _q(lags, 0.99),
        "ingest_lag_by_shard_p50_p99_s": {name: (_q(v, 0.5), _q(v, 0.99)) for name, v in sorted(by_shard.items())},
        "faults": faults,
        "fault_to_incident_p50_s": _q([f["fault_to_incident_s"] for f in found], 0.5),
        "fault_to_incident_p99_s": _q([f["fault_to_incident_s"] for f in found], 0.99),
        "ingest_to_incident_p50_s": _q([f["ingest_to_incident_s"] for f in found], 0.5),
        "ingest_to_incident_p99_s": _q([f["ingest_to_incident_s"] for f in found], 0.99),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_us_per_event": {k: round(v / events * 1e6, 1) for k, v in cpu.items()} if events else {},
        "anomalies_scored": sum(c.get("anomalies", 0) for c in run.worker_counts),
        "late_rounds": sum(c.get("late_rounds", 0) for c in run.worker_counts),
        # of the clients' CPU: the node rounds (events, scoring, payloads, spool writes); the rest is publishing
        "clients_round_cpu_s": round(sum(c.get("round_cpu_s", 0.0) for c in run.worker_counts), 1),
        "left_in_spools": sum(c.get("left_in_spools", 0) for c in run.worker_counts),
        "kill": {"shard": run.dcs[1].name, "down_s": round(tl["restarted"] - tl["kill"], 1)} if "kill" in tl else None,
        "setup_s": {"train": tl.get("train_s"), "provision": tl.get("provision_s")},
    }
    res["correlate_shards"] = {dc.name: _causes(_incidents(["correlate"], [dc.archive])) for dc in run.dcs}
    both = [dc.archive for dc in run.dcs]
    embedded = _incidents(["correlate"], both)
    res["correlate_global"] = _causes(embedded)
    if p.flink_batch:
        # the Flink job over the finished archives, in batch mode: the same incidents, in the same form
        try:
            # --state-dir: file-system checkpoints (without it, the JobManager's memory storage holds at most
            # 5 MB, and the global step's state for 512 nodes is larger: the job fails)
            state = ["--state-dir", str(run.work / "flink" / "batch-state")]
            res["flink_batch_equals_correlate"] = _incidents(["flink", "run", *state], both) == embedded
        except RuntimeError as e:     # reported, not raised: the run's other figures stand
            res["flink_batch_equals_correlate"] = str(e)
    res["flink_incidents"] = sorted({rec["incident"]["root_cause"] for _, rec in run.flink_out
                                     if rec.get("kind") == "opened"})
    return res


def run_fleet(plan: FleetPlan, work: Path | None = None) -> dict[str, Any]:
    """Set up, run, account and clean up (the work folder is kept when an event was lost or
    duplicated, or with ``plan.keep``)."""
    work = work or make_root("mailpulse-fleet-")
    run = FleetRun(work, plan)
    res: dict[str, Any] = {}
    try:
        run.setup()
        run.run()
        run.settle(int(sum(c["events"] for c in run.worker_counts)))
        if plan.flink:
            run.wait_incidents()
        # CPU from the first event to the last one archived and correlated (the backlog included)
        res = account(run, CpuMeter.between(run.cpu0, run.cpu.snapshot()))
        return res
    finally:
        run.close()
        ok = res and res.get("lost") == 0 and res.get("duplicated") == 0
        if ok and not plan.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            res["work"] = str(work)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="fleet simulation (see mailpulse.lab.fleet)")
    for f in ("nodes", "workers", "faults"):
        ap.add_argument(f"--{f}", type=int, default=getattr(FleetPlan, f))
    ap.add_argument("--rate", type=float, default=FleetPlan.rate)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    res = run_fleet(FleetPlan(nodes=a.nodes, workers=a.workers, faults=a.faults, rate=a.rate, keep=a.keep))
    print(json.dumps(res, indent=1))
    return 0 if res.get("lost") == 0 and res.get("duplicated") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
