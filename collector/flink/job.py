"""The Flink job (PyFlink DataStream API): run as ``python -m mailpulse.collector.flink`` in the
Flink venv (``mailpulse flink run`` does that).  The only module of mailpulse that imports pyflink.

Dataflow (the steps are :mod:`.steps`; docs/collector.md has the picture)::

    segments --rebalance--> read (P) --key (node, id)--> dedup (P) --key run--> aggregate (P)
             --key 0--> global step (1) --> printed / collected, and the incident log (FileSink)

Output: a finished archive's records are printed (stdout, one JSON line each); with ``--follow``
they go only to the incident log.
*segments* is the list of closed segments of a finished archive (the job ends when it is read),
or, with ``--follow``, a :class:`~.segments.Monitor` polled by a low-rate ``datagen`` tick
source (the monitor's state is Flink state).  Checkpoints are on (``--checkpoint-ms``); with
``--state-dir`` they are kept and a new run resumes from the newest one.  The incident log
(``--incidents DIR``) is a FileSink that makes files visible only when the checkpoint holding
their lines completes, so a restart neither loses nor repeats an incident change.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import site
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mailpulse.collector
from mailpulse.collector.correlate import Bucket, CorrelateSettings
from mailpulse.collector.relays import RelayNames
from pyflink.common import Configuration, Encoder, Types
from pyflink.common.time import Time
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (
    BucketAssigner,
    FileSink,
    OutputFileConfig,
    RollingPolicy,
)
from pyflink.datastream.functions import FlatMapFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

from .segments import Monitor, merged_segments
from .steps import GlobalStep, aggregate_run, dedup_key, read_segment_records, run_key

__all__ = ["build", "main"]

PICKLED = Types.PICKLED_BYTE_ARRAY()


class ReadSegments(FlatMapFunction):
    """Step 1 (:func:`.steps.read_segment_records`), relays by ``[relays] names``."""

    def __init__(self, settings: CorrelateSettings, names: dict[str, str]) -> None:
        self.s = settings
        self.names = RelayNames(names)

    def flat_map(self, value: Any) -> Iterator[Any]:
        # the list of a finished archive comes as JSON text, the monitor's releases as tuples
        yield from read_segment_records(tuple(json.loads(value)) if isinstance(value, str) else value, self.s,
                                        self.names)


class Dedup(KeyedProcessFunction):
    """Step 2: keyed by (node, event id); the first copy passes, later ones pass as ``None``.

    The remembered ids expire ``ttl_s`` after they were written (state TTL), which bounds the
    state; a copy arriving later than that counts again (the collectors' own de-duplication
    holds a million ids).
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s

    def open(self, ctx: RuntimeContext) -> None:
        d = ValueStateDescriptor("seen", Types.BOOLEAN())
        ttl = (StateTtlConfig.new_builder(Time.milliseconds(int(self.ttl_s * 1000)))
               .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
               .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired).build())
        d.enable_time_to_live(ttl)
        self.seen = ctx.get_state(d)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if value[0] != "e":
            yield value
        elif self.seen.value():
            yield (*value[:4], None)
        else:
            self.seen.update(True)
            yield value


class Aggregate(KeyedProcessFunction):
    """Step 3: keyed by run; emits the run's statistics once its header and events are all in."""

    def __init__(self, settings: CorrelateSettings) -> None:
        self.s = settings

    def open(self, ctx: RuntimeContext) -> None:
        self.header = ctx.get_state(ValueStateDescriptor("header", PICKLED))
        self.events = ctx.get_list_state(ListStateDescriptor("events", PICKLED))
        self.count = ctx.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if value[0] == "end":
            yield value
            return
        n = self.count.value() or 0
        if value[0] == "h":
            h = value
            self.header.update(h)
        else:
            self.events.add((value[3], value[4], value[5] if len(value) > 5 else None))
            n += 1
            h = self.header.value()
        if h is None or n < h[4]:
            self.count.update(n)
            return
        parts, kept, dups, deliveries = aggregate_run(self.events.get() if n else [], self.s)
        self.header.clear()
        self.events.clear()
        self.count.clear()
        yield ("run", h[1], h[2], h[3], h[5], parts, kept, dups, h[6], deliveries, h[7])


