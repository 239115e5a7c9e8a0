"""Root-cause correlation: the transmission-path tree, its statistics, the recursive walk, incidents.

**The tree.**  Every event names the path its mail took, from the *receiving* side towards the
sender (:func:`event_path`):

* ``message`` and ``probe`` events carry the parsed ``Received:`` hops (oldest first); the path is
  the ``by`` host of each hop, newest first, then the oldest hop's ``from`` host;
* ``delivery`` events (a Postfix log line) go from the node's Postfix ``host`` to ``relay=``;
  the path is ``[relay, host]`` (just ``[host]`` for local deliveries, ``relay=none``).

Host names are lower-cased and stripped of ``[ip]`` and of port ``:25`` (another port is kept,
so two relays on one address stay apart); a relay the ``[relays] names`` map names (Postfix knows
many only as ``127.0.0.1[127.0.0.1]:47627``) is that name, so a root cause reads as the relay's
name and a delivery meets the probes through the same relay; consecutive repeats are merged.  All
paths hang below one virtual root, so the tree's first level is the receiving relays and it
branches towards senders.  Each tree node keeps, per time bucket of ``bucket_s`` seconds (event
time), the events that passed through it, how many were anomalous, a bounded sample of their
end-to-end latencies and of the hop delay *at* that relay (the ``delay_s`` of its hop: the time
the mail spent between this relay's stamp and the next one's).

**The walk** (:meth:`Correlator.evaluate`).  The *window* is the last ``window_s`` seconds, the
*history* the ``history_s`` before it.  Starting at the root, :meth:`Correlator._walk` looks at the
children of a node that have anomalies in the window and tests each child ``c`` against the
baseline rate ``p0 = max(rate of its siblings pooled, c's own history rate, floor_rate)`` with
the z-score of the exact binomial tail ``P(X >= a)`` (:func:`tail_z`), quasi-binomial when the
child's flags cluster in its history (:func:`dispersion`: ``phi`` verdicts count as one); the
history rate is a sample, taken at its upper confidence bound (:func:`rate_upper`), and counts only
the verdicts of the nodes' current model (:meth:`Correlator.model_changed`).  Children with
``z >= z_min``, a rate of at least ``min_ratio * p0`` (an effect size, so large counts do not make
small differences "significant") and at least ``min_anomalies`` anomalies are *suspects*; so is a
child one of whose own children passes that test against the child's baseline (and its own
history) while the child's other traffic dilutes it.  While an incident is open, the history
rates of the tree nodes on its path are frozen at their pre-incident values, so a long fault
never becomes its own baseline.  If the suspects together hold at least ``explain_frac`` of the
node's window anomalies beyond ``floor_rate`` of its events (ordinary false alarms need no
explaining), the walk recurses into each suspect (to ``max_depth``); otherwise the node itself is
the root cause (its anomalies are spread over its children, so the common part - this relay or
the link into it - explains them).  A leaf that is a suspect is its own root cause.  Everything
is a function of the events and their order, so the same archive always gives the same incidents.

**Failed probes** (:meth:`Correlator.probe_root_causes`). A probe that came back damaged (its image
or attachment changed on a hop) or never came back within its time-out (``lost``) is direct
evidence, not a score: each tree node also counts the probes through it and how many failed, and the
same walk runs a second time on failed probes among probes, with its own floor
(``probe_floor_rate``) and fewest failures (``min_probe_failures``), against the siblings and the
floor only (no history: a score needs calibrating against its own past, a failed probe does not; a
relay that lost probes in the history, the fault's own first minute say, is losing them still). Two
routes through one mx, one of them failing, name the failing route's relay; a failure common to all
routes names the mx. A lost probe carries its route's last path (``assumed`` hops), so its loss is
charged to that path's relays. The root causes of both walks open incidents alike (their evidence
counts the window's probes, lost and damaged ones).

**Incidents.**  A root cause found in an evaluation opens an incident (or updates the open one
of that tree node) once it has been found in every evaluation for ``open_after_s``; severity is
from the window's anomaly rate and count; the incident resolves after ``resolve_after``
evaluations without it (hysteresis; a severity drop also needs two evaluations).  Evidence:
counts, rates, baselines, latency quantiles now and in history, hop
delay, example event ids, affected observing nodes and probe routes, and the interval misses: the
routes (:mod:`.intervals`) whose deliveries through the tree node fell above (or below) their
prediction interval in the window, e.g. "9 of 12 deliveries on route X above their 90 % interval"
(only when the collector passes each delivery's interval outcome to :meth:`Correlator.observe`).

Limits: in a linear chain (a relay with one child and no siblings) traffic alone cannot tell a
relay from the one behind it; the walk then descends only if the child's own hop delay or rate
stands out against its history, else it stops.  Events without hops or relay hang directly below
the root under the observing node's name.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailpulse import payload as P
from mailpulse.config.collector import CorrelateSettings
from mailpulse.errors import UserError

from .archive import closed_segments, read_valid_events
from .clock import Watermark
from .relays import RelayNames

if TYPE_CHECKING:
    from .intervals import IntervalBook

__all__ = [
    "Bucket", "Change", "CorrelateSettings", "Correlator", "Incident", "Observation", "RunParts", "correlate_archive",
    "correlate_folder", "event_latency_s", "event_path", "event_time", "format_incident", "next_step", "observation",
    "run_parts",
]

ROOT = "*"
#: A probe's own verdicts (a ``late`` arrival only corrects an earlier ``lost``: not a probe of its own)
PROBE_VERDICTS = frozenset(("ok", "damaged", "lost"))
#: The verdicts the probe failure test counts
PROBE_FAILURES = frozenset(("damaged", "lost"))
#: Events archived without the collector's time (``t``, older archives): times more than this
#: ahead of the receive time are replaced by the latter (the live default of ``[clock] max_future_s``).
FUTURE_TOLERANCE_S = 10.0
_ADDR = re.compile(r"\[[^\]]*\]")
_PORT25 = re.compile(r":25$")


def _host(name: Any) -> str | None:
    return _host_str(name) if isinstance(name, str) else None


@functools.lru_cache(maxsize=65536)
def _host_str(name: str) -> str | None:
    first = name.strip().split("(", 1)[0].split()
    if not first:
        return None
    h = _PORT25.sub("", _ADDR.sub("", first[0])).lower().rstrip(".")
    if not h or h == "none":
        return None
    return h


def _named(raw: Any, names: RelayNames | None) -> str | None:
    """A relay's tree-node name: its configured name (``[relays] names``) when it has one, else
    the host name it was given (:func:`_host`)."""
    if names is not None and isinstance(raw, str) and (known := names.configured(raw.split("(", 1)[0].strip())):
        return _host(known)
    return _host(raw)


def event_path(ev: dict[str, Any], names: RelayNames | None = None) -> tuple[str, ...]:
    """The relays an event's mail went through, receiving side first (see the module docstring).

    ``names`` (the ``[relays] names`` map) renames relays known only by address, such as
    Postfix's ``relay=127.0.0.1[127.0.0.1]:47627``, so that a delivery and a probe through the
    same relay meet at one tree node and a root cause reads as the relay's name."""
    f = ev.get("fields") or {}
    out: list[str] = []
    hops = f.get("hops")
    if isinstance(hops, list) and hops:
        for h in reversed(hops):
            if isinstance(h, dict) and (b := _named(h.get("by"), names)):
                out.append(b)
        first = hops[0]
        if isinstance(first, dict) and (fr := _named(first.get("from"), names)):
            out.append(fr)
    elif ev.get("kind") == "delivery":
        if (r := _named(f.get("relay"), names)):
            out.append(r)
        if (h := _named(f.get("host"), names)):
            out.append(h)
    if not out:
        out.append(str(ev.get("node") or "unknown"))
    path: list[str] = []
    for n in out:
        if not path or path[-1] != n:
            path.append(n)
    return tuple(path)


