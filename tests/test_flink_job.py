"""The correlation on Flink gives the embedded correlator's incidents: the steps in plain Python under
any arrival order and restarts, then the real job on a MiniCluster at parallelism 2 (batch on two
archives, and a growing archive with the job killed and resumed from its checkpoint)."""

from __future__ import annotations

import calendar
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flink_archives import concurrent_faults, slow_relay_deliveries, two_shards
from mailpulse.collector.archive import ArchiveWriter, read_events, read_valid_events
from mailpulse.collector.correlate import CorrelateSettings, Correlator, correlate_archive
from mailpulse.collector.flink.feed import IncidentFeed
from mailpulse.collector.flink.runner import JobOptions, job_command, latest_checkpoint
from mailpulse.collector.flink.segments import Monitor, merged_segments, read_shards
from mailpulse.collector.flink.steps import (
    DictStore,
    GlobalStep,
    aggregate_run,
    dedup_key,
    read_segment_records,
    run_key,
)
from mailpulse.collector.intervals import IntervalBook, RouteIntervals
from mailpulse.collector.relays import RelayNames
from mailpulse.collector.service import Collector

from mailpulse.config.collector import CollectorConfig

ROOT = Path(__file__).resolve().parent.parent
FLINK_PY = ROOT / ".venv-flink" / "bin" / "python"


def _simulate(folders: list[Path], s: CorrelateSettings, seed: int, names: dict[str, str] | None = None,
              store: DictStore | None = None) -> list[dict[str, Any]]:
    """The job's steps without Flink: records shuffled between every step, the global step
    restarted from its store now and then, duplicates of some events fed in."""
    rng = random.Random(seed)
    segs = merged_segments(folders)
    rn = RelayNames(names)
    recs = [r for o, ref in enumerate(segs) for r in read_segment_records(("seg", o, ref.path), s, rn)]
    recs += [r for r in recs[:200:7] if r[0] == "e"]   # copies of events: dropped by (node, id)
    recs.append(("end", len(segs)))
    rng.shuffle(recs)
    seen: set[Any] = set()
    events: dict[Any, list[Any]] = {}
    headers: dict[Any, Any] = {}
    runs: list[Any] = [("end", len(segs))]
    for r in recs:
        if r[0] == "e":
            k = dedup_key(r)
            events.setdefault(run_key(r), []).append((r[3], None, None) if k in seen else r[3:6])
            seen.add(k)
        elif r[0] == "h":
            headers[run_key(r)] = r
    for k, h in headers.items():
        parts, kept, dups, deliveries = aggregate_run(events.get(k, []), s)
        runs.append(("run", h[1], h[2], h[3], h[5], parts, kept, dups, h[6], deliveries, h[7]))
    rng.shuffle(runs)
    step = GlobalStep(s, DictStore() if store is None else store, rn)
    lines: list[str] = []
    for i, r in enumerate(runs):
        lines += step.offer(r)
        if i % 23 == 0:
            step = GlobalStep(s, step.store, rn)   # a restart: everything from the store
    return [json.loads(x) for x in lines]


@pytest.mark.parametrize("seed", [1, 2])
def test_steps_give_the_embedded_incidents_in_any_order(tmp_path: Path, seed: int) -> None:
    s = CorrelateSettings(history_s=900.0)
    n = concurrent_faults(tmp_path / "a")
    ref, ref_changes = correlate_archive(read_events(tmp_path / "a"), s)
    out = _simulate([tmp_path / "a"], s, seed)
    final = out[-1]
    assert final["type"] == "final" and final["observed"] == n == ref.observed
    assert final["duplicates"] > 0
    assert len(ref.all_incidents()) >= 3
    assert final["incidents"] == ref.all_incidents()
    assert [o["incident"] for o in out if o["type"] == "change"] == [c.incident for c in ref_changes]