class FlinkStore:
    """:class:`.steps.Store` on the keyed state of the global step."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.meta = ctx.get_state(ValueStateDescriptor("meta", PICKLED))
        self.pending = ctx.get_map_state(MapStateDescriptor("pending", Types.STRING(), PICKLED))
        self.buckets = ctx.get_map_state(MapStateDescriptor("buckets", Types.STRING(), PICKLED))
        # per route (its name): the interval's (id, lower, upper) accumulators
        self.routes = ctx.get_map_state(MapStateDescriptor("routes", Types.STRING(), PICKLED))

    def get_meta(self) -> dict[str, Any] | None:
        v = self.meta.value()
        return None if v is None else pickle.loads(v)

    def set_meta(self, meta: dict[str, Any]) -> None:
        # pickled here: the state keeps bytes, so the correlator's later changes cannot leak into it
        self.meta.update(pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL))

    def put_pending(self, key: str, rec: tuple[Any, ...]) -> None:
        self.pending.put(key, rec)

    def pop_pending(self, key: str) -> tuple[Any, ...] | None:
        if not self.pending.contains(key):
            return None
        rec = self.pending.get(key)
        self.pending.remove(key)
        return rec

    def put_bucket(self, key: str, value: tuple[int, Bucket]) -> None:
        self.buckets.put(key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def remove_bucket(self, key: str) -> None:
        self.buckets.remove(key)

    def bucket_items(self) -> list[tuple[str, tuple[int, Bucket]]]:
        return [(k, pickle.loads(v)) for k, v in self.buckets.items()]

    def put_route(self, route: str, entry: tuple[int, int, int]) -> None:
        self.routes.put(route, entry)

    def route_items(self) -> list[tuple[str, tuple[int, int, int]]]:
        return [(k, tuple(v)) for k, v in self.routes.items()]


class Global(KeyedProcessFunction):
    """Step 4 (:class:`.steps.GlobalStep`), one key; with the route intervals (``interval_routes`` at most)."""

    def __init__(self, settings: CorrelateSettings, names: dict[str, str], interval_routes: int) -> None:
        self.s = settings
        self.names = names
        self.interval_routes = interval_routes

    def open(self, ctx: RuntimeContext) -> None:
        self.step = GlobalStep(self.s, FlinkStore(ctx), RelayNames(self.names), self.interval_routes)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        yield from self.step.offer(value)


class Watch(KeyedProcessFunction):
    """The ``--follow`` source: on every tick, the segments the :class:`.segments.Monitor` releases."""

    def __init__(self, folders: list[str], idle_s: float) -> None:
        self.folders = folders
        self.idle_s = idle_s

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("monitor", PICKLED))
        self.monitor: Monitor | None = None

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if self.monitor is None:
            self.monitor = Monitor(self.folders, idle_s=self.idle_s)
            saved = self.state.value()
            if saved is not None:
                self.monitor.last, self.monitor.next_ordinal = saved
        released = self.monitor.poll()
        if released:
            self.state.update((list(self.monitor.last), self.monitor.next_ordinal))
        for ordinal, ref in released:
            yield ("seg", ordinal, ref.path)


def _environment(args: argparse.Namespace) -> StreamExecutionEnvironment:
    cfg = Configuration()
    cfg.set_string("python.execution-mode", args.python_mode)
    cfg.set_string("python.executable", sys.executable)
    cfg.set_string("python.client.executable", sys.executable)
    cfg.set_string("execution.checkpointing.interval", f"{args.checkpoint_ms} ms")
    cfg.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
    cfg.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    cfg.set_string("execution.checkpointing.num-retained", "3")
    cfg.set_string("restart-strategy.type", "fixed-delay")
    cfg.set_string("restart-strategy.fixed-delay.attempts", "3")
    cfg.set_string("restart-strategy.fixed-delay.delay", "1 s")
    cfg.set_string("state.backend.type", "hashmap")
    if args.state_dir:
        cfg.set_string("execution.checkpointing.dir", Path(args.state_dir, "checkpoints").resolve().as_uri())
    if args.resume_from:
        cfg.set_string("execution.state-recovery.path", Path(args.resume_from).resolve().as_uri())
        cfg.set_string("execution.state-recovery.ignore-unclaimed-state", "true")   # the tick source's
        cfg.set_string("execution.state-recovery.claim-mode", "NO_CLAIM")   # the checkpoint stays as it is
    env = StreamExecutionEnvironment.get_execution_environment(cfg)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(args.parallelism)
    return env


def _segments(env: StreamExecutionEnvironment, args: argparse.Namespace) -> Any:
    if not args.follow:
        refs = merged_segments(args.archive)
        recs = [json.dumps(["seg", i, r.path]) for i, r in enumerate(refs)] + [json.dumps(["end", len(refs)])]
        return env.from_collection(recs, type_info=Types.STRING()).name("segments")
    t_env = StreamTableEnvironment.create(stream_execution_environment=env)
    t_env.create_temporary_table("ticks", TableDescriptor.for_connector("datagen")
                                 .schema(Schema.new_builder().column("n", DataTypes.BIGINT()).build())
                                 .option("rows-per-second", str(args.polls_per_s)).build())
    ticks = t_env.to_data_stream(t_env.from_path("ticks"))
    return (ticks.key_by(lambda r: 0, key_type=Types.INT())
            .process(Watch(list(args.archive), args.idle_s), output_type=PICKLED).name("monitor").uid("monitor")
            .set_parallelism(1))


def build(env: StreamExecutionEnvironment, args: argparse.Namespace, settings: CorrelateSettings) -> Any:
    """The dataflow (module docstring); returns the global step's output stream (JSON lines)."""
    segs = _segments(env, args)
    # uids: a resumed job finds each operator's state by them (the tick source has none worth keeping)
    names = json.loads(args.relay_names)
    records = (segs.rebalance().flat_map(ReadSegments(settings, names), output_type=PICKLED)
               .name("read").uid("read"))
    deduped = (records.key_by(dedup_key).process(Dedup(args.dedup_ttl_s), output_type=PICKLED)
               .name("dedup").uid("dedup"))
    runs = deduped.key_by(run_key).process(Aggregate(settings), output_type=PICKLED).name("aggregate").uid("aggregate")
    out = (runs.key_by(lambda r: 0, key_type=Types.INT())
           .process(Global(settings, names, args.interval_routes), output_type=Types.STRING())
           .name("correlate").uid("correlate").set_parallelism(1))
    if args.incidents:
        sink = (FileSink.for_row_format(str(Path(args.incidents).resolve()), Encoder.simple_string_encoder())
                .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
                .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
                .with_output_file_config(OutputFileConfig.builder().with_part_prefix("incidents")
                                         .with_part_suffix(".jsonl").build())
                .build())
        out.sink_to(sink).name("incident-log").uid("incident-log").set_parallelism(1)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mailpulse.collector.flink.job")
    p.add_argument("--archive", action="append", required=True)
    p.add_argument("--follow", action="store_true")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--settings", required=True, help="CorrelateSettings as JSON")
    p.add_argument("--relay-names", default="{}", help="[relays] names as a JSON object")
    p.add_argument("--interval-routes", type=int, default=50, help="routes with an interval ([metrics] label_values)")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--resume-from", default=None)
    p.add_argument("--incidents", default=None)
    p.add_argument("--checkpoint-ms", type=int, default=2000)
    p.add_argument("--polls-per-s", type=int, default=4)
    p.add_argument("--idle-s", type=float, default=30.0)
    p.add_argument("--dedup-ttl-s", type=float, default=7200.0)
    p.add_argument("--python-mode", choices=("thread", "process"), default="thread")
    return p.parse_args(argv)


