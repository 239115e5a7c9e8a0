"""The fault-scenario bench: labelled mail faults on the real lab parts, found and named or not.

Set-up (everything on loopback under a temporary directory, root needed for Postfix and Dovecot):

```
shaped traffic ──► Postfix edge ─┬──────────────────────────► Postfix mx ──► Maildir ◄── Dovecot
 (smtplib)     edge.mailpulse.test├─► relay-a.mailpulse.test ─┘  mx.mailpulse.test
                                  └─► relay-b.mailpulse.test ─┘  (STARTTLS required by the edge)
edge log ──► node-a ─┐                  probes: route "a" (a.test via relay-a), "b" (b.test via relay-b)
mx log   ──► node-b ─┴► Mosquitto (TLS, ACL) ──► collector (archive, correlation, incidents)
```

The relays are :class:`~mailpulse.lab.relays.MangleRelay` s; Postfix knows them only by address,
so the collector's ``[relays] names`` map names them (and the mx) by their ``Received:`` names.
Traffic has a daily shape compressed into ``day_s`` seconds (``0.3 .. 1.7`` x the base rate) and
bursts (a dozen messages at once, about every 20 s).  A model is trained on the warm-up events
(as the demo does) and pushed over the retained model topic; the bench goes on once the collector has
heard of it from the nodes' status (it restarts the correlation's score baselines there,
``Correlator.model_changed``).

Then the **normal-only run** (``days`` compressed days, no fault; without it, a wait until the correlation's
window and history hold only the new model's verdicts), then each **scenario**: a fault
with a known start, end and culprit, then a recovery gap.  Per scenario: ``found`` (an incident
opened between the fault's start and its end + 10 s whose root-cause path ends at the culprit),
``root`` (the last host of the first incident opened in that span), ``detect_s`` (opened - fault
start), ``resolve_s`` (resolved - fault end).  Normal-only: incidents opened (false incidents),
and the share of deliveries whose Q8.8 ``log2`` latency fell inside its route's prediction
interval (:mod:`mailpulse.collector.intervals`: the reference model's integer tracker, nominal 0.9).

Scenarios: ``slow_relay`` (relay-a holds each message), ``lossy_relay`` (relay-b drops half of the
messages after accepting them), ``recompress`` (relay-b re-encodes images at JPEG quality 30),
``deferral_storm`` (relay-a answers ``451`` to every message), ``tls_failure`` (relay-b restarts
without STARTTLS, which the edge requires for it), ``queue_buildup`` (relay-a takes one message at a
time, each held 2 s: the queue in front of it grows).

``python bench/bench_faults.py [--quick] [--scenario NAME ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mailpulse import topics as T
from mailpulse.collector.archive import read_events
from mailpulse.collector.correlate import CorrelateSettings, Correlator
from mailpulse.collector.intervals import RouteIntervals, coverage
from mailpulse.collector.relays import RelayNames
from mailpulse.collector.trainer import train
from mailpulse.config.node import load_config
from mailpulse.datasets import Dataset
from mailpulse.errors import UserError
from mailpulse.features import SCHEMA_VERSION
from mailpulse.hdl.params import get_params
from mailpulse.lab.demo import (
    SITE,
    CollectorPart,
    Console,
    LiveView,
    _node_toml,
    oversample_probes,
    send_ordinary,
)
from mailpulse.lab.relays import MangleRelay
from mailpulse.lab.servers import CertificateAuthority, Dovecot, Mailbox, MailChain, Mosquitto, missing_tools
from mailpulse.pi_firmware.node import build_node

__all__ = ["Plan", "Result", "Scenario", "replay", "run_bench"]

#: target false-alarm rate of the nodes' model, on its training set (probes oversampled, see below)
FALSE_ALARM_RATE = 0.02
#: baseline floor of the correlation: the model flags about 3 % of ordinary deliveries (above)
FLOOR_RATE = 0.04
#: a probe not read back within this is lost (ordinary probes take about 0.7 s; a lost probe is known this long
#: after it was sent, so with a probe every 2 s a relay losing half of them has 3 lost probes known ~20 s in)
PROBE_TIMEOUT_S = 5.0
#: baseline floor of the probe failure test: an ordinary probe is neither lost nor damaged, so 3 failed of
#: the 10-20 probes through a relay in the 20 s window stand out (z >= 3) even at the mx, where both routes meet
PROBE_FLOOR_RATE = 0.01


@dataclass(frozen=True)
class Plan:
    """How long: ``quick`` (under 10 minutes) or the full run."""

    warmup_events: int = 300
    days: int = 1
    day_s: float = 80.0
    fault_s: float = 30.0
    recovery_s: float = 25.0
    base_rate: float = 3.0           # messages per second at the day's mean
    history_s: float = 60.0
    probe_interval_s: float = 2.0

    @classmethod
    def full(cls) -> Plan:
        return cls(warmup_events=500, days=2, day_s=300.0, fault_s=60.0, recovery_s=45.0, history_s=120.0)


@dataclass
class Scenario:
    name: str
    culprit: str                     # host name of the relay at fault
    start: Callable[[Lab], None]
    stop: Callable[[Lab], None]


@dataclass
class Result:
    name: str
    culprit: str
    found: bool = False
    root: str = "-"
    detect_s: float | None = None
    resolve_s: float | None = None
    other: list[str] = field(default_factory=list)

    def line(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"
        return (f"scenario {self.name} found {'yes' if self.found else 'no'} root {self.root} "
                f"detect_s {f(self.detect_s)} resolve_s {f(self.resolve_s)}")


# -- traffic ----------------------------------------------------------------------------------


class ShapedTraffic:
    """Ordinary mail with a daily shape compressed into ``day_s`` and bursts, in a thread."""

    def __init__(self, smtp: tuple[str, int], rcpts: list[str], base_rate: float, day_s: float,
                 stop: threading.Event, seed: int = 11) -> None:
        self.smtp, self.rcpts, self.base, self.day_s, self.stop_event = smtp, rcpts, base_rate, day_s, stop
        self.rng = np.random.default_rng(seed)
        self.sent = self.errors = 0
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="bench-traffic", daemon=True)

    def rate(self, t: float) -> float:
        """Messages per second at ``t`` seconds into the run: 0.3 .. 1.7 x base over a day."""
        return self.base * (0.3 + 1.4 * math.sin(math.pi * (t / self.day_s + 0.25)) ** 2)

    def start(self) -> None:
        self.thread.start()

    def _one(self) -> None:
        if send_ordinary(self.smtp, self.rcpts[self.sent % len(self.rcpts)], f"bench message {self.sent + 1}",
                         "Hello,\n\nordinary traffic of the fault bench.\n", self.rng, (5, 60), 0.4, (5_000, 80_000)):
            self.sent += 1
        else:
            self.errors += 1

    def _run(self) -> None:
        next_burst = time.monotonic() + float(self.rng.exponential(20.0))
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_burst:
                for _ in range(int(self.rng.integers(8, 16))):
                    self._one()
                next_burst = now + float(self.rng.exponential(20.0))
            self._one()
            self.stop_event.wait(float(self.rng.exponential(1.0 / self.rate(now - self.t0))))


# -- the lab ----------------------------------------------------------------------------------


class Lab:
    """The running parts (see the module docstring)."""

    def __init__(self, work: Path, plan: Plan, stack: contextlib.ExitStack) -> None:
        self.work, self.plan = work, plan
        self.stop = threading.Event()
        stack.callback(self.stop.set)
        con = Console(open(os.devnull, "w"), colour=False)   # noqa: SIM115 - lives as long as the lab
        stack.callback(con.out.close)
        nodes = ["node-a", "node-b"]
        self.broker = Mosquitto.lab(work / "deployment", nodes=[(SITE, n) for n in nodes], consumers=["viewer"])
        stack.callback(self.broker.stop)
        self.broker.start()
        ca = CertificateAuthority.create(_mkdir(work / "tls"))
        self.tls = (str(ca.server_cert), str(ca.server_key))
        self.relay_a = MangleRelay(quality=None, hostname="relay-a.mailpulse.test")
        self.relay_b = MangleRelay(quality=None, hostname="relay-b.mailpulse.test", tls=self.tls)
        boxes = {k: Mailbox(f"{k}@{k}.test", k, f"{k}-secret") for k in ("probe", "a", "b", "ops")}
        maildirs = ", ".join(f"{m.address}={m.user}/Maildir/" for m in boxes.values())
        ra, rb = self.relay_a, self.relay_b
        chain = MailChain(work / "chain", extra_relay=(ra.host, ra.port), edge_main={
            "relay_domains": "probe.test a.test b.test",
            "smtp_tls_policy_maps": f"inline:{{ [{rb.host}]:{rb.port}=encrypt }}",
        }, mx_main={"virtual_mailbox_domains": "probe.test a.test b.test",
                    "virtual_mailbox_maps": "inline:{ " + maildirs + " }"})
        mx = chain.mx
        chain.edge.settings["transport_maps"] = (f"inline:{{ probe.test=smtp:[127.0.0.1]:{mx.port}, "
                                                 f"a.test=smtp:[{ra.host}]:{ra.port}, "
                                                 f"b.test=smtp:[{rb.host}]:{rb.port} }}")
        (chain.edge.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in chain.edge.settings.items()))
        chain.mailboxes = boxes
        chain.imap = Dovecot(work / "chain" / "dovecot", {m.user: m.password for m in boxes.values()},
                             chain.mail_root)
        self.chain = chain
        for r in (ra, rb):
            r.next_hop = (mx.host, mx.port)
            stack.callback(r.stop)
            r.start()
        stack.callback(chain.stop)
        chain.start()
        self.names = {f"127.0.0.1:{ra.port}": ra.hostname, f"127.0.0.1:{rb.port}": rb.hostname,
                      f"127.0.0.1:{mx.port}": mx.hostname}
        self.view = LiveView(con, self.broker.host, self.broker.port, self.broker.client("viewer"))
        self.view.muted = True
        stack.callback(self.view.stop)
        if not self.view.connected.wait(10):
            raise RuntimeError("the bench's MQTT subscriber could not connect to Mosquitto")
        self.correlate: dict[str, Any] = {
            "bucket_s": 2.0, "window_s": 20.0, "history_s": plan.history_s, "eval_interval_s": 1.0, "min_anomalies": 3,
            "resolve_after": 5, "floor_rate": FLOOR_RATE, "open_after_s": 2.0, "probe_floor_rate": PROBE_FLOOR_RATE,
            # a lost probe is known PROBE_TIMEOUT_S after its send time, the time it counts at
            "probe_window_s": 20.0 + PROBE_TIMEOUT_S}
        self.coll = CollectorPart(con, work, self.broker.deployment, chain.smtp, boxes["ops"].address, self.stop,
                                  self.names, correlate=self.correlate, alerts=False)
        stack.callback(self.coll.join)
        self.nodes: list[Any] = []
        for i, n in enumerate(nodes):
            # both nodes know both probe routes; the fleet gives each route to one of them
            probes = []
            for box in (boxes["a"], boxes["b"]):
                os.environ[f"MAILPULSE_BENCH_IMAP_{box.user.upper()}"] = box.password
                probes.append({"name": box.user, "smtp_host": "127.0.0.1", "smtp_port": chain.edge.port,
                               "mail_from": f"probe@{n}.mailpulse.test", "rcpt_to": box.address,
                               "imap_host": "127.0.0.1", "imap_port": chain.imap.port, "imap_username": box.user,
                               "imap_password_env": f"MAILPULSE_BENCH_IMAP_{box.user.upper()}",
                               "timeout_s": PROBE_TIMEOUT_S,
                               "poll_interval_s": 0.05, "maillogs": [str(chain.edge.maillog), str(mx.maillog)]})
            log = chain.edge.maillog if i == 0 else mx.maillog
            cfg_path = work / n / "node.toml"
            cfg_path.parent.mkdir(parents=True, exist_ok=True)
            _node_toml(cfg_path, self.broker.node(SITE, n), self.broker.url, work / n / "state", log, probes,
                       plan.probe_interval_s)
            node = build_node(load_config(cfg_path))
            stack.callback(node.stop)
            node.start()
            self.nodes.append(node)
        self.traffic = ShapedTraffic(chain.smtp, ["probe@probe.test", "a@a.test", "b@b.test"], plan.base_rate,
                                     plan.day_s, self.stop)

    # -- phases ---------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Traffic until ``warmup_events`` are in, then train the nodes' model and push it."""
        self.traffic.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.view.counts["events"] >= self.plan.warmup_events and self.view.kinds.count("probe") >= 4:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"only {self.view.counts['events']} events arrived in the warm-up")
        with self.view.lock:
            x = np.array(self.view.xs, dtype=np.float64)
            probe = np.array([k == "probe" for k in self.view.kinds[: len(x)]], dtype=bool)
        # probes are the warm-up's rarest events: repeated to demo.PROBE_SHARE of the training set
        res = train(Dataset(oversample_probes(x, probe), None, "bench warm-up", "-"), get_params("full"), seed=0,
                    false_alarm_rate=FALSE_ALARM_RATE, feature_schema=str(SCHEMA_VERSION))
        before = {n.node_id: n.model.version for n in self.nodes}
        t_pub = time.time()
        self.view.publish_model(T.model_topic(SITE), res.model.to_bytes())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(n.model.version != before[n.node_id] for n in self.nodes):
            time.sleep(0.1)
        # the collector hears of it from the nodes' status and restarts its score baselines there
        while time.monotonic() < deadline and (self.scores_since() or 0.0) < t_pub:
            time.sleep(0.1)
        if (self.scores_since() or 0.0) < t_pub:
            raise RuntimeError("the collector did not hear of the nodes' new model from their status")

    def scores_since(self) -> float | None:
        """When the collector's correlation last heard of a model change (``Correlator.model_changed``)."""
        with self.coll.collector.corr_lock:
            return self.coll.collector.correlator.scores_since

    def calibrate(self) -> None:
        """Wait until the correlation's window and history hold only the new model's verdicts."""
        c = self.coll.collector.correlator
        need = c.s.window_s + c.s.history_s
        while True:
            with self.coll.collector.corr_lock:
                left = need - (c.now - (c.scores_since or 0.0))
            if left <= 0 or self.stop.is_set():
                return
            time.sleep(min(left, 1.0))

    def changes(self) -> list[dict[str, Any]]:
        return self.coll.incidents()

    def open_incidents(self) -> int:
        with self.coll.collector.corr_lock:
            return len(self.coll.collector.correlator.open_by_path)

    def archive_events(self) -> list[dict[str, Any]]:
        """The archive's events: the closed segments, then the open one (its complete lines)."""
        return archive_events(self.work / "archive")