def test_steps_with_judged_times_skewed_nodes_and_bad_entries(tmp_path: Path) -> None:
    """The collector's time judgement in the archive (``t``, ``clock``): events of skewed nodes are
    counted, not correlated, a node far behind does not hold the watermark, entries that fail the
    payload declaration are skipped - by the job's steps exactly as by ``correlate``."""
    concurrent_faults(tmp_path / "a", seconds=900.0)
    rng = random.Random(5)
    evs = []
    for i, ev in enumerate(read_events(tmp_path / "a")):
        if ev["node"] in ("n000", "n001"):
            ev = dict(ev, clock="skewed", t=ev["received"])   # a fast clock: archived, never correlated
        elif ev["node"] == "n002":
            ev = dict(ev, clock="corrected", t=ev["received"] - 400.0)   # far behind: a replayed backlog
        elif rng.random() < 0.3:
            ev = dict(ev, clock="ok", t=ev["received"] - rng.uniform(0.1, 2.0))
        evs.append(ev)
        if i % 997 == 0:
            evs.append(dict(ev, id=f"bad-{i}", fields="oops"))   # quarantined by validation
    with ArchiveWriter(tmp_path / "b", max_bytes=96 << 10, fsync=False) as w:
        for i in range(0, len(evs), 60):
            w.write(evs[i:i + 60])
    s = CorrelateSettings(history_s=900.0)
    skipped: collections.Counter[str] = collections.Counter()
    ref, _ = correlate_archive(read_valid_events(tmp_path / "b", skipped), s)
    assert skipped["fields"] > 0 and ref.skipped_skewed > 0 and ref.all_incidents()
    final = _simulate([tmp_path / "b"], s, 4)[-1]
    assert final["observed"] == ref.observed
    assert final["incidents"] == ref.all_incidents()
    assert final["invalid"] == sum(skipped.values())   # every skipped entry counted once


def test_steps_on_two_shards(tmp_path: Path) -> None:
    folders = [tmp_path / "dc1", tmp_path / "dc2"]
    n = two_shards((folders[0], folders[1]))
    s = CorrelateSettings()
    ref, _ = correlate_archive(read_shards(folders), s)
    final = _simulate(folders, s, 3)[-1]
    assert final["observed"] == n and final["incidents"] == ref.all_incidents()
    assert [i["root_cause"] for i in ref.all_incidents()] == ["mx2.example.net > r4.example.net"]


def _interval_reference(folder: Path, s: CorrelateSettings, names: dict[str, str]
                        ) -> tuple[Correlator, list[Any], IntervalBook]:
    """What the collector computes on the archive's events in its ingest (archive) order: each delivery
    through its route's interval, then the correlator with the relay names."""
    book = IntervalBook(RelayNames(names), max_routes=50)
    c, changes = correlate_archive(read_events(folder), s, RelayNames(names), book)
    return c, changes, book


def test_steps_give_the_collectors_interval_evidence_and_relay_names(tmp_path: Path) -> None:
    """With ``[relays] names`` and the route intervals, the steps (records in any order, restarts) give the
    incidents of the collector's ingest order: the slow relay by its name, its route's deliveries above
    their interval in the evidence, and per route the same integer bounds as the collector's tracker."""
    names = slow_relay_deliveries(tmp_path / "a")
    s = CorrelateSettings()
    ref, ref_changes, book = _interval_reference(tmp_path / "a", s, names)
    incs = ref.all_incidents()
    assert [i["root_cause"] for i in incs] == ["slow.example.net"]
    opened = next(c.incident for c in ref_changes if c.kind == "opened")
    misses = opened["evidence"]["interval_misses"]       # when it opened, the routes through it were above
    assert len(misses) == 3 and all(m["route"].endswith("|slow.example.net") for m in misses)
    assert sum(m["above"] for m in misses) >= 6
    assert "above their 90 % interval" in misses[0]["text"]
    store = DictStore()
    out = _simulate([tmp_path / "a"], s, 6, names, store)
    assert out[-1]["incidents"] == incs
    assert [o["incident"] for o in out if o["type"] == "change"] == [c.incident for c in ref_changes]
    model = book.model
    assert isinstance(model, RouteIntervals) and len(model.table) == 3 * 3
    assert store.routes == {r: model.entry(r) for r in model.table.ids}
    # without the tracker (a replay of old): the same incidents, no interval evidence
    plain, _ = correlate_archive(read_events(tmp_path / "a"), s, RelayNames(names))
    assert [i["root_cause"] for i in plain.all_incidents()] == [i["root_cause"] for i in incs]
    assert all(not i["evidence"]["interval_misses"] for i in plain.all_incidents())


def test_steps_take_the_nodes_flags_like_the_collector(tmp_path: Path) -> None:
    """Deliveries that carry their node core's flags: the steps count those sides in the evidence, as
    the collector's ingest-order replay does (not its tracker's)."""
    names = slow_relay_deliveries(tmp_path / "a", seconds=700.0, node_flags=True)
    s = CorrelateSettings()
    ref, ref_changes, book = _interval_reference(tmp_path / "a", s, names)
    assert book.node_flags > 5000 and book.disagreements > 100      # these flags are not the tracker's
    out = _simulate([tmp_path / "a"], s, 7, names)
    assert out[-1]["incidents"] == ref.all_incidents()
    assert [o["incident"] for o in out if o["type"] == "change"] == [c.incident for c in ref_changes]
    plain = slow_relay_deliveries(tmp_path / "b", seconds=700.0)
    tracker, _, _ = _interval_reference(tmp_path / "b", s, plain)
    misses = [i["evidence"]["interval_misses"] for i in ref.all_incidents()]
    assert misses and misses != [i["evidence"]["interval_misses"] for i in tracker.all_incidents()]