def hop_delays(ev: dict[str, Any]) -> dict[str, float]:
    """Relay -> delay (seconds) the mail spent from that relay's stamp to the next one's."""
    hops = (ev.get("fields") or {}).get("hops")
    out: dict[str, float] = {}
    if isinstance(hops, list):
        for h in hops:
            if isinstance(h, dict) and isinstance(h.get("delay_s"), int | float) and (b := _host(h.get("by"))):
                out[b] = float(h["delay_s"])
    return out


def event_time(ev: dict[str, Any]) -> float:
    """The time the correlation uses: the collector's judged ``t`` (see
    :mod:`mailpulse.collector.clock`), else ``ts`` bounded by ``received`` + :data:`FUTURE_TOLERANCE_S`,
    else ``received``, else 0."""
    t = ev.get("t")
    if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t):
        return float(t)
    r = ev.get("received")
    rec = float(r) if isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) else None
    ts = ev.get("ts")
    if isinstance(ts, str):
        try:
            e = P.parse_time(ts)
        except ValueError:
            pass
        else:
            return rec if rec is not None and e > rec + FUTURE_TOLERANCE_S else e
    return rec if rec is not None else 0.0


def event_latency_s(ev: dict[str, Any], hops: dict[str, float] | None = None) -> float | None:
    """End-to-end latency of an event in seconds (delivery delay, probe latency, sum of hop delays)."""
    f = ev.get("fields") or {}
    kind = ev.get("kind")
    if kind == "delivery" and isinstance(f.get("delay"), int | float):
        return float(f["delay"])
    if kind == "probe" and isinstance(f.get("latency_ms"), int | float):
        return float(f["latency_ms"]) / 1000.0
    d = hop_delays(ev) if hops is None else hops
    return sum(d.values()) if d else None


@functools.lru_cache(maxsize=65536)
def tail_z(a: int, n: int, p0: float, phi: float = 1.0) -> float:
    """How surprising ``a`` anomalies in ``n`` events are at baseline rate ``p0``, as a z-score: the
    standard normal quantile of the *exact* binomial upper tail ``P(X >= a)``.

    With a dispersion ``phi > 1`` (:func:`dispersion`: verdicts that come in clusters), the tail is
    the quasi-binomial one: ``a / phi`` hits in ``n / phi`` trials, through the regularised incomplete
    beta function ``P(X >= a) = I_p0(a, n - a + 1)``, which takes non-integer counts.

    The normal approximation ``(a - n p0) / sqrt(n p0 (1 - p0))`` is far too sure of itself when
    ``n p0`` is small (a few expected anomalies: the binomial is skewed): 7 anomalies in 100 events
    at ``p0 = 0.02`` score 3.6 there but have a tail probability of 0.0041 (z 2.6).  A node model
    flags its false-alarm target rate of ordinary events, unevenly over routes, so the approximation
    turned a route's ordinary share of false alarms into incidents.  At or below the expectation
    the approximation is kept (never a suspect either way); the result is capped at 40."""
    if n <= 0:
        return 0.0
    if a <= n * p0:
        return (a - n * p0) / math.sqrt(n * p0 * (1.0 - p0) * phi)
    from scipy.special import betainc  # scipy: the binomial tail for the quasi-binomial counts (a dependency already)
    from scipy.stats import binom, norm  # scipy: exact binomial tail and normal quantile (a dependency already)

    tail = float(binom.sf(a - 1, n, p0)) if phi <= 1.0 else float(betainc(a / phi, (n - a) / phi + 1.0, p0))
    return 40.0 if tail <= 0.0 else min(40.0, float(norm.isf(tail)))


#: A dispersion needs at least this many history buckets with events, and this many anomalies in them
DISPERSION_MIN_BUCKETS = 10
DISPERSION_MIN_ANOMALIES = 5


def dispersion(counts: Iterable[tuple[int, int]], most: float) -> float:
    """How much more a tree node's anomalies cluster in time than independent verdicts would: Pearson's
    dispersion statistic ``X^2 / (B - 1)`` over its history buckets' ``(anomalies, events)``, within
    ``1 .. most``.

    Verdicts are not independent: a burst of traffic queues its messages together, the node's model
    flags their latency together, and one bucket holds several flags where the binomial expects them
    spread out.  The walk's binomial tests then see a cluster of ordinary flags as a significant
    excess.  Counting ``phi`` verdicts as one (:func:`tail_z`) is the quasi-binomial correction.  1
    (independent) with fewer than :data:`DISPERSION_MIN_BUCKETS` buckets or
    :data:`DISPERSION_MIN_ANOMALIES` anomalies: too little history to tell clusters from chance."""
    cs = [(a, n) for a, n in counts if n > 0]
    big_a, big_n = sum(a for a, _ in cs), sum(n for _, n in cs)
    if len(cs) < DISPERSION_MIN_BUCKETS or big_a < DISPERSION_MIN_ANOMALIES or big_a >= big_n:
        return 1.0
    p = big_a / big_n
    x2 = sum((a - n * p) ** 2 / (n * p * (1.0 - p)) for a, n in cs)
    return float(min(max(x2 / (len(cs) - 1), 1.0), most))