def archive_events(folder: Path) -> list[dict[str, Any]]:
    """A lab archive's events: the closed segments, then the open one (its complete lines)."""
    out = list(read_events(folder))
    for p in sorted(folder.glob("seg-*.jsonl.tmp")):
        for line in p.read_bytes().split(b"\n")[:-1]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    p.chmod(0o755)
    return p


# -- the scenarios ----------------------------------------------------------------------------


def _tls_off(lab: Lab) -> None:
    r = lab.relay_b
    r.stop()
    r.tls = None
    r.start()


def _tls_on(lab: Lab) -> None:
    r = lab.relay_b
    r.stop()
    r.tls = lab.tls
    r.start()


def _set(relay: str, **kw: Any) -> Callable[[Lab], None]:
    def f(lab: Lab) -> None:
        r = getattr(lab, relay)
        for k, v in kw.items():
            setattr(r, k, v)
    return f


SCENARIOS: list[Scenario] = [
    Scenario("slow_relay", "relay-a.mailpulse.test", _set("relay_a", delay_s=6.0), _set("relay_a", delay_s=0.0)),
    Scenario("lossy_relay", "relay-b.mailpulse.test", _set("relay_b", drop_rate=0.5), _set("relay_b", drop_rate=0.0)),
    Scenario("recompress", "relay-b.mailpulse.test", _set("relay_b", quality=30), _set("relay_b", quality=None)),
    Scenario("deferral_storm", "relay-a.mailpulse.test", _set("relay_a", refuse="451 4.3.0 try again later"),
             _set("relay_a", refuse="")),
    Scenario("tls_failure", "relay-b.mailpulse.test", _tls_off, _tls_on),
    Scenario("queue_buildup", "relay-a.mailpulse.test", _set("relay_a", serial=True, delay_s=2.0),
             _set("relay_a", serial=False, delay_s=0.0)),
]


