"""The fleet simulation's nodes: many real node publishers in one worker process.

Each simulated node is what the daemon runs for publishing, made from the node's own config
(``node.toml`` and ``secrets.toml`` that ``collector add-node`` wrote, loaded by
:func:`mailpulse.config.node.load_config`): :func:`mailpulse.pi_firmware.node.make_sink` gives its
SQLite :class:`~mailpulse.pi_firmware.spool.Spool` and :class:`~mailpulse.pi_firmware.mqtt.MqttSink`
(MQTT v5, its own client id, persistent session, last will, retained status, its own user,
password and client certificate, TLS), it subscribes to its site's status like the daemon's
:class:`~mailpulse.pi_firmware.fleet.Fleet` and publishes its retained status every heartbeat.

Events are the node's own :class:`~mailpulse.pi_firmware.events.DeliveryEvent`: a worker parses
a synthetic Postfix log once (:func:`~mailpulse.pi_firmware.synthlog.generate`, the daemon's
:class:`~mailpulse.pi_firmware.postfix.PostfixParser`; parsing the lines again for every node
would cost more CPU than publishing them) and each node re-logs those deliveries at the current
time under its own Postfix host name (:func:`restamp`: the log line gets the new time stamp and
host, so the event id, a hash of node and line, is new).  A worker scores each round's events in
one call of the node's scorer (:class:`~mailpulse.pi_firmware.pipeline.Pipeline` with the model
file loaded by :func:`~mailpulse.pi_firmware.pipeline.load_scoring_model`) and hands each node's
events to that node's sink, which spools, batches, encodes and publishes them.

A *split fault* is a relay that turns bad for a moment: the deliveries some nodes of both data
centres make through it are deferred after a stalled transfer (:func:`fault_event`).  What a
worker emitted - (node, event id, time it was in the spool, fault number) - is written to a file
for the accounting.
"""

from __future__ import annotations

import dataclasses
import multiprocessing.connection
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailpulse.config.node import load_config
from mailpulse.pi_firmware.events import DeliveryEvent, Event
from mailpulse.pi_firmware.fleet import Fleet
from mailpulse.pi_firmware.mqtt import MqttSink
from mailpulse.pi_firmware.node import make_sink
from mailpulse.pi_firmware.pipeline import Pipeline, load_scoring_model
from mailpulse.pi_firmware.postfix import PostfixParser
from mailpulse.pi_firmware.synthlog import generate

__all__ = ["NodeSpec", "WorkerPlan", "event_pool", "fault_event", "fault_relay", "restamp", "worker_main"]

