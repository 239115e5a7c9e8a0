"""Correlation on constructed archives: the right relay is found, healthy traffic opens nothing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from collector_synth import stream
from mailpulse.collector.alertctx import AlertContext
from mailpulse.collector.archive import ArchiveWriter, read_events
from mailpulse.collector.correlate import (
    CorrelateSettings,
    Correlator,
    correlate_archive,
    dispersion,
    event_path,
    rate_upper,
    tail_z,
)
from mailpulse.collector.intervals import IntervalBook
from mailpulse.collector.provision import init_deployment
from mailpulse.collector.relays import RelayNames

from mailpulse.config.collector import check_config, load_config
from mailpulse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
FAST = CorrelateSettings(history_s=600.0)


def _root_causes(changes: list) -> set[str]:
    return {c.incident["root_cause"] for c in changes if c.kind == "opened"}


def test_healthy_traffic_opens_no_incident() -> None:
    for seed in (1, 2, 3):
        c, changes = correlate_archive(stream(900, seed=seed), FAST)
        assert c.observed == 18000
        assert changes == [], [x.incident["root_cause"] for x in changes]


@pytest.mark.parametrize(("fault", "expected"), [
    ("relay2.example.net", "mx.example.net > relay2.example.net"),
    ("c.example.org", "mx.example.net > relay2.example.net > c.example.org"),
    ("e.example.org", "mx.example.net > relay3.example.net"),   # linear: relay3 has one sender only
    ("mx.example.net", "mx.example.net"),
])
def test_fault_found_at_the_right_relay(fault: str, expected: str) -> None:
    c, changes = correlate_archive(stream(900, seed=7, fault=fault, fault_from=600), FAST)
    assert _root_causes(changes) == {expected}
    inc = next(i for i in c.all_incidents() if i["root_cause"] == expected)
    assert inc["state"] == "open" and inc["severity"] in ("major", "critical")
    ev = inc["evidence"]
    assert ev["anomaly_rate"] > 0.3 and ev["history_rate"] < 0.05
    assert ev["example_event_ids"] and ev["latency_p90_s"] > 1.0
    assert set(inc["affected_nodes"]) == {"lab/node-a", "lab/node-b"}


def test_incident_resolves_after_the_fault_ends_and_is_deterministic() -> None:
    def evs():
        return stream(1200, seed=5, fault="relay1.example.net", fault_from=600, fault_until=800)

    _, ch1 = correlate_archive(evs(), FAST)
    kinds = [(x.kind, x.incident["root_cause"]) for x in ch1 if x.kind != "severity"]
    assert kinds == [("opened", "mx.example.net > relay1.example.net"),
                     ("resolved", "mx.example.net > relay1.example.net")]
    _, ch2 = correlate_archive(evs(), FAST)
    assert [x.incident for x in ch1] == [x.incident for x in ch2]


def test_event_paths_from_hops_and_relay() -> None:
    msg = {"kind": "probe", "fields": {"hops": [
        {"from": "node1.lan", "by": "edge.mailpulse.test", "delay_s": 0.1},
        {"from": "edge.mailpulse.test (localhost [127.0.0.1])", "by": "MX.mailpulse.test.", "delay_s": None}]}}
    assert event_path(msg) == ("mx.mailpulse.test", "edge.mailpulse.test", "node1.lan")
    dl = {"kind": "delivery", "node": "n", "fields": {"host": "edge", "relay": "mx.example.net[10.0.0.1]:25"}}
    assert event_path(dl) == ("mx.example.net", "edge")
    local = {"kind": "delivery", "node": "n", "fields": {"host": "edge", "relay": "none"}}
    assert event_path(local) == ("edge",)


def test_root_cause_reads_the_relays_name() -> None:
    """A relay Postfix knows only by address is named by the ``[relays] names`` map, and deliveries and
    probes through it meet at that name: the incident's root cause is the relay's name, not ``ip:port``."""
    names = RelayNames({"127.0.0.1:47627": "slow.mailpulse.test", "127.0.0.1:47700": "fast.mailpulse.test"})
    dl = {"kind": "delivery", "node": "n", "fields": {"host": "edge.mailpulse.test",
                                                     "relay": "127.0.0.1[127.0.0.1]:47627"}}
    assert event_path(dl) == ("127.0.0.1:47627", "edge.mailpulse.test")
    assert event_path(dl, names) == ("slow.mailpulse.test", "edge.mailpulse.test")
    probe = {"kind": "probe", "fields": {"hops": [
        {"from": "node1.lan", "by": "edge.mailpulse.test"}, {"from": "edge", "by": "slow.mailpulse.test"}]}}
    assert event_path(probe, names)[0] == "slow.mailpulse.test"

    def events() -> list[dict]:
        out = []
        for i in range(2400):
            t = 1_700_000_000.0 + i * 0.5
            port = 47627 if i % 2 else 47700
            bad = (port == 47627 and i >= 1800) or i % 97 == 0
            out.append({"id": f"e{i}", "site": "lab", "node": "edge", "kind": "delivery", "t": t, "received": t,
                        "anomaly": bad, "fields": {"host": "edge.mailpulse.test", "delay": 9.0 if bad else 0.2,
                                                   "relay": f"127.0.0.1[127.0.0.1]:{port}"}})
        return out

    _, plain = correlate_archive(events(), FAST)
    assert _root_causes(plain) == {"127.0.0.1:47627"}
    c = Correlator(FAST, names)
    changes = []
    for ev in events():
        c.observe(ev)
        changes.extend(c.maybe_evaluate())
    assert _root_causes(changes) == {"slow.mailpulse.test"}


def test_exact_tail_does_not_turn_ordinary_false_alarms_into_a_suspect() -> None:
    """7 anomalies in 100 events at a 2 % baseline: z 3.6 by the normal approximation, but the exact
    binomial tail is 0.0041 (z 2.6): no suspect.  Real excess stays significant."""
    assert 2.4 < tail_z(7, 100, 0.02) < 2.8
    assert tail_z(30, 100, 0.02) > 10
    assert tail_z(1, 100, 0.02) < 0
    assert tail_z(0, 0, 0.02) == 0.0


def _route_events(n: int, bad: object) -> list[dict]:
    out = []
    for i in range(n):
        t = 1_700_000_000.0 + i * 0.5
        port = 2525 if i % 2 else 2626
        out.append({"id": f"e{i}", "site": "lab", "node": "edge", "kind": "delivery", "t": t, "received": t,
                    "anomaly": bool(bad(i, port)), "fields": {"host": "edge", "delay": 0.2,  # type: ignore[operator]
                                                              "relay": f"10.0.0.1[10.0.0.1]:{port}"}})
    return out


def test_open_after_s_needs_a_root_cause_in_every_evaluation() -> None:
    """A burst of anomalies found in a single evaluation opens nothing with ``open_after_s``; a lasting
    fault still opens, ``open_after_s`` later."""
    s0 = CorrelateSettings(bucket_s=2.0, window_s=20.0, history_s=300.0, eval_interval_s=1.0, min_anomalies=3)
    s1 = CorrelateSettings(**{**s0.model_dump(), "open_after_s": 3.0})
    # a burst of 12 anomalies at one relay inside 2 s, then nothing: found while it is in the window
    burst = _route_events(1600, lambda i, p: p == 2525 and 1000 <= i < 1024)
    _, ch0 = correlate_archive(burst, s0)
    assert _root_causes(ch0) == {"10.0.0.1:2525"}
    lasting = _route_events(1600, lambda i, p: p == 2525 and i >= 1000)
    _c1, ch1 = correlate_archive(lasting, s1)
    _, ch0b = correlate_archive(lasting, s0)
    assert _root_causes(ch1) == {"10.0.0.1:2525"}
    t0 = next(x.incident["opened"] for x in ch0b if x.kind == "opened")
    t1 = next(x.incident["opened"] for x in ch1 if x.kind == "opened")
    assert 3.0 <= t1 - t0 <= 4.0
    # a one-evaluation blip (the relay's anomalies spread over the siblings one evaluation later)
    blip = _route_events(1600, lambda i, p: (1000 <= i < 1010 and p == 2525) or (1010 <= i < 1040 and p == 2626))
    _, chb = correlate_archive(blip, s1)
    assert not any(x.kind == "opened" and x.incident["root_cause"] == "10.0.0.1:2525" for x in chb)


def test_correlate_cli_on_an_archive(tmp_path: Path) -> None:
    with ArchiveWriter(tmp_path / "arch", max_bytes=256 << 10) as w:
        batch = []
        for e in stream(900, seed=3, fault="relay2.example.net", fault_from=600):
            batch.append(e)
            if len(batch) == 100:
                w.write(batch)
                batch = []
        w.write(batch)
    assert len(list(read_events(tmp_path / "arch"))) == 18000
    r = subprocess.run([sys.executable, "-m", "mailpulse", "correlate", "--archive", str(tmp_path / "arch"),
                        "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    incs = json.loads(r.stdout)
    assert [i["root_cause"] for i in incs] == ["mx.example.net > relay2.example.net"]
    r = subprocess.run([sys.executable, "-m", "mailpulse", "correlate", "--archive", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_config_errors_are_sentences(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[archive]\nmax_bytes = 10\n[mqtt]\nport = "x"\nbogus = 1\n[alerts]\nto = ["nobody"]\n[webb]\n')
    errs = check_config(bad)
    assert len(errs) == 6, errs
    assert all(e.endswith(".") and "\n" not in e for e in errs)
    assert any("[webb]" in e for e in errs) and any("'bogus'" in e for e in errs)
    with pytest.raises(UserError, match="more problems"):
        load_config(bad)
    good = tmp_path / "good.toml"      # what collector init writes, plus a [correlate] section
    dep = init_deployment(tmp_path / "deployment")
    good.write_text(dep.collector_config.read_text() + "\n[correlate]\nwindow_s = 30\n")
    assert check_config(good) == []
    cfg = load_config(good)
    assert cfg.correlate.window_s == 30.0 and cfg.alerts.enabled is False


def test_interval_misses_name_the_route_above_its_interval() -> None:
    """Deliveries go through the collector's per-route intervals; when one relay slows down, the incident
    at it names that route and how many of its deliveries fell above their 90 % interval, and not the
    healthy route.  Without interval outcomes (an archive replay) the list is empty."""
    names = RelayNames({"10.0.0.1:2525": "slow.example.net", "10.0.0.1:2626": "fast.example.net"})
    s = CorrelateSettings(bucket_s=2.0, window_s=20.0, history_s=300.0, eval_interval_s=1.0, min_anomalies=3)
    book = IntervalBook(names)
    c = Correlator(s, names, book.level)
    evs = _route_events(1600, lambda i, p: p == 2525 and i >= 1000)
    rng = random.Random(5)
    changes = []
    for ev in evs:
        slow = ev["anomaly"]
        ev["fields"]["delay"] = (8.0 if slow else 0.2) * rng.lognormvariate(0, 0.2)
        got = book.observe(ev, ev["t"])
        assert got is not None
        c.observe(ev, (got[0], got[1]))
        changes.extend(c.maybe_evaluate())
    inc = next(x.incident for x in changes if x.kind == "opened")
    assert inc["root_cause"] == "slow.example.net"
    misses = inc["evidence"]["interval_misses"]
    assert [m["route"] for m in misses] == ["lab/edge|slow.example.net"]
    m = misses[0]
    # when it opens, the interval has not caught up with the 40x slow-down: every slow (anomalous) delivery
    # in the window is above it, the healthy ones before the slow-down inside it
    assert m["above"] >= inc["evidence"]["anomalies"] >= 3 and m["below"] <= 2
    assert m["text"].startswith(f"{m['above']} of {m['deliveries']} deliveries on route lab/edge|slow.example.net "
                                "above their 90 % interval")
    # the counts are those of the window: the deliveries through the relay in the last window_s
    assert m["deliveries"] == inc["evidence"]["events"]
    # the alert sentence carries it
    ctx = AlertContext(names).describe(inc)
    assert m["text"] in ctx["evidence"]
    # later, the interval has followed the new level: the misses fall back towards the nominal 3 % above
    late = next(i for i in c.open_incidents() if i["root_cause"] == "slow.example.net")["evidence"]
    assert sum(x["above"] for x in late["interval_misses"]) < m["above"]
    # a replay without interval outcomes: no interval evidence, same root cause
    _, plain = correlate_archive(evs, s)
    opened = next(x.incident for x in plain if x.kind == "opened")
    assert opened["root_cause"] == "10.0.0.1:2525" and opened["evidence"]["interval_misses"] == []


# bench-sized settings: 2 s buckets, 20 s window
PROBE_FAST = CorrelateSettings(bucket_s=2.0, window_s=20.0, history_s=60.0, eval_interval_s=1.0, min_anomalies=3,
                               floor_rate=0.04, open_after_s=2.0, resolve_after=5)


def _probe_lab(fail: str | None, every: int = 2, until: float = 1e9) -> list[dict]:
    """Two probe routes (a through relay-a, b through relay-b, both into one mx, a probe every 3 s each)
    among busy deliveries; from 120 s on every ``every``-th probe of route b fails with ``fail``
    (``lost``: no hops but its route's last path, as the prober reports it), never flagged by the model."""
    rng = random.Random(3)
    out: list[dict] = []
    t0 = 1_700_000_000.0
    n = nb = 0
    for i in range(1200):                       # 240 s, an event every 0.2 s
        t = t0 + i * 0.2
        relay = ("relay-a", "relay-b")[i % 2]
        out.append({"id": f"d{i}", "site": "lab", "node": "edge", "kind": "delivery", "t": t, "received": t,
                    "anomaly": rng.random() < 0.03, "fields": {"host": "edge", "delay": 0.3, "relay": relay}})
        if i % 15 == 0:                          # every 3 s: one probe per route
            for route in ("a", "b"):
                n += 1
                nb += route == "b"
                hops: list[dict[str, object]] = [{"from": "node", "by": "edge"},
                                                 {"from": "edge", "by": f"relay-{route}"},
                                                 {"from": f"relay-{route}", "by": "mx"}]
                outcome = "ok"
                if route == "b" and fail and 120 <= t - t0 < until and nb % every == 0:
                    outcome = fail
                    if fail == "lost":
                        hops = [{**h, "assumed": True} for h in hops]
                out.append({"id": f"p{n}", "site": "lab", "node": "prober", "kind": "probe", "t": t, "received": t,
                            "anomaly": False, "fields": {"route": route, "outcome": outcome, "hops": hops,
                                                         "latency_ms": 900.0}})
    return out


@pytest.mark.parametrize(("fail", "every"), [("lost", 2), ("damaged", 1)])
def test_failed_probes_name_their_routes_relay(fail: str, every: int) -> None:
    """Lost (half) or damaged (all) probes of one route, which the model does not flag: the probe
    failure test names the relay where that route parts from the healthy one, within 30 s."""
    _, changes = correlate_archive(_probe_lab(fail, every), PROBE_FAST)
    opened = [x.incident for x in changes if x.kind == "opened"]
    assert [i["root_cause"] for i in opened] == ["mx > relay-b"]
    assert opened[0]["opened"] - (1_700_000_000.0 + 120) <= 30.0
    ev = opened[0]["evidence"]
    assert ev[f"probes_{fail}"] >= 3 and ev["probes"] >= ev[f"probes_{fail}"]
    assert opened[0]["affected_routes"] == ["b"] and opened[0]["severity"] in ("major", "critical")


def test_a_stray_lost_probe_opens_nothing_and_failures_resolve() -> None:
    _, stray = correlate_archive(_probe_lab("lost", every=1, until=121), PROBE_FAST)
    assert [x for x in stray if x.kind == "opened"] == []
    _, ch = correlate_archive(_probe_lab("damaged", every=1, until=170), PROBE_FAST)
    assert [(x.kind, x.incident["root_cause"]) for x in ch if x.kind != "severity"] == [
        ("opened", "mx > relay-b"), ("resolved", "mx > relay-b")]


def test_a_probe_with_a_broken_outcome_is_no_probe() -> None:
    c = Correlator(PROBE_FAST)
    bad_outcomes: list[object] = [[], {"x": 1}, None, 3]
    for bad in bad_outcomes:
        c.observe({"id": "p", "kind": "probe", "node": "n", "t": 1.0, "received": 1.0,
                   "fields": {"outcome": bad, "hops": [{"from": "a", "by": "b"}]}})
    assert c.observed == 4 and c.window(("*",)).probes == 0


def _model_switch_events(seed: int = 3) -> list[dict]:
    """Edge deliveries to three relays, 3 a second each, for 400 s: up to 100 s scored by the untrained
    bring-up model (flags nothing), then by a trained model that flags 20 % of ``noisy``'s deliveries
    (its timings vary most) and 1 % of the others'; from 300 s ``noisy`` fails (80 % flagged)."""
    rng = random.Random(seed)
    out = []
    for i in range(3600):
        t = 1_700_000_000.0 + i / 9
        relay = ("noisy", "quiet", "mx")[i % 3]
        s = i / 9
        rate = 0.0 if s < 100 else (0.8 if s >= 300 else 0.2) if relay == "noisy" else 0.01
        out.append({"id": f"e{i}", "site": "lab", "node": "edge", "kind": "delivery", "t": t, "received": t,
                    "anomaly": rng.random() < rate,
                    "fields": {"host": "edge.example.net", "delay": 0.2,
                               "relay": f"{relay}.example.net[10.0.0.{i % 3}]"}})
    return out


def test_a_new_models_verdicts_are_not_judged_against_the_previous_models() -> None:
    """After a model change the walk's baselines are the new model's verdicts only: the trained model's
    ordinary false alarms at a noisy relay opened an incident against the bring-up model's empty
    history; with ``model_changed`` none opens, and a real fault there later is still found."""
    s = CorrelateSettings(bucket_s=2.0, window_s=20.0, history_s=120.0, eval_interval_s=1.0, min_anomalies=3,
                          resolve_after=5, floor_rate=0.04, open_after_s=2.0)
    t_switch, t_fault = 1_700_000_100.0, 1_700_000_300.0
    for told in (False, True):
        c, changes = Correlator(s), []
        for ev in _model_switch_events():
            if told and c.scores_since is None and ev["t"] >= t_switch:
                c.model_changed(t_switch)
            c.observe(ev)
            changes += [ch for ch in c.maybe_evaluate() if ch.kind == "opened"]
        before = [ch.incident["root_cause"] for ch in changes if ch.incident["opened"] < t_fault]
        after = {ch.incident["root_cause"] for ch in changes if ch.incident["opened"] >= t_fault}
        if told:
            assert before == [] and after == {"noisy.example.net"}, (before, after)
            assert c.scores_since == t_switch
        else:
            assert "noisy.example.net" in before, before   # what model_changed is for


def test_history_rate_bound() -> None:
    """The baseline taken from a history is the upper confidence bound of its rate: an empty history
    bounds nothing, a short one is wide, a long one close to its rate."""
    assert rate_upper(0, 0) == 1.0 and rate_upper(5, 5) == 1.0
    assert 0.25 < rate_upper(2, 20) < 0.35
    assert 0.10 < rate_upper(25, 250) < 0.15
    assert rate_upper(250, 2500) < rate_upper(25, 250) < rate_upper(2, 20)


def test_dispersion_of_clustered_verdicts() -> None:
    """Independent verdicts have a dispersion near 1; verdicts that come in clusters (a burst of
    traffic flagged together) a larger one, capped; too little history says nothing."""
    rng = random.Random(4)
    independent = [(sum(rng.random() < 0.05 for _ in range(12)), 12) for _ in range(60)]
    assert 0.6 < dispersion(independent, 10.0) < 1.5
    clustered = [(6, 12) if b % 12 == 0 else (0, 12) for b in range(60)]   # 3 % of the verdicts, all in 5 buckets
    assert dispersion(clustered, 100.0) > 5.0 and dispersion(clustered, 4.0) == 4.0
    assert dispersion(clustered[:9], 4.0) == 1.0           # fewer than 10 buckets
    assert dispersion([(0, 12)] * 58 + [(2, 12)] * 2, 4.0) == 1.0   # fewer than 5 anomalies
    assert dispersion([(12, 12)] * 60, 4.0) == 1.0         # every verdict an anomaly: nothing to compare


def test_quasi_binomial_tail() -> None:
    """With clusters of ``phi`` verdicts counting as one, the same excess is less surprising; at
    ``phi`` 1 the tail is the exact binomial one, and it is continuous there."""
    exact = tail_z(12, 100, 0.04)
    assert exact > 3.0
    assert abs(tail_z(12, 100, 0.04, 1.000001) - exact) < 1e-3
    assert tail_z(12, 100, 0.04, 2.0) < 2.5 < exact
    assert tail_z(40, 100, 0.04, 4.0) > 3.0               # a real fault stays significant
    assert tail_z(2, 100, 0.04, 3.0) < 0


def _bursty_events(seed: int, fault_from: float | None = None) -> list[dict]:
    """Edge deliveries, 4 a second over three relays, for 900 s; every ~15 s a burst of 10-20 messages
    queues at the edge and its deliveries to every relay are flagged at 30 % (1 % otherwise): flags
    that come in clusters.  From ``fault_from``, relay-b fails (40 % flagged)."""
    rng = random.Random(seed)
    out: list[dict] = []
    t, next_burst = 0.0, rng.expovariate(1 / 15)
    while t < 900:
        evs = [(t, rng.choice(("relay-a", "relay-b", "mx")), 0.01)]
        if t >= next_burst:
            evs += [(t + j * 0.05, rng.choice(("relay-a", "relay-b", "mx")), 0.3) for j in range(rng.randint(10, 20))]
            next_burst = t + rng.expovariate(1 / 15)
        for tt, relay, p in evs:
            if fault_from is not None and tt >= fault_from and relay == "relay-b":
                p = max(p, 0.4)
            ts = 1_700_000_000.0 + tt
            out.append({"id": f"e{len(out)}", "site": "lab", "node": "edge", "kind": "delivery", "t": ts,
                        "received": ts, "anomaly": rng.random() < p,
                        "fields": {"host": "edge.example.net", "delay": 0.2,
                                   "relay": f"{relay}.example.net[10.0.0.1]"}})
        t += rng.expovariate(4.0)
    return out


def test_clustered_ordinary_flags_open_fewer_incidents_and_faults_are_still_found() -> None:
    """Whole-site incidents out of ordinary bursts of flags: fewer when a tree node's dispersion counts
    its clusters (19 without, 13 with, over ten streams; the rest are windows with more bursts than
    the quiet history before them), and a failing relay is still found as fast."""
    def opened(disp: float, seed: int, fault_from: float | None = None) -> list[tuple[float, str]]:
        s = CorrelateSettings(bucket_s=2.0, window_s=20.0, history_s=120.0, eval_interval_s=1.0, min_anomalies=3,
                              resolve_after=5, floor_rate=0.04, open_after_s=2.0, max_dispersion=disp)
        c, out = Correlator(s), []
        for ev in _bursty_events(seed, fault_from):
            c.observe(ev)
            out += [(ch.incident["opened"] - 1_700_000_000.0, ch.incident["root_cause"])
                    for ch in c.maybe_evaluate() if ch.kind == "opened"]
        return [o for o in out if o[0] >= 140]     # once the history is whole

    false = {disp: sum(len(opened(disp, seed)) for seed in range(1, 11)) for disp in (1.0, 4.0)}
    assert false[4.0] <= false[1.0] - 4, false
    for seed in (1, 4, 7):
        found = [t - 600 for t, cause in opened(4.0, seed, 600.0) if cause == "relay-b.example.net" and t >= 600]
        assert found and found[0] <= 45, (seed, found)


def _late_losses() -> list[dict]:
    """Probes of routes a and b every 2 s for 200 s among deliveries; route b's probes sent at 120, 130
    and 140 s are lost, and each loss is reported 5 s after its send time (the node's probe timeout)
    with that send time as its event time."""
    t0 = 1_700_000_000.0
    out: list[dict] = []
    late: list[dict] = []
    for i in range(1000):                       # an event every 0.2 s
        t = t0 + i * 0.2
        out += [e for e in late if e["received"] <= t]
        late = [e for e in late if e["received"] > t]
        out.append({"id": f"d{i}", "site": "lab", "node": "edge", "kind": "delivery", "t": t, "received": t,
                    "anomaly": False, "fields": {"host": "edge", "delay": 0.3, "relay": ("relay-a", "relay-b")[i % 2]}})
        if i % 10:
            continue
        for route in ("a", "b"):
            lost = route == "b" and round(t - t0) in (120, 130, 140)
            hops = [{"from": "node", "by": "edge", "assumed": lost}, {"from": "edge", "by": f"relay-{route}",
                    "assumed": lost}, {"from": f"relay-{route}", "by": "mx", "assumed": lost}]
            ev = {"id": f"p{i}{route}", "site": "lab", "node": "prober", "kind": "probe", "t": t,
                  "received": t + 5.0 if lost else t, "anomaly": False,
                  "fields": {"route": route, "outcome": "lost" if lost else "ok", "hops": hops}}
            (late if lost else out).append(ev)
    return out


def test_probe_window_holds_losses_known_a_timeout_late() -> None:
    """Three lost probes 10 s apart, each known 5 s after its send time: a 20 s window never holds all
    three once they are known; ``probe_window_s`` = window + the probe timeout does, and names the relay."""
    def settings(probe_window_s: float) -> CorrelateSettings:
        return CorrelateSettings(bucket_s=1.0, window_s=20.0, history_s=60.0, eval_interval_s=1.0,
                                 probe_floor_rate=0.01, probe_window_s=probe_window_s)

    _, narrow = correlate_archive(_late_losses(), settings(0.0))
    assert [x for x in narrow if x.kind == "opened"] == []
    _, wide = correlate_archive(_late_losses(), settings(25.0))
    opened = [x.incident for x in wide if x.kind == "opened"]
    assert [i["root_cause"] for i in opened] == ["mx > relay-b"]
    assert opened[0]["evidence"]["probes_lost"] == 3      # the counts the test judged, in its window
    with pytest.raises(ValueError, match="must not exceed window_s"):
        settings(81.0)