def _last_host(inc: dict[str, Any]) -> str:
    path = inc.get("path") or []
    return str(path[-1]) if path else str(inc.get("root_cause"))


def judge(sc: Scenario, changes: list[dict[str, Any]], t_start: float, t_end: float, grace_s: float = 10.0) -> Result:
    """The :class:`Result` of one scenario from the collector's incident changes (times: epoch)."""
    res = Result(sc.name, sc.culprit)
    opened = [c for c in changes if c.get("change") == "opened" and t_start <= float(c["opened"]) <= t_end + grace_s]
    opened.sort(key=lambda c: float(c["opened"]))
    if opened:
        res.root = _last_host(opened[0])
    hit = [c for c in opened if _last_host(c) == sc.culprit]
    res.other = sorted({str(c.get("root_cause")) for c in opened if _last_host(c) != sc.culprit})
    if hit:
        res.found = True
        res.root = sc.culprit
        res.detect_s = float(hit[0]["opened"]) - t_start
        iid = hit[0]["id"]
        done = [c for c in changes if c.get("change") == "resolved" and c.get("id") == iid]
        if done and done[-1].get("resolved") is not None:
            res.resolve_s = float(done[-1]["resolved"]) - t_end
    return res


#: What a replay of a kept work dir needs (:func:`replay`), written there as the run goes
REPLAY_FILE = "replay.json"
#: Longest folder to keep work dirs in: Dovecot's Unix sockets live 60 characters below it, and a
#: socket's path is limited to 107 bytes
KEEP_MAX_CHARS = 40