def test_monitor_releases_segments_in_the_merged_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    now = {"t": calendar.timegm((2026, 9, 23, 9, 29, 30, 0, 0, 0))}   # after every name below
    m = Monitor([str(a), str(b)], idle_s=30.0, margin_s=2.0, clock=lambda: now["t"])
    for name in ("seg-20260923T092810Z-000000.jsonl.gz", "seg-20260923T092830Z-000001.jsonl.gz"):
        (a / name).write_bytes(b"")
    (b / "seg-20260923T092820Z-000000.jsonl.tmp").write_bytes(b"")   # shard b is writing from 28:20
    assert [r.path.rsplit("/", 1)[1] for _, r in m.poll()] == ["seg-20260923T092810Z-000000.jsonl.gz"]
    (b / "seg-20260923T092820Z-000000.jsonl.tmp").rename(b / "seg-20260923T092820Z-000000.jsonl.gz")
    got = m.poll()
    assert [(o, r.shard) for o, r in got] == [(1, 1), (2, 0)]   # b's segment before a's later one
    (a / "seg-20260923T092840Z-000002.jsonl.tmp").write_bytes(b"")
    os.utime(a / "seg-20260923T092840Z-000002.jsonl.tmp", (now["t"], now["t"]))
    (a / "seg-20260923T092900Z-000003.jsonl.gz").write_bytes(b"")   # after a's open segment: held back
    assert m.poll() == []
    now["t"] += 3600   # a's open segment untouched for an hour: a dead collector holds nothing back
    assert [o for o, _ in m.poll()] == [3]