#: Confidence of the upper bound on a tree node's history rate that is its baseline (:func:`rate_upper`)
HISTORY_CONFIDENCE = 0.95


@functools.lru_cache(maxsize=65536)
def rate_upper(a: int, n: int, confidence: float = HISTORY_CONFIDENCE) -> float:
    """The one-sided upper confidence bound (Clopper-Pearson) of a rate seen as ``a`` in ``n``: 1.0 for
    ``n = 0``.

    A tree node's history rate is itself a sample: 2 anomalies in 20 events are compatible with a
    rate of 28 %, 25 in 250 with 14 %.  Taken as exact, a short history (after :meth:`Correlator.model_changed`,
    or a quiet relay) makes its chance fluctuations look significant; its upper bound does not, and
    for a long history it is close to the rate."""
    if n <= 0:
        return 1.0
    if a >= n:
        return 1.0
    from scipy.stats import beta  # scipy: the beta quantile of the exact binomial bound (a dependency already)

    return float(beta.ppf(confidence, a + 1, n - a))


@dataclass(frozen=True, slots=True)
class Observation:
    """What one event adds to the tree (:func:`observation`; :meth:`Correlator.observe` applies it)."""

    t: float                     # :func:`event_time`
    bucket: int                  # time bucket index of ``t``
    path: tuple[str, ...]        # :func:`event_path`
    anomalous: bool
    lat: float | None            # :func:`event_latency_s`
    hops: dict[str, float]       # :func:`hop_delays`
    node: str                    # ``site/node``
    route: str | None            # a probe's route
    eid: str
    rec: float = 0.0             # receive time (``t`` when the event has none): the watermark's input
    skewed: bool = False         # archived as ``"clock": "skewed"``: not correlated
    iv_route: str | None = None  # a delivery's interval route and how it fell against its interval
    iv_side: str | None = None   # (``inside``/``above``/``below``; :class:`~.intervals.IntervalBook`)
    probe: bool = False          # a probe's own verdict (``ok``, ``damaged``, ``lost``; not a ``late`` arrival)
    failed: str | None = None    # ``lost`` or ``damaged``: the probe failure test's evidence

    def tree_nodes(self) -> list[tuple[str, ...]]:
        """The tree nodes the event passes: the root, then each prefix of its path."""
        out: list[tuple[str, ...]] = [(ROOT,)]
        for name in self.path:
            out.append((*out[-1], name))
        return out