def _record(work: Path, **kv: Any) -> None:
    """Add ``kv`` to the work dir's :data:`REPLAY_FILE`."""
    path = work / REPLAY_FILE
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update(kv)
    path.write_text(json.dumps(doc, indent=1))


def normal_line(changes: list[dict[str, Any]], events: list[dict[str, Any]], names: dict[str, str],
                window: tuple[float, float], days: int, summary: dict[str, Any]) -> str:
    """The normal-only run's line: incidents opened in ``window``, the intervals' coverage there."""
    n_start, n_end = window
    false = [c for c in changes if c.get("change") == "opened" and n_start <= float(c["opened"]) <= n_end]
    evs = [e for e in events if isinstance(e.get("t"), int | float)]
    n, inside = coverage(evs, RouteIntervals(), RelayNames(names),
                         count=lambda e: n_start <= float(e["t"]) <= n_end and not e.get("anomaly"))
    cov = inside / n if n else float("nan")
    summary.update(false_incidents=[str(c.get("root_cause")) for c in false], deliveries=n,
                   normal_window=[n_start, n_end])
    return f"normal false_incidents {len(false)} days {days} interval_coverage {cov:.3f}"


def run_bench(plan: Plan, names: list[str] | None = None, out: Callable[[str], None] = print,
              normal: bool = True, keep: Path | None = None) -> tuple[list[Result], dict[str, Any]]:
    """Run the bench (the scenarios ``names``, every one for None); prints the result lines through
    ``out`` as they come.  The work dir (its archive and :data:`REPLAY_FILE`, for :func:`replay`) is
    a new folder in ``keep`` and stays there, or a temporary one removed at the end unless
    ``MAILPULSE_KEEP`` is set."""
    pick = [s for s in SCENARIOS if names is None or s.name in names]
    results: list[Result] = []
    summary: dict[str, Any] = {}
    if keep is not None and len(str(keep.resolve())) > KEEP_MAX_CHARS:
        raise UserError(f"the folder to keep the work dir in, {keep.resolve()}, is longer than {KEEP_MAX_CHARS} "
                        "characters: Dovecot's Unix sockets live below it and their paths are limited to 107 bytes")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if not all(os.stat(p).st_mode & 0o001 for p in (keep.resolve(), *keep.resolve().parents)):
            raise UserError(f"{keep.resolve()} or a folder above it cannot be entered by other users (no o+x): "
                            "Postfix and Dovecot run as their own users below it")
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="mailpulse-faults-", dir=keep))
        work.chmod(0o755)
        if keep is None and not os.environ.get("MAILPULSE_KEEP"):
            stack.callback(lambda: __import__("shutil").rmtree(work, ignore_errors=True))
        summary["work"] = str(work)
        lab = Lab(work, plan, stack)
        _record(work, names=lab.names, correlate=lab.correlate, days=plan.days, faults=[])
        t0 = time.time()
        lab.warm_up()
        t_model = time.time()
        _record(work, model_changed=lab.scores_since())
        summary["warmup_s"] = round(t_model - t0, 1)
        if normal:
            n_start = time.time()
            time.sleep(plan.days * plan.day_s)
            n_end = time.time()
            _record(work, normal_window=[n_start, n_end])
            out(normal_line(lab.changes(), lab.archive_events(), lab.names, (n_start, n_end), plan.days, summary))
        lab.calibrate()     # without the normal-only run: the scenarios start once the baselines are the model's
        faults: list[dict[str, Any]] = []
        for sc in pick:
            wait_quiet(lab, 60.0)
            t_start = time.time()
            sc.start(lab)
            time.sleep(plan.fault_s)
            t_end = time.time()
            sc.stop(lab)
            faults.append({"name": sc.name, "culprit": sc.culprit, "start": t_start, "end": t_end})
            _record(work, faults=faults)
            time.sleep(plan.recovery_s)
            wait_quiet(lab, 30.0)
            r = judge(sc, lab.changes(), t_start, t_end)
            results.append(r)
            out(r.line())
        summary["traffic"] = {"sent": lab.traffic.sent, "refused": lab.traffic.errors,
                              "relay_a": [lab.relay_a.count, lab.relay_a.refused],
                              "relay_b": [lab.relay_b.count, lab.relay_b.dropped]}
        summary["other_incidents"] = {r.name: r.other for r in results if r.other}
        summary["seconds"] = round(time.time() - t0, 1)
    return results, summary