#: The outcomes of the simulated relays' traffic (address-verification probes and expiries, which
#: the scorer rates as rare, are left out so that its false alarms stay near zero; see docs/benchmarks.md).
KEPT_STATUSES = ("sent", "deferred", "bounced")


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node: its ids, the data centre it belongs to, its config file."""

    site: str
    node: str
    dc: str
    config: str

    @property
    def host(self) -> str:
        """Its Postfix host name (the last hop of its deliveries' path)."""
        return f"mta.{self.node}.{self.site}"


@dataclass(frozen=True)
class WorkerPlan:
    """What a worker does once told to go."""

    rate: float                       # events per second per node
    tick_s: float                     # a node's read round: its events of a round go in one spool write
    heartbeat_s: float                # retained status period
    faults: tuple[tuple[int, str, float], ...] = ()   # (fault number, node, wall-clock time)


def fault_relay(k: int) -> str:
    """The relay of split fault ``k`` (as Postfix logs it)."""
    return f"mx.dc-link{k}.example[198.51.100.{10 + k}]:25"


def event_pool(seed: int, lines: int) -> list[DeliveryEvent]:
    """Deliveries parsed from a synthetic Postfix log (outcomes in :data:`KEPT_STATUSES`)."""
    parser = PostfixParser("")
    evs = parser.feed(list(generate(lines, seed=seed, rfc3339=True)))
    return [e for e in evs if isinstance(e, DeliveryEvent) and e.status in KEPT_STATUSES]


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")


def restamp(e: DeliveryEvent, spec: NodeSpec, t: float) -> DeliveryEvent:
    """The delivery ``e`` logged by ``spec``'s Postfix at time ``t`` (new stamp and host in its line)."""
    stamp = _stamp(t)
    rest = e.text.split(" ", 2)[2] if e.text.count(" ") >= 2 else e.text
    return dataclasses.replace(e, ts=t, node=spec.node, host=spec.host, stamp=stamp,
                               text=f"{stamp} {spec.host} {rest}")


def fault_event(e: DeliveryEvent, spec: NodeSpec, t: float, k: int) -> DeliveryEvent:
    """A delivery through fault ``k``'s relay that stalled mid-transfer and was deferred."""
    relay = fault_relay(k)
    name = relay.split("[", 1)[0]
    stamp = _stamp(t)
    delays = (30.0, 0.0, 5.0, 60.0)
    delay = sum(delays)
    to = f"user{random.Random(f'{spec.node}/{k}').randrange(10000)}@dc-link{k}.example"
    text = (f"{stamp} {spec.host} postfix/smtp[4242]: {e.queue_id}: to=<{to}>, relay={relay}, delay={delay:g}, "
            f"delays={'/'.join(f'{d:g}' for d in delays)}, dsn=4.4.2, status=deferred (lost connection with "
            f"{name}[198.51.100.{10 + k}] while sending message body)")
    return dataclasses.replace(e, ts=t, node=spec.node, host=spec.host, agent="smtp", recipient=to,
                               status="deferred", relay=relay, delay=delay, delays=delays, dsn="4.4.2",
                               stamp=stamp, text=text, occ=0)


class _Router:
    """The pipeline's sink: each node's events to that node's :class:`MqttSink`."""

    def __init__(self, sinks: dict[str, MqttSink]) -> None:
        self.sinks = sinks
        self.spooled_at: dict[str, float] = {}    # node -> when its events of the round were in its spool

    def emit_many(self, events: Sequence[Event]) -> None:
        by: dict[str, list[Event]] = {}
        for e in events:
            by.setdefault(e.node, []).append(e)
        for node, evs in by.items():
            self.sinks[node].emit_many(evs)
            self.spooled_at[node] = time.time()

    def close(self) -> None:
        return None


class _Node:
    def __init__(self, spec: NodeSpec) -> None:
        cfg = load_config(spec.config)
        self.spec = spec
        self.sink, self.spool = make_sink(cfg)
        self.fleet = Fleet(spec.site, spec.node, cfg.fleet.heartbeat_s, cfg.fleet.timeout_s)
        self.sink.subscribe(self.fleet.topic, self.fleet.on_message)

    def close(self, timeout: float) -> bool:
        try:
            return self.sink.close(timeout)
        finally:
            self.spool.close()


def _run(conn: multiprocessing.connection.Connection, nodes: list[_Node], plan: WorkerPlan, pool: list[DeliveryEvent],
         pipeline: Pipeline, router: _Router, out: Any, seed: int) -> dict[str, float]:
    """The rounds: every ``tick_s`` each node emits its share of ``rate`` (and its fault events)."""
    rng = random.Random(seed)
    acc = [rng.random() for _ in nodes]
    cursor = [rng.randrange(len(pool)) for _ in nodes]
    by_name = {n.spec.node: n for n in nodes}
    faults = sorted((t, k, node) for k, node, t in plan.faults if node in by_name)
    beat = [time.monotonic() + plan.heartbeat_s * (i + 1) / len(nodes) for i in range(len(nodes))]
    counts: dict[str, float] = {"events": 0, "faults": 0, "rounds": 0, "late_rounds": 0}
    cpu0 = time.thread_time()
    next_round = time.monotonic()
    while not conn.poll(0):
        now = time.time()
        batch: list[tuple[DeliveryEvent, int]] = []
        for i, n in enumerate(nodes):
            acc[i] += plan.rate * plan.tick_s
            for _ in range(int(acc[i])):
                batch.append((restamp(pool[cursor[i] % len(pool)], n.spec, now), -1))
                cursor[i] += 1
            acc[i] -= int(acc[i])
        while faults and faults[0][0] <= now:
            _, k, node = faults.pop(0)
            n = by_name[node]
            batch.append((fault_event(pool[cursor[0] % len(pool)], n.spec, now, k), k))
        pipeline.submit_many([e for e, _ in batch])
        pipeline.flush()
        at = router.spooled_at
        out.write("".join(f"{e.node}\t{e.id}\t{at[e.node]:.6f}\t{k}\n" for e, k in batch))
        counts["events"] += len(batch)
        counts["faults"] += sum(1 for _, k in batch if k >= 0)
        counts["rounds"] += 1
        mono = time.monotonic()
        for i, n in enumerate(nodes):
            if mono >= beat[i]:
                n.sink.publish_status()
                beat[i] = mono + plan.heartbeat_s
        counts["round_cpu_s"] = time.thread_time() - cpu0
        next_round += plan.tick_s
        if next_round < mono:
            counts["late_rounds"] += 1
            next_round = mono
        time.sleep(max(0.0, next_round - time.monotonic()))
    return counts


def _drain(nodes: list[_Node], timeout: float) -> int:
    """Wait until every node's spool is empty; the events left in spools."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = sum(len(n.spool) for n in nodes)
        if left == 0:
            return 0
        time.sleep(0.1)
    return sum(len(n.spool) for n in nodes)


def worker_main(conn: multiprocessing.connection.Connection, specs: list[NodeSpec], model_file: str, out_file: str,
                pool_seed: int, pool_lines: int) -> None:
    """A worker process: set up its nodes, say ``ready``, run the rounds from ``go`` to ``stop``,
    drain the spools, close the nodes (offline status) and answer with its counts."""
    try:
        setup = load_scoring_model(model_file)
        pool = event_pool(pool_seed, pool_lines)
        nodes = [_Node(s) for s in specs]
        for n in nodes:
            n.sink.start()
        connected = sum(1 for n in nodes if n.sink.wait_connected(60))
        conn.send(("ready", {"nodes": len(nodes), "connected": connected, "pool": len(pool), "pid": os.getpid()}))
        kind, plan = conn.recv()
        if kind != "go":
            return
        router = _Router({n.spec.node: n.sink for n in nodes})
        pipeline = Pipeline(setup.scorer(), router, batch_size=1 << 20)
        with open(out_file, "w") as out:
            counts = _run(conn, nodes, plan, pool, pipeline, router, out, pool_seed)
        conn.recv()   # "stop"
        counts["left_in_spools"] = _drain(nodes, 60.0)
        counts["anomalies"] = pipeline.stats.anomalies
        closers = [threading.Thread(target=n.close, args=(10.0,)) for n in nodes]
        for th in closers:
            th.start()
        for th in closers:
            th.join()
        conn.send(("done", counts))
    except EOFError:
        return
    except Exception as e:     # reported to the parent, which raises with it
        conn.send(("error", f"{type(e).__name__}: {e}"))