def observation(ev: dict[str, Any], s: CorrelateSettings, names: RelayNames | None = None) -> Observation:
    """The :class:`Observation` of one event (a pure function: the Flink job computes it in parallel);
    ``names``: the ``[relays] names`` map (:func:`event_path`)."""
    t = event_time(ev)
    r = ev.get("received")
    rec = float(r) if isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) else t
    hops = hop_delays(ev)
    f = ev.get("fields") or {}
    is_probe = ev.get("kind") == "probe"
    route = f.get("route") if is_probe else None
    outcome = f.get("outcome") if is_probe else None
    if not isinstance(outcome, str):
        outcome = None      # a hostile or broken probe event: counted as no probe at all
    return Observation(t, int(t // s.bucket_s), event_path(ev, names), bool(ev.get("anomaly")),
                       event_latency_s(ev, hops), hops, f"{ev.get('site', '?')}/{ev.get('node', '?')}",
                       str(route) if route else None, str(ev.get("id", "")), rec, ev.get("clock") == "skewed",
                       probe=outcome in PROBE_VERDICTS, failed=outcome if outcome in PROBE_FAILURES else None)


def next_step(x: float, step: float) -> float:
    """The smallest ``j * step`` (``j`` an integer) above ``x``: where the next tick of
    :meth:`Correlator.maybe_evaluate` lies (the Flink job cuts its runs with the same function)."""
    j = math.floor(x / step) - 1
    while j * step <= x:
        j += 1
    return j * step


class Bucket:
    """One tree node's statistics in one time bucket.  ``nodes`` and ``routes`` are insertion-ordered
    (dicts used as sets), so that a bucket built from a run of events can be :meth:`merge`\\ d into
    another exactly as if those events had been added to it one by one."""

    __slots__ = ("anomalies", "damaged", "events", "examples", "hop", "iv", "lat", "lost", "nodes", "probes",
                 "routes")

    def __init__(self) -> None:
        self.events = 0
        self.anomalies = 0
        self.lat: list[float] = []
        self.hop: list[float] = []
        self.examples: list[str] = []
        self.nodes: dict[str, None] = {}
        self.routes: dict[str, None] = {}
        #: interval route -> [deliveries with a prediction, above, below] (at most 64 routes)
        self.iv: dict[str, list[int]] = {}
        self.probes = 0      # probes with a verdict of their own (:data:`PROBE_VERDICTS`)
        self.lost = 0
        self.damaged = 0

    def add(self, ob: Observation, hop: float | None, s: CorrelateSettings) -> None:
        """Count one event (``hop``: its hop delay at this tree node)."""
        cap = s.samples_per_bucket
        self.events += 1
        if ob.lat is not None and len(self.lat) < cap:
            self.lat.append(ob.lat)
        if hop is not None and len(self.hop) < cap:
            self.hop.append(hop)
        if ob.iv_route is not None and ob.iv_side is not None:
            _count_iv(self.iv, ob.iv_route, [1, int(ob.iv_side == "above"), int(ob.iv_side == "below")])
        if ob.probe:
            self.probes += 1
            if ob.failed == "lost":
                self.lost += 1
            elif ob.failed == "damaged":
                self.damaged += 1
        if ob.anomalous or ob.failed:      # a failed probe is an example (and names its node and route) too
            if ob.anomalous:
                self.anomalies += 1
            if len(self.examples) < s.examples:
                self.examples.append(ob.eid)
            if len(self.nodes) < 64:
                self.nodes[ob.node] = None
            if ob.route and len(self.routes) < 64:
                self.routes[ob.route] = None

    def merge(self, o: Bucket, s: CorrelateSettings) -> None:
        """Add a bucket built from events that come after this one's (same result as adding them)."""
        cap = s.samples_per_bucket
        self.events += o.events
        self.anomalies += o.anomalies
        self.probes += o.probes
        self.lost += o.lost
        self.damaged += o.damaged
        self.lat.extend(o.lat[: cap - len(self.lat)])
        self.hop.extend(o.hop[: cap - len(self.hop)])
        self.examples.extend(o.examples[: s.examples - len(self.examples)])
        for n in o.nodes:
            if len(self.nodes) >= 64:
                break
            self.nodes[n] = None
        for r in o.routes:
            if len(self.routes) >= 64:
                break
            self.routes[r] = None
        for r, c in o.iv.items():
            _count_iv(self.iv, r, c)


def _count_iv(into: dict[str, list[int]], route: str, c: list[int]) -> None:
    """Add interval counts ``[n, above, below]`` of ``route`` (a new route only while fewer than 64)."""
    have = into.get(route)
    if have is None:
        if len(into) >= 64:
            return
        have = into[route] = [0, 0, 0]
    for i in range(3):
        have[i] += c[i]



@dataclass
class RunParts:
    """A run of events, aggregated (:func:`run_parts`) for :meth:`Correlator.merge`."""

    #: ``(tree node, bucket index, Bucket)`` built with :meth:`Bucket.add` in event order, listed
    #: in the order of their first event
    buckets: list[tuple[tuple[str, ...], int, Bucket]]
    #: ``site/node`` -> (largest event time, largest receive time): the watermark's inputs
    marks: dict[str, tuple[float, float]]
    skewed: int = 0            # events of skewed clocks (counted, not correlated)


def run_parts(obs: Iterable[Observation], s: CorrelateSettings) -> RunParts:
    """Aggregate a run's observations (in event order) as :meth:`Correlator.add` of each would."""
    parts: dict[tuple[tuple[str, ...], int], Bucket] = {}
    marks: dict[str, tuple[float, float]] = {}
    skewed = 0
    for ob in obs:
        if ob.skewed:
            skewed += 1
            continue
        hi, rec = marks.get(ob.node, (-math.inf, -math.inf))
        marks[ob.node] = (max(hi, ob.t), max(rec, ob.rec))
        for key in ob.tree_nodes():
            bk = parts.get((key, ob.bucket))
            if bk is None:
                bk = parts[(key, ob.bucket)] = Bucket()
            bk.add(ob, ob.hops.get(key[-1]), s)
    return RunParts([(k, b, bk) for (k, b), bk in parts.items()], marks, skewed)

@dataclass
class _Stats:
    events: int = 0
    anomalies: int = 0
    lat: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)
    iv: dict[str, list[int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    probes: int = 0
    lost: int = 0
    damaged: int = 0

    @property
    def rate(self) -> float:
        return self.anomalies / self.events if self.events else 0.0

    @property
    def failures(self) -> int:
        return self.lost + self.damaged

    @property
    def failure_rate(self) -> float:
        return self.failures / self.probes if self.probes else 0.0

    def counts(self, test: str) -> tuple[int, int]:
        """``(hits, trials)`` of a walk's test: ``anomaly`` (anomalies, events) or ``probe`` (failed
        probes, probes)."""
        return (self.anomalies, self.events) if test == "anomaly" else (self.failures, self.probes)


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    i = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return round(s[i], 6)


@dataclass
class Incident:
    """One incident: a root cause and its evidence."""

    id: str
    root_cause: str
    path: tuple[str, ...]
    severity: str
    opened: float
    updated: float
    resolved: float | None = None
    affected_nodes: list[str] = field(default_factory=list)
    affected_routes: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    _missing: int = 0
    _lower: int = 0

    @property
    def open(self) -> bool:
        return self.resolved is None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "root_cause": self.root_cause, "path": list(self.path), "severity": self.severity,
                "state": "open" if self.open else "resolved", "opened": self.opened, "updated": self.updated,
                "resolved": self.resolved, "affected_nodes": self.affected_nodes,
                "affected_routes": self.affected_routes, "evidence": self.evidence}


@dataclass(frozen=True)
class Change:
    """What an evaluation did to an incident: ``opened``, ``severity`` (changed) or ``resolved``."""

    kind: str
    incident: dict[str, Any]
    previous_severity: str | None = None


SEVERITIES = ("minor", "major", "critical")


def severity_of(anomalies: int, rate: float) -> str:
    if rate >= 0.5 and anomalies >= 20:
        return "critical"
    if rate >= 0.2:
        return "major"
    return "minor"


class Correlator:
    """Keeps the tree's statistics and the incidents; feed events with :meth:`observe`."""

    def __init__(self, settings: CorrelateSettings | None = None, names: RelayNames | None = None,
                 interval_level: float = 0.9) -> None:
        self.s = settings or CorrelateSettings()
        #: ``[relays] names``: relays known only by address are tree nodes under their names
        self.names = names
        # tree node (path prefix) -> bucket index -> Bucket
        self.buckets: dict[tuple[str, ...], dict[int, Bucket]] = defaultdict(dict)
        self.children: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
        self.now = 0.0
        self.incidents: dict[str, Incident] = {}   # id -> incident (open and resolved)
        self.open_by_path: dict[tuple[str, ...], str] = {}
        self.observed = 0
        # pre-incident history rates of the tree nodes on the path of an open incident: while it
        # is open, its own anomalies must not become the baseline it is measured against
        self.frozen: dict[tuple[str, ...], float] = {}
        #: the number of history events each frozen rate was measured on (its confidence bound)
        self.frozen_n: dict[tuple[str, ...], int] = {}
        #: and the dispersion of the history each frozen rate was measured on (:func:`dispersion`)
        self.frozen_phi: dict[tuple[str, ...], float] = {}
        self._next_eval: float | None = None
        self._oldest = 0
        #: correlation time (:attr:`now`) advances on this, never on the largest event time
        self.watermark = Watermark(self.s.watermark_idle_s, self.s.watermark_max_lag_s)
        #: events of nodes whose clock is skewed (archived, not correlated)
        self.skipped_skewed = 0
        self._tick_at: float | None = None   # the watermark's frontier at the last tick (maybe_evaluate)
        #: root causes found but not yet open (``open_after_s``): tree node -> time first found
        self.pending: dict[tuple[str, ...], float] = {}
        #: the nominal coverage of the intervals whose misses :meth:`observe` is given (the evidence's words)
        self.interval_level = interval_level
        #: correlation time of the last :meth:`model_changed`: anomaly verdicts before it are no baseline
        self.scores_since: float | None = None

    # -- statistics ---------------------------------------------------------------------------

    def observe(self, ev: dict[str, Any], interval: tuple[str, str | None] | None = None) -> None:
        """Add one event to the statistics of every tree node on its path (:meth:`add`); ``interval``:
        the delivery's ``(route, side)`` by the collector's interval tracker (interval misses in the
        evidence)."""
        ob = observation(ev, self.s, self.names)
        if interval is not None and interval[1] is not None:
            ob = dataclasses.replace(ob, iv_route=interval[0], iv_side=interval[1])
        self.add(ob)

    def add(self, ob: Observation) -> None:
        """Add one event's :class:`Observation` (what :meth:`observe` does).

        An event of a node with a skewed clock (``"clock": "skewed"``) is not added: such a node can
        neither open nor resolve an incident.  Every other event moves its node's high mark of the
        watermark (with its receive time, or its own time when it has none).
        """
        if ob.skewed:
            self.skipped_skewed += 1
            return
        self.watermark.observe(ob.node, ob.t, ob.rec)
        b = ob.bucket
        if b < self._oldest:
            return  # older than the history: ignored
        keys = ob.tree_nodes()
        for parent, child in itertools.pairwise(keys):
            self.children[parent].add(child)
        for key in keys:
            bk = self.buckets[key].get(b)
            if bk is None:
                bk = self.buckets[key][b] = Bucket()
            bk.add(ob, ob.hops.get(key[-1]), self.s)
        self.observed += 1

    def merge(self, run: RunParts) -> None:
        """Add the statistics of a run of events at once, exactly as :meth:`add` of each would.

        ``run`` is :func:`run_parts` of the run's observations (in event order).  Valid when no
        tick of :meth:`maybe_evaluate` falls inside the run (the Flink job cuts runs so): the
        watermark's marks are maxima, so their order inside a run does not matter.
        """
        self.skipped_skewed += run.skewed
        for node, (high, heard) in run.marks.items():
            self.watermark.observe(node, high, heard)
        for key, b, part in run.buckets:
            if b < self._oldest:
                continue
            if len(key) > 1:
                self.children[key[:-1]].add(key)
            bk = self.buckets[key].get(b)
            if bk is None:
                bk = self.buckets[key][b] = Bucket()
            bk.merge(part, self.s)
            if len(key) == 1:
                self.observed += part.events

    def _range(self, key: tuple[str, ...], lo: int, hi: int) -> _Stats:
        st = _Stats()
        for b, bk in self.buckets.get(key, {}).items():
            if lo <= b < hi:
                st.events += bk.events
                st.anomalies += bk.anomalies
                st.probes += bk.probes
                st.lost += bk.lost
                st.damaged += bk.damaged
                st.lat.extend(bk.lat)
                st.hop.extend(bk.hop)
                if len(st.examples) < self.s.examples:
                    st.examples.extend(bk.examples[: self.s.examples - len(st.examples)])
                st.nodes.update(bk.nodes)
                st.routes.update(bk.routes)
                for r, c in bk.iv.items():
                    _count_iv(st.iv, r, c)
        return st

    def _bounds(self) -> tuple[int, int, int]:
        hi = int(self.now // self.s.bucket_s) + 1
        mid = hi - round(self.s.window_s / self.s.bucket_s)
        lo = mid - round(self.s.history_s / self.s.bucket_s)
        return lo, mid, hi

    def window(self, key: tuple[str, ...]) -> _Stats:
        _, mid, hi = self._bounds()
        return self._range(key, mid, hi)

    def _test_window(self, key: tuple[str, ...], test: str) -> _Stats:
        """The window a walk's test counts: :meth:`window`, or for the probe failure test the last
        ``probe_window_s`` (a lost probe is known only its node's probe timeout after its send time,
        the event time it counts at; so the window must reach back that much further to hold the
        losses of the last ``window_s``)."""
        if test == "anomaly" or self.s.probe_window_s <= self.s.window_s:
            return self.window(key)
        _, _, hi = self._bounds()
        return self._range(key, hi - round(self.s.probe_window_s / self.s.bucket_s), hi)

    def history(self, key: tuple[str, ...]) -> _Stats:
        lo, mid, _ = self._bounds()
        return self._range(key, lo, mid)

    def _score_bounds(self) -> tuple[int, int]:
        lo, mid, _ = self._bounds()
        if self.scores_since is not None:
            lo = max(lo, math.floor(self.scores_since / self.s.bucket_s) + 1)
        return lo, mid

    def score_history(self, key: tuple[str, ...]) -> _Stats:
        """The history of a tree node's anomaly verdicts: :meth:`history` without the buckets that began
        before the last :meth:`model_changed` (another model's verdicts; possibly none left)."""
        return self._range(key, *self._score_bounds())

    def _dispersion(self, key: tuple[str, ...], test: str) -> float:
        """A tree node's :func:`dispersion` over the buckets of :meth:`score_history` (frozen with its rate
        while an incident on it is open); 1 for the probe failure test (a failed probe is evidence)."""
        if test != "anomaly" or self.s.max_dispersion <= 1.0:
            return 1.0
        if key in self.frozen_phi:
            return self.frozen_phi[key]
        lo, mid = self._score_bounds()
        return dispersion(((bk.anomalies, bk.events) for b, bk in self.buckets.get(key, {}).items()
                           if lo <= b < mid), self.s.max_dispersion)

    def model_changed(self, t: float | None = None) -> None:
        """The nodes score with another model from correlation time ``t`` on (default: now).

        The walk's baselines are the tree nodes' own history rates, and a model's verdicts are
        calibrated against its own past only: the verdicts of the previous model (the untrained
        bring-up model flags nothing) say nothing of the new one's ordinary rate, which differs
        per route.  So from here on the anomaly walk's history rates count only buckets that began
        after ``t``, and it finds nothing until a whole window (``window_s``) holds the new model's
        verdicts.  The probe failure test does not depend on scores and is not affected."""
        self.scores_since = self.now if t is None else float(t)

    def _prune(self) -> None:
        lo, _, _ = self._bounds()
        self._oldest = lo
        for key in list(self.buckets):
            d = self.buckets[key]
            for b in [b for b in d if b < lo]:
                del d[b]
            if not d and key != (ROOT,) and key not in self.frozen and key not in self.open_by_path:
                # a relay no traffic went through for the whole history: forget it
                del self.buckets[key]
                self.children.get(key[:-1], set()).discard(key)
        for key in [k for k in self.children if k not in self.buckets]:
            del self.children[key]

    # -- the walk -----------------------------------------------------------------------------

    def _z(self, a: int, n: int, p0: float, key: tuple[str, ...], test: str = "anomaly") -> float:
        return tail_z(a, n, p0, self._dispersion(key, test))

    def _baseline(self, test: str) -> tuple[float, int]:
        """A test's floor rate and fewest hits of a suspect."""
        if test == "anomaly":
            return self.s.floor_rate, self.s.min_anomalies
        return self.s.probe_floor_rate, self.s.min_probe_failures

    def _hist_rate(self, key: tuple[str, ...], test: str) -> float:
        """A tree node's own history rate as a baseline: the upper confidence bound
        (:func:`rate_upper`) of its anomaly rate in :meth:`score_history` (frozen while an incident on
        it is open; 0 without history events); the probe failure test has none: a node's scores need
        calibrating against its own past, a failed probe does not (and a relay losing probes since
        before the window is losing them still)."""
        if test != "anomaly":
            return 0.0
        if key in self.frozen:
            a, n = round(self.frozen[key] * self.frozen_n.get(key, 0)), self.frozen_n.get(key, 0)
        else:
            h = self.score_history(key)
            a, n = h.anomalies, h.events
        # no history (a new relay): no baseline of its own, the siblings' and the floor remain
        return rate_upper(a, n) if n else 0.0

    def _suspects(self, key: tuple[str, ...], win: dict[tuple[str, ...], _Stats], test: str = "anomaly"
                  ) -> list[tuple[str, ...]]:
        floor, least = self._baseline(test)
        kids = sorted(self.children.get(key, ()))
        for k in kids:
            if k not in win:
                win[k] = self._test_window(k, test)
        total_a = sum(win[k].counts(test)[0] for k in kids)
        total_n = sum(win[k].counts(test)[1] for k in kids)
        out = []
        for k in kids:
            a, n = win[k].counts(test)
            if a < least:
                continue
            sib_n, sib_a = total_n - n, total_a - a
            p0 = max(sib_a / sib_n if sib_n else 0.0, self._hist_rate(k, test), floor)
            p0 = min(p0, 0.999)
            z = self._z(a, n, p0, k, test)
            if sib_n == 0 and len(kids) == 1 and key != (ROOT,):
                if test != "anomaly":
                    continue    # a linear chain: its probes' failures cannot tell a relay from the one behind it
                # linear chain: descend only if this relay's own hop delay stands out in its history
                now_hop, was_hop = _quantile(win[k].hop, 0.5), _quantile(self.history(k).hop, 0.9)
                if now_hop is None or was_hop is None or now_hop <= 2.0 * max(was_hop, 0.001):
                    continue
            if (z >= self.s.z_min and a / n >= self.s.min_ratio * p0) or self._hidden_branch(k, p0, win, test):
                out.append(k)
        return out

    def _hidden_branch(self, key: tuple[str, ...], p0: float, win: dict[tuple[str, ...], _Stats],
                       test: str = "anomaly") -> bool:
        """Whether a child of ``key`` stands out against ``key``'s baseline ``p0`` (and its own history)
        while ``key``'s other traffic dilutes it below significance: the probes of one route through a
        busy mx, say.  Then the walk must descend into ``key`` all the same."""
        least = self._baseline(test)[1]
        wk_a = win[key].counts(test)[0]
        for g in sorted(self.children.get(key, ())):
            if g not in win:
                win[g] = self._test_window(g, test)
            a, n = win[g].counts(test)
            if a < least or a < self.s.explain_frac * wk_a:
                continue
            pg = min(max(p0, self._hist_rate(g, test)), 0.999)
            if self._z(a, n, pg, g, test) >= self.s.z_min and a / n >= self.s.min_ratio * pg:
                return True
        return False

    def _walk(self, key: tuple[str, ...], depth: int, win: dict[tuple[str, ...], _Stats],
              found: list[tuple[str, ...]], test: str = "anomaly") -> None:
        if key not in win:
            win[key] = self._test_window(key, test)
        sus = self._suspects(key, win, test) if depth < self.s.max_depth else []
        held = sum(win[k].counts(test)[0] for k in sus)
        # the share is of the hits beyond the floor rate's expectation: ordinary false alarms
        # spread over the other children need no explaining
        a, n = win[key].counts(test)
        excess = a - self._baseline(test)[0] * n
        if sus and held >= self.s.explain_frac * excess:
            for k in sus:
                self._walk(k, depth + 1, win, found, test)
        elif key != (ROOT,):
            found.append(key)

    def root_causes(self) -> list[tuple[str, ...]]:
        """Tree nodes that explain the current anomalies, then those that explain the current probe
        failures (:meth:`probe_root_causes`) and are not already named (empty when nothing stands out)."""
        found = self._anomaly_root_causes()
        return found + [k for k in self.probe_root_causes() if k not in found]

    def _anomaly_root_causes(self) -> list[tuple[str, ...]]:
        root = (ROOT,)
        if self.scores_since is not None and self.now - self.scores_since < self.s.window_s:
            return []   # the window still holds the previous model's verdicts (model_changed)
        win: dict[tuple[str, ...], _Stats] = {root: self.window(root)}
        if win[root].anomalies < self.s.min_anomalies:
            return []
        hist = self.score_history(root)
        if not self.children.get(root):
            return []
        found: list[tuple[str, ...]] = []
        self._walk(root, 0, win, found)
        if not found and win[root].anomalies >= self.s.min_anomalies:
            # nothing stands out below the root: whole-site trouble only if the root itself does
            p0 = min(max(self._hist_rate(root, "anomaly"), self.s.floor_rate), 0.999)
            w = win[root]
            z = self._z(w.anomalies, w.events, p0, root)
            if z >= self.s.z_min and w.rate >= self.s.min_ratio * p0 and hist.events:
                found.append(root)
        return found

    def probe_root_causes(self) -> list[tuple[str, ...]]:
        """Tree nodes that explain the window's failed probes (lost or damaged): the same walk as the
        anomalies', on failed probes among probes, its own floor (``probe_floor_rate``) and fewest
        failures (``min_probe_failures``), not on the nodes' anomaly scores.  A damaged or lost probe
        is direct evidence, however the model scores it; a failure is charged to its probe's path
        (a lost probe carries its route's last path) and the walk stops where probe routes part
        (two routes through one mx, one failing: the failing route's relay) or at a linear chain."""
        root = (ROOT,)
        win: dict[tuple[str, ...], _Stats] = {root: self._test_window(root, "probe")}
        if win[root].failures < self.s.min_probe_failures or not self.children.get(root):
            return []
        found: list[tuple[str, ...]] = []
        self._walk(root, 0, win, found, "probe")
        return found

    # -- incidents ----------------------------------------------------------------------------

    def _evidence(self, key: tuple[str, ...]) -> tuple[dict[str, Any], _Stats]:
        w, h, pw = self.window(key), self.history(key), self._test_window(key, "probe")
        hr = self.score_history(key).rate
        parent = key[:-1]
        sib_a = sib_n = 0
        for k in self.children.get(parent, ()):
            if k != key:
                s = self.window(k)
                sib_a += s.anomalies
                sib_n += s.events
        ev = {
            "window_s": self.s.window_s, "events": w.events, "anomalies": w.anomalies,
            "anomaly_rate": round(w.rate, 4), "history_rate": round(self.frozen.get(key, hr), 4),
            "history_dispersion": round(self._dispersion(key, "anomaly"), 2),
            "sibling_rate": round(sib_a / sib_n, 4) if sib_n else None,
            "latency_p50_s": _quantile(w.lat, 0.5), "latency_p90_s": _quantile(w.lat, 0.9),
            "latency_p99_s": _quantile(w.lat, 0.99), "history_latency_p90_s": _quantile(h.lat, 0.9),
            "hop_delay_p50_s": _quantile(w.hop, 0.5), "history_hop_delay_p90_s": _quantile(h.hop, 0.9),
            "example_event_ids": w.examples[: self.s.examples],
            "interval_misses": self._interval_misses(w),
            # the probe failure test's own window (probe_window_s), so the counts are the ones it judged
            "probes": pw.probes, "probes_lost": pw.lost, "probes_damaged": pw.damaged,
        }
        return ev, w

    def _interval_misses(self, w: _Stats, most: int = 5) -> list[dict[str, Any]]:
        """The routes through this tree node whose deliveries in the window fell outside their interval,
        most above first: ``{route, deliveries, above, below, text}`` (at most ``most``)."""
        pct = f"{round(100 * self.interval_level):g} %"
        out = []
        missed = sorted((kv for kv in w.iv.items() if kv[1][1] or kv[1][2]),
                        key=lambda kv: (-kv[1][1], -kv[1][2], kv[0]))
        for route, (n, above, below) in missed[:most]:
            text = (f"{above} of {n} deliveries on route {route} above their {pct} interval"
                    + (f", {below} below" if below else "")) if above else \
                f"{below} of {n} deliveries on route {route} below their {pct} interval"
            out.append({"route": route, "deliveries": n, "above": above, "below": below, "text": text})
        return out

    def evaluate(self) -> list[Change]:
        """Run the walk at the watermark; open, update and resolve incidents."""
        self.now = self.watermark.advance()
        self._prune()
        changes: list[Change] = []
        found = self.root_causes()
        seen: set[tuple[str, ...]] = set()
        self.pending = {k: t for k, t in self.pending.items() if k in found}
        for key in found:
            seen.add(key)
            iid = self.open_by_path.get(key)
            if iid is None and self.s.open_after_s > 0:
                # found in every evaluation for open_after_s before it opens: a blip is no incident
                first = self.pending.setdefault(key, self.now)
                if self.now - first < self.s.open_after_s:
                    continue
            self.pending.pop(key, None)
            evidence, w = self._evidence(key)
            sev = max(severity_of(w.anomalies, w.rate), severity_of(w.failures, w.failure_rate) if w.failures
                      else "minor", key=SEVERITIES.index)
            name = " > ".join(key[1:]) if len(key) > 1 else "whole site"
            if iid is None:
                for i in range(1, len(key) + 1):
                    if key[:i] not in self.frozen:
                        h = self.score_history(key[:i])
                        self.frozen_phi[key[:i]] = self._dispersion(key[:i], "anomaly")
                        self.frozen[key[:i]], self.frozen_n[key[:i]] = h.rate, h.events
                evidence, w = self._evidence(key)
                iid = hashlib.blake2b(f"{name}|{self.now:.3f}".encode(), digest_size=6).hexdigest()
                inc = Incident(iid, name, key, sev, self.now, self.now, None, sorted(w.nodes), sorted(w.routes),
                               evidence)
                self.incidents[iid] = inc
                self.open_by_path[key] = iid
                changes.append(Change("opened", inc.to_json()))
                continue
            inc = self.incidents[iid]
            inc._missing = 0
            inc.updated = self.now
            for k in ("history_latency_p90_s", "history_hop_delay_p90_s"):
                evidence[k] = inc.evidence.get(k)   # the pre-incident baseline, not the incident itself
            inc.evidence = evidence
            inc.affected_nodes = sorted(set(inc.affected_nodes) | w.nodes)
            inc.affected_routes = sorted(set(inc.affected_routes) | w.routes)
            old = inc.severity
            if SEVERITIES.index(sev) > SEVERITIES.index(old):
                inc.severity, inc._lower = sev, 0
            elif SEVERITIES.index(sev) < SEVERITIES.index(old):
                inc._lower += 1
                if inc._lower >= 2:
                    inc.severity, inc._lower = sev, 0
            else:
                inc._lower = 0
            if inc.severity != old:
                changes.append(Change("severity", inc.to_json(), old))
        for key, iid in list(self.open_by_path.items()):
            if key in seen:
                continue
            inc = self.incidents[iid]
            inc._missing += 1
            if inc._missing >= self.s.resolve_after:
                inc.resolved = self.now
                del self.open_by_path[key]
                still = {k[:i] for k in self.open_by_path for i in range(1, len(k) + 1)}
                self.frozen = {k: v for k, v in self.frozen.items() if k in still}
                self.frozen_n = {k: v for k, v in self.frozen_n.items() if k in still}
                self.frozen_phi = {k: v for k, v in self.frozen_phi.items() if k in still}
                changes.append(Change("resolved", inc.to_json()))
        return changes

    def maybe_evaluate(self) -> list[Change]:
        """Evaluate when the watermark passed the next multiple of ``eval_interval_s``.

        The watermark is looked at only on a *tick*: when the newest receive time (its frontier)
        passed a multiple of ``eval_interval_s`` (:func:`next_step`) since the last tick, and on
        the first call after the first event.  So the correlation depends only on the events and
        their order, not on how often this is called (the Flink job calls it once per run).
        """
        step = self.s.eval_interval_s
        wm = self.watermark
        if not wm.high:
            return []
        if self._tick_at is not None and wm.frontier < next_step(self._tick_at, step):
            return []
        self._tick_at = wm.frontier
        self.now = wm.advance()
        if self._next_eval is None:
            self._next_eval = (math.floor(self.now / step) + 1) * step
            return []
        if self.now < self._next_eval:
            return []
        self._next_eval = (math.floor(self.now / step) + 1) * step
        return self.evaluate()

    def open_incidents(self) -> list[dict[str, Any]]:
        return [self.incidents[i].to_json() for i in sorted(self.open_by_path.values())]

    def all_incidents(self) -> list[dict[str, Any]]:
        return [inc.to_json() for inc in sorted(self.incidents.values(), key=lambda i: (i.opened, i.id))]

    # -- views for the dashboard ----------------------------------------------------------------

    def heatmap(self, buckets: int = 30, max_rows: int = 20) -> dict[str, Any]:
        """Per-relay median hop delay (else latency) per bucket over the last ``buckets`` buckets."""
        hi = int(self.now // self.s.bucket_s) + 1
        cols = list(range(hi - buckets, hi))
        rows = []
        for key in sorted(self.buckets, key=lambda k: (len(k), k)):
            if key == (ROOT,):
                continue
            d = self.buckets[key]
            vals = []
            for b in cols:
                bk = d.get(b)
                vals.append(None if bk is None else _quantile(bk.hop or bk.lat, 0.5))
            if any(v is not None for v in vals):
                rows.append({"hop": " > ".join(key[1:]), "values": vals})
            if len(rows) >= max_rows:
                break
        return {"bucket_s": self.s.bucket_s, "t0": cols[0] * self.s.bucket_s, "rows": rows}

    def tree(self) -> dict[str, Any]:
        """The tree with window counts (for display and tests)."""
        def node(key: tuple[str, ...]) -> dict[str, Any]:
            w = self.window(key)
            return {"name": key[-1], "events": w.events, "anomalies": w.anomalies,
                    "children": [node(k) for k in sorted(self.children.get(key, ()))]}
        return node((ROOT,))


def correlate_archive(events: Iterable[dict[str, Any]], settings: CorrelateSettings | None = None,
                      names: RelayNames | None = None, intervals: IntervalBook | None = None
                      ) -> tuple[Correlator, list[Change]]:
    """Replay events (in archive order) through a correlator, evaluating on event-time ticks;
    ``names``: ``[relays] names``; ``intervals``: the deliveries go through these route intervals
    first, as in the collector (the archive's order is its ingest order), for ``interval_misses``.

    A final evaluation runs at the last event's time, so incidents still open are reported open.
    """
    c = Correlator(settings, names, intervals.level if intervals is not None else 0.9)
    changes: list[Change] = []
    for ev in events:
        got = intervals.observe(ev, event_time(ev)) if intervals is not None else None
        c.observe(ev, None if got is None else (got[0], got[1]))
        changes.extend(c.maybe_evaluate())
    if c.observed:
        changes.extend(c.evaluate())
    return c, changes


def format_incident(inc: dict[str, Any]) -> str:
    e = inc["evidence"]
    t = datetime.fromtimestamp(inc["opened"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"[{inc['state']}] {inc['severity']} incident {inc['id']} opened {t}Z: root cause {inc['root_cause']}",
             f"    {e['anomalies']}/{e['events']} anomalous in {e['window_s']:.0f} s (rate {e['anomaly_rate']}, "
             f"siblings {e['sibling_rate']}, history {e['history_rate']}); latency p50/p90/p99 "
             f"{e['latency_p50_s']}/{e['latency_p90_s']}/{e['latency_p99_s']} s (history p90 "
             f"{e['history_latency_p90_s']} s)",
             f"    nodes: {', '.join(inc['affected_nodes']) or '-'}; "
             f"routes: {', '.join(inc['affected_routes']) or '-'}",
             f"    examples: {', '.join(e['example_event_ids'])}"]
    if e.get("probes_lost") or e.get("probes_damaged"):
        lines.insert(2, f"    probes: {e.get('probes_lost', 0)} lost, {e.get('probes_damaged', 0)} damaged of "
                        f"{e.get('probes', 0)} in the window")
    return "\n".join(lines)


def correlate_folder(folder: Path | str, window_s: float | None = None,
                     skipped: collections.Counter[str] | None = None, intervals: IntervalBook | None = None
                     ) -> Correlator:
    """Replay the closed segments of an archive folder through a :class:`Correlator` (what
    ``mailpulse correlate --archive DIR`` prints).  Bad folders and settings are ``UserError``;
    entries that fail the payload declaration are skipped and counted in ``skipped``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"archive folder {folder} does not exist")
    if not closed_segments(folder):
        raise UserError(f"archive folder {folder} holds no closed segments (*.jsonl.gz)")
    kw: dict[str, Any] = {}
    if window_s is not None:
        kw["window_s"] = window_s
    try:
        settings = CorrelateSettings(**kw)
    except ValidationError as e:
        reason = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UserError(f"--window {window_s} cannot be used: {reason}") from None
    skipped = collections.Counter() if skipped is None else skipped
    try:
        c, _ = correlate_archive(read_valid_events(folder, skipped), settings,
                                 intervals.names if intervals is not None else None, intervals)
    except OSError as e:
        raise UserError(f"archive folder {folder} cannot be read ({e})") from None
    return c