def test_flink_run_bad_input_is_one_sentence(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mailpulse", "flink", "run", "--archive", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "mailpulse", "flink", "run", "--archive", str(tmp_path),
                        "--parallelism", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--parallelism" in r.stderr


# -- on a MiniCluster ---------------------------------------------------------------------------------

def _need_flink() -> None:
    if not FLINK_PY.exists():
        pytest.skip("the Flink venv (.venv-flink, made by 'make setup') is not there")


def _cli_json(*args: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "mailpulse", *args, "--json"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.mark.xdist_group("flink")
def test_flink_job_equals_correlate_on_concurrent_faults(tmp_path: Path) -> None:
    _need_flink()
    concurrent_faults(tmp_path / "a")
    ref = _cli_json("correlate", "--archive", str(tmp_path / "a"))
    assert len(ref) >= 3
    t = time.monotonic()
    got = _cli_json("flink", "run", "--archive", str(tmp_path / "a"), "--parallelism", "2")
    print(f"flink job on {len(merged_segments([tmp_path / 'a']))} segments: {time.monotonic() - t:.1f} s")
    assert got == ref


@pytest.mark.xdist_group("flink")
def test_flink_job_equals_correlate_on_two_shards(tmp_path: Path) -> None:
    _need_flink()
    a, b = tmp_path / "dc1", tmp_path / "dc2"
    two_shards((a, b))
    ref = _cli_json("correlate", "--archive", str(a), "--archive", str(b))
    assert [i["root_cause"] for i in ref] == ["mx2.example.net > r4.example.net"]
    assert _cli_json("flink", "run", "--archive", str(a), "--archive", str(b)) == ref


@pytest.mark.xdist_group("flink")
def test_flink_job_names_relays_and_gives_the_collectors_interval_misses(tmp_path: Path) -> None:
    """``flink run --config``: the config's ``[relays] names`` and route table size reach the job; its
    incidents (root cause by name, ``interval_misses``) equal the collector's ingest-order replay."""
    _need_flink()
    names = slow_relay_deliveries(tmp_path / "a", seconds=800.0)
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'[archive]\ndir = "{tmp_path / "own"}"\n[web]\nenabled = false\n[relays.names]\n'
                   + "".join(f'"{k}" = "{v}"\n' for k, v in names.items()))
    ref, _, _ = _interval_reference(tmp_path / "a", CorrelateSettings(), names)
    want = json.loads(json.dumps(ref.all_incidents()))
    assert [i["root_cause"] for i in want] == ["slow.example.net"] and want[0]["evidence"]["interval_misses"]
    got = _cli_json("flink", "run", "--archive", str(tmp_path / "a"), "--config", str(cfg), "--parallelism", "2")
    assert got == want


def _reference_changes(folder: Path, s: CorrelateSettings) -> tuple[int, list[dict[str, Any]]]:
    """What a live correlation of the archive gives (no final evaluation: the archive never ends)."""
    c, out = Correlator(s), []
    for ev in read_events(folder):
        c.observe(ev)
        out += [{"kind": ch.kind, "previous_severity": ch.previous_severity, "incident": ch.incident}
                for ch in c.maybe_evaluate()]
    return c.observed, out


class _Job:
    """The job with --follow in its own process group (so that kill -9 reaches its JVM too); its
    progress as the incident log shows it."""

    def __init__(self, opts: JobOptions, log: Path) -> None:
        assert opts.incidents
        self.feed = IncidentFeed(opts.incidents)
        self.changes: list[dict[str, Any]] = []
        with open(log, "w") as err:
            self.p = subprocess.Popen(job_command(opts), stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                      start_new_session=True)

    def segments(self) -> int:
        self.changes += [r for r in self.feed.poll() if r["type"] == "change"]
        return self.feed.progress["segments"] if self.feed.progress else 0

    def wait_segments(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.p.poll() is None:
            if self.segments() >= n:
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(30)


def _plain(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("seq", "type")} for r in changes]


@pytest.mark.xdist_group("flink")
def test_flink_job_restarts_from_its_checkpoint_without_loss_or_duplicates(tmp_path: Path) -> None:
    _need_flink()
    src = tmp_path / "src"
    n = concurrent_faults(src, seconds=1500.0)
    s = CorrelateSettings(history_s=900.0)
    observed, expected = _reference_changes(src, s)
    assert observed == n and len(expected) >= 4
    segs = merged_segments([src])
    live = tmp_path / "live"
    live.mkdir()
    opts = JobOptions([str(live)], s, follow=True, parallelism=2, state_dir=str(tmp_path / "state"),
                      incidents=str(tmp_path / "incidents"), checkpoint_ms=1000, idle_s=5.0)
    stop = threading.Event()

    def grow() -> None:   # a collector closing a segment every 0.4 s (stamped now, same order)
        for i, ref in enumerate(segs):
            if stop.wait(0.4):
                return
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            target = live / f"seg-{stamp}-{i:06d}.jsonl.gz"
            target.with_suffix(".part").write_bytes(Path(ref.path).read_bytes())
            target.with_suffix(".part").rename(target)

    writer = threading.Thread(target=grow, daemon=True)
    first = _Job(opts, tmp_path / "first.log")
    try:
        writer.start()
        assert first.wait_segments(len(segs) // 3, 240), "the job made no progress"
    finally:
        first.kill()
    done_before = first.segments()
    assert latest_checkpoint(tmp_path / "state") is not None
    second = _Job(opts, tmp_path / "second.log")   # resumes from the newest retained checkpoint
    try:
        assert second.wait_segments(len(segs), 240), (second.feed.progress,
                                                      (tmp_path / "second.log").read_text()[-2000:])
    finally:
        stop.set()
        second.kill()
    assert 0 < done_before < len(segs)
    last = second.feed.progress
    assert last is not None and last["observed"] == n and last["duplicates"] == 0
    # every change once and in order across the kill: what the first run committed, then the second
    assert _plain(first.changes + second.changes[len(first.changes):]) == expected
    whole = IncidentFeed(tmp_path / "incidents")
    assert _plain([r for r in whole.poll() if r["type"] == "change"]) == expected


def test_collector_dashboard_and_alerts_take_the_flink_incidents(tmp_path: Path) -> None:
    """[flink] incidents_dir: the dashboard state, its live clients and the alert mails get the Flink
    job's incident changes (here the global step's own lines, as its FileSink commits them)."""
    n = concurrent_faults(tmp_path / "a", seconds=1500.0)
    s = CorrelateSettings()
    lines = _simulate([tmp_path / "a"], s, 4)
    changes = [r for r in lines if r["type"] == "change"]
    log = tmp_path / "incidents"
    log.mkdir()
    half = len(changes) // 2
    (log / "incidents-a-0-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changes[half:]))
    cfg = CollectorConfig.model_validate({
        "archive": {"dir": str(tmp_path / "own")}, "web": {"enabled": False},
        "alerts": {"to": ["ops@example.org"], "min_interval_s": 0, "rate_limit_per_hour": 1000},
        "flink": {"incidents_dir": str(log)}})
    sent: list[Any] = []
    col = Collector(cfg, send=sent.append)
    assert col.evaluate() == []   # the second half waits for the first (ordered by seq)
    (log / "incidents-a-0-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changes[:half]))
    got = col.evaluate()
    assert [c.incident for c in got] == [r["incident"] for r in changes] and n > 0
    opened = {r["incident"]["id"] for r in changes if r["kind"] == "opened"}
    assert opened and set(col.state.incidents) >= opened
    assert len(sent) >= len(opened) and col.correlator.observed == 0
    assert col.evaluate() == []   # nothing twice