def replay(work: Path, overrides: dict[str, Any] | None = None, out: Callable[[str], None] = print
           ) -> tuple[list[Result], dict[str, Any]]:
    """Replay a kept work dir (:func:`run_bench` with ``keep``, or ``MAILPULSE_KEEP=1``) through the
    correlation offline: its archive's events in archive order, the run's relay names and
    ``[correlate]`` settings (``overrides`` replace some), the nodes' model change where the collector
    heard of it; prints and returns the same lines and results as the run (the same incidents, at
    nearly the same moments: correlation time is event time, but the live collector also evaluates
    on its own timer, so a ``detect_s`` may differ by a second or two).  No root, no lab."""
    try:
        rec = json.loads((work / REPLAY_FILE).read_text())
        settings = CorrelateSettings(**{**rec["correlate"], **(overrides or {})})
        names = {str(k): str(v) for k, v in dict(rec["names"]).items()}
        t_model = None if rec.get("model_changed") is None else float(rec["model_changed"])
        window = None if not rec.get("normal_window") else (float(rec["normal_window"][0]),
                                                            float(rec["normal_window"][1]))
        faults = [(str(f["name"]), str(f["culprit"]), float(f["start"]), float(f["end"]))
                  for f in rec.get("faults", [])]
        days = int(rec.get("days", 1))
    except FileNotFoundError:
        raise UserError(f"{work} holds no {REPLAY_FILE}: not the work dir of a kept bench run") from None
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise UserError(f"{work / REPLAY_FILE} or the overrides are not usable: {str(e)[:300]}") from None
    c = Correlator(settings, RelayNames(names))
    events = archive_events(work / "archive")
    changes: list[dict[str, Any]] = []
    for ev in events:
        t = ev.get("t")
        if not isinstance(t, int | float):
            continue
        if t_model is not None and c.scores_since is None and t >= t_model:
            c.model_changed(t_model)
        c.observe(ev)
        changes += [dict(ch.incident, change=ch.kind) for ch in c.maybe_evaluate()]
    summary: dict[str, Any] = {"work": str(work), "events": len(events), "settings": settings.model_dump()}
    if window is not None:
        out(normal_line(changes, events, names, window, days, summary))
    results = []
    for name, culprit, start, end in faults:
        r = judge(Scenario(name, culprit, _nothing, _nothing), changes, start, end)
        results.append(r)
        out(r.line())
    summary["other_incidents"] = {r.name: r.other for r in results if r.other}
    return results, summary