def _worker_path(tmp: Path) -> list[str]:
    """``PYTHONPATH`` for the Python workers (in thread mode an interpreter inside the JVM, which
    reads no ``.pth`` files): the site-packages, and for an editable install a symlink view of
    the package, whose sub-packages are folders of the checkout (pyproject's package-dir)."""
    paths = site.getsitepackages()
    root = Path(mailpulse.__file__).resolve().parent
    if any(root.is_relative_to(p) for p in paths):
        return paths
    with open(root.parent / "pyproject.toml", "rb") as f:
        dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    view = tmp / "mailpulse"
    view.mkdir()
    for entry in root.iterdir():
        (view / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        if name.count(".") == 1:
            (view / name.split(".")[1]).symlink_to(root.parent / folder)
    return [str(tmp), *paths]


def main(argv: list[str] | None = None) -> int:
    """Run the job; every output line of the global step goes to stdout as it is released."""
    args = parse_args(argv)
    if args.follow and not args.incidents:
        raise SystemExit("--follow needs --incidents DIR (its output)")
    settings = CorrelateSettings(**json.loads(args.settings))
    with tempfile.TemporaryDirectory(prefix="mailpulse-flink-") as tmp:
        os.environ["PYTHONPATH"] = os.pathsep.join(_worker_path(Path(tmp)))   # read when the JVM starts
        env = _environment(args)
        out = build(env, args, settings)
        if args.follow:   # output only to the incident log (a collect sink cannot be resumed by a new client)
            env.execute("mailpulse-correlate")
            return 0
        with out.execute_and_collect("mailpulse-correlate") as results:
            for line in results:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
    return 0