def _nothing(lab: Lab) -> None:
    pass


def wait_quiet(lab: Lab, timeout: float) -> None:
    """Wait (up to ``timeout``) until no incident is open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lab.open_incidents():
        time.sleep(0.5)


def why_not() -> str | None:
    """Why the bench cannot run here, or None."""
    if os.geteuid() != 0:
        return "the fault bench needs root (Postfix and Dovecot switch to their own users)"
    missing = missing_tools("mosquitto", "postfix", "dovecot", root=True)
    if missing:
        return "; ".join(missing)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        return "aiosmtpd is not installed"
    return None


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs: a value is JSON (``3.5``, ``true``) or else the string."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        try:
            out[key.strip()] = json.loads(value) if sep else None
        except ValueError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fault-scenario bench on the real lab parts (see mailpulse.lab.scenarios)")
    ap.add_argument("--quick", action="store_true", help="one compressed day of 80 s, 30 s faults (under 10 min)")
    ap.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                    help="run only these scenarios (repeatable)")
    ap.add_argument("--no-normal", action="store_true", help="skip the normal-only run")
    ap.add_argument("--only-normal", action="store_true", help="run only the normal-only run, no scenario")
    ap.add_argument("--json", type=Path, help="also write the details (summary) here")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="keep the run's work dir (its archive and replay.json) in DIR, for --replay (a short path: "
                         "at most 40 characters)")
    ap.add_argument("--replay", type=Path, metavar="WORK",
                    help="no run: replay a kept work dir through the correlation (no root needed)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --replay: a [correlate] setting other than the run's (repeatable), e.g. z_min=3.5")
    args = ap.parse_args(argv)
    if args.only_normal and (args.no_normal or args.scenario):
        ap.error("--only-normal runs no scenario and needs the normal run")
    if args.set and not args.replay:
        ap.error("--set changes a replay's settings: give --replay WORK")
    try:
        if args.replay:
            results, summary = replay(args.replay, _overrides(args.set), out=lambda s: print(s, flush=True))
        else:
            reason = why_not()
            if reason:      # like the demo's node stage: said in one sentence, not a failure of `make bench`
                print(f"bench_faults: not run: {reason}", file=sys.stderr)
                return 0
            plan = Plan() if args.quick else Plan.full()
            random.seed(0)
            names: list[str] | None = [] if args.only_normal else args.scenario
            results, summary = run_bench(plan, names, out=lambda s: print(s, flush=True), normal=not args.no_normal,
                                         keep=args.keep)
    except UserError as e:
        print(f"bench_faults: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"results": [r.__dict__ for r in results], "summary": summary}, indent=1))
    return 0

