"""Collector benchmarks on real servers (Mosquitto; Postfix + Dovecot for the alert latency).

1. Ingest: N simulated nodes x R events/s, published as one batch per node per second from a
   *separate process* to a real Mosquitto; the collector archives (fsync), de-duplicates,
   correlates and serves the dashboard.  Reports sustained events/s and the ingest lag (event
   time stamped at publish -> archived and correlated) p50/p99.
2. Dashboard latency: during that load, an anomalous event is published every 100 ms from this
   process; an SSE client measures publish -> ``anomaly`` event received, p50/p99.
3. Alert latency (needs root for Postfix/Dovecot): K faults on fresh relays; time from publishing
   the events that make the incident -> the alert e-mail found in the Dovecot mailbox over IMAP.

4. Capacity: ``--burst N`` events published as fast as one process can, in batches of 50; reports
   the collector's ingest rate (archive + correlation + dashboard on).

Usage: ``python bench/bench_collector.py [--nodes 512] [--rate 10] [--seconds 20] [--alerts 10] [--burst N]``.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from mailpulse.collector.provision import open_deployment
from mailpulse.collector.service import Collector

from mailpulse import topics as T
from mailpulse.config.collector import AlertSettings, CollectorConfig, WebSettings, parse_config
from mailpulse.lab.servers import MailChain, Mosquitto, make_root, missing_tools
from mailpulse.lab.webclient import WebClient

SITE = "bench"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(eid: str, node: str, t: float, anomaly: bool, relay: str, sender: str, mx: str = "mx.bench.net",
           delay: float = 0.2) -> dict[str, Any]:
    return {"schema": 1, "kind": "message", "id": eid, "node": node, "ts": _iso(t),
            "fields": {"key": eid, "message_id": f"<{eid}@bench>", "size": 5123, "recipients": 1,
                       "hops": [{"from": sender, "by": relay, "with": "ESMTP", "delay_s": delay},
                                {"from": relay, "by": mx, "with": "ESMTP", "delay_s": None}],
                       "mime": {}, "mailbox_delay_s": 0.1},
            "x": [int(delay * 1000), 300, 0, 0, 5123, 0, 1, 0], "score": 900 if anomaly else 12,
            "anomaly": anomaly, "argmax": 0, "argmax_feature": "delay_total_ms"}


def _client(host: str, port: int, deployment: str, user: str, cid: str) -> mqtt.Client:
    """A client with ``user``'s identity in the deployment (TLS, client certificate, password)."""
    ident = open_deployment(deployment).client(user)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(ident.user, ident.password)
    c.tls_set(ca_certs=str(ident.ca_file), certfile=str(ident.cert_file), keyfile=str(ident.key_file))
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port, 60)
    c.loop_start()
    return c


def publisher(host: str, port: int, deployment: str, user: str, nodes: int, rate: int, seconds: float) -> None:
    """The separate process: every node publishes one batch of ``rate`` events per second."""
    c = _client(host, port, deployment, user, "bench-publisher")
    rng = random.Random(1)
    relays = [f"relay{i}.bench.net" for i in range(8)]
    t_start = time.time()
    n = 0
    sec = 0
    while time.time() - t_start < seconds:
        base = t_start + sec
        for i in range(nodes):
            due = base + i / nodes
            d = due - time.time()
            if d > 0:
                time.sleep(d)
            node = f"n{i:04d}"
            now = time.time()
            evs = [_event(f"{node}-{sec}-{k}", node, now, rng.random() < 0.01, relays[(i + k) % 8],
                          f"host{i % 64}.bench.org") for k in range(rate)]
            c.publish(T.NodeTopics(SITE, node).events,
                      json.dumps({"schema": 1, "site": SITE, "node": node, "events": evs}).encode(), qos=1)
            n += rate
        sec += 1
    time.sleep(1.0)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"published": n, "seconds": time.time() - t_start}), flush=True)


def burst_publisher(host: str, port: int, deployment: str, user: str, total: int, batch: int = 50) -> None:
    """Publish ``total`` events as fast as possible (capacity test), batches of ``batch`` events."""
    c = _client(host, port, deployment, user, "bench-burst")
    relays = [f"relay{i}.bench.net" for i in range(8)]
    infos = []
    t0 = time.time()
    for b in range(total // batch):
        node = f"n{b % 512:04d}"
        now = time.time()
        evs = [_event(f"burst-{b}-{k}", node, now, k == 0 and b % 10 == 0, relays[(b + k) % 8],
                      f"host{b % 64}.bench.org")
               for k in range(batch)]
        infos.append(c.publish(T.NodeTopics(SITE, node).events,
                               json.dumps({"schema": 1, "site": SITE, "node": node, "events": evs}).encode(), qos=1))
    for i in infos:
        i.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"published": total, "seconds": time.time() - t0}), flush=True)


class SseReader(threading.Thread):
    """Records the arrival time of every ``anomaly`` SSE event by id."""

    def __init__(self, web: WebClient) -> None:
        super().__init__(daemon=True)
        self.web = web
        self.arrived: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        with self.web.open("events", timeout=60) as r:
            ev = ""
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    ev = line[7:]
                    if ev == "state":
                        self.ready.set()
                elif line.startswith("data: ") and ev == "anomaly":
                    self.arrived.setdefault(json.loads(line[6:])["id"], time.monotonic())


def _secure_broker(root: Path) -> Mosquitto:
    """The broker as `collector init` writes it, plus a publisher user ``bench`` that plays every node."""
    broker = Mosquitto.lab(root)
    broker.deployment.add_consumer("bench", [f"topic write {T.PREFIX}/#"])
    return broker


def _collector_cfg(broker: Mosquitto, archive: Path, client_id: str) -> CollectorConfig:
    """The collector config `collector init` wrote, with this archive, any free web port and ``client_id``."""
    doc = tomllib.loads(broker.deployment.collector_config.read_text())
    doc["archive"] = {"dir": str(archive)}
    doc["web"]["port"] = 0
    doc["mqtt"]["client_id"] = client_id
    cfg, errs = parse_config(doc, "bench")
    assert cfg is not None, errs
    return cfg


def _ticker(col: Collector, stop: threading.Event, period: float) -> None:
    while not stop.wait(period):
        col.tick()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def bench_ingest(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = _secure_broker(tmp / "mqtt")
    broker.start()
    try:
        cfg = _collector_cfg(broker, tmp / "archive", "bench-collector")
        col = Collector(cfg)
        stop = threading.Event()
        col.start()
        assert col.ingest.wait_connected()
        assert col.web is not None
        ticker = threading.Thread(target=_ticker, args=(col, stop, 0.1), daemon=True)
        ticker.start()
        sse = SseReader(WebClient.dashboard(col.web.url, cfg.web, broker.ca_file))
        sse.start()
        sse.ready.wait(10)
        time.sleep(0.5)
        dep = str(broker.deployment.root)
        pub = subprocess.Popen([sys.executable, __file__, "--publisher", broker.host, str(broker.port), dep,
                                "bench", str(args.nodes), str(args.rate), str(args.seconds)],
                               stdout=subprocess.PIPE, text=True)
        probe = _client(broker.host, broker.port, dep, "bench", "bench-probe")
        sent: dict[str, float] = {}
        t0 = time.time()
        k = 0
        while pub.poll() is None and time.time() - t0 < args.seconds:
            eid = f"probe-{k}"
            ev = _event(eid, "probe", time.time(), True, "relayP.bench.net", "probe.bench.org")
            sent[eid] = time.monotonic()
            probe.publish(T.NodeTopics(SITE, "probe").events,
                          json.dumps({"schema": 1, "site": SITE, "node": "probe", "events": [ev]}).encode(), qos=1)
            k += 1
            time.sleep(0.1)
        out, _ = pub.communicate(timeout=args.seconds + 60)
        published = json.loads(out.strip().splitlines()[-1])["published"]
        end = time.monotonic() + 30
        while time.monotonic() < end and col.processor.total_events < published + k:
            time.sleep(0.02)
        elapsed = (col.last_batch_at or time.time()) - (col.first_batch_at or t0)
        probe.loop_stop()
        probe.disconnect()
        lags = list(col.lags)
        sse_lat = [(sse.arrived[i] - s) * 1000 for i, s in sent.items() if i in sse.arrived]
        res = {
            "nodes": args.nodes, "rate_per_node": args.rate, "offered_events_per_s": args.nodes * args.rate,
            "published": published, "ingested": col.processor.total_events,
            "sustained_events_per_s": round(col.processor.total_events / elapsed, 1),
            "ingest_lag_p50_s": round(pct(lags, 50), 3), "ingest_lag_p99_s": round(pct(lags, 99), 3),
            "ingest_lag_max_s": round(max(lags), 3) if lags else None,
            "sse_samples": len(sse_lat), "sse_lost": len(sent) - len(sse_lat),
            "sse_latency_p50_ms": round(pct(sse_lat, 50), 1), "sse_latency_p99_ms": round(pct(sse_lat, 99), 1),
            "archive_segments": len(list((tmp / "archive").glob("*.jsonl.gz"))),
        }
        if args.burst:
            before = col.processor.total_events
            col.first_batch_at = None
            p2 = subprocess.run([sys.executable, __file__, "--burst-publisher", broker.host, str(broker.port), dep,
                                 "bench", str(args.burst)], capture_output=True, text=True, timeout=600)
            pub_s = json.loads(p2.stdout.strip().splitlines()[-1])["seconds"]
            end = time.monotonic() + 120
            while time.monotonic() < end and col.processor.total_events < before + args.burst:
                time.sleep(0.05)
            got = col.processor.total_events - before
            span = (col.last_batch_at or 0) - (col.first_batch_at or 0)
            res.update({"burst_events": args.burst, "burst_ingested": got,
                        "burst_publisher_events_per_s": round(args.burst / pub_s, 1),
                        "burst_ingest_events_per_s": round(got / span, 1) if span > 0 else None})
        stop.set()
        col.stop()
        return res
    finally:
        broker.stop()


def bench_alerts(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    miss = missing_tools("postfix", "dovecot", "mosquitto", root=True)
    if miss:
        return {"skipped": "; ".join(miss)}
    chain = MailChain(make_root("mailpulse-bench-chain-"))
    broker = _secure_broker(tmp / "mqtt2")
    try:
        chain.start()
        broker.start()
        cfg = _collector_cfg(broker, tmp / "archive2", "bench-collector2")
        cfg.web = WebSettings(enabled=False)
        box = chain.mailboxes["probe"]
        cfg.alerts = AlertSettings(smtp_host=chain.smtp[0], smtp_port=chain.smtp[1], to=[box.address],
                                   sender="mailpulse@bench.test", rate_limit_per_hour=10000, min_interval_s=1)
        col = Collector(cfg)
        stop = threading.Event()
        col.start()
        assert col.ingest.wait_connected()
        ticker = threading.Thread(target=_ticker, args=(col, stop, 0.05), daemon=True)
        ticker.start()
        pubc = _client(broker.host, broker.port, str(broker.deployment.root), "bench", "bench-alert-pub")
        topic = T.NodeTopics(SITE, "node-a").events
        im = imaplib.IMAP4(chain.imap.host, chain.imap.port)
        im.login(box.user, box.password)
        lat: list[float] = []
        base = time.time() - 100_000
        for trial in range(args.alerts):
            tb = base + trial * 1000.0   # event time: each trial far from the previous one
            mx = f"mx{trial}.bench.net"
            relays = [f"t{trial}r{j}.bench.net" for j in range(3)]
            evs = [_event(f"a{trial}-h{i}", "node-a", tb + i * 0.1, False, relays[i % 3], f"s{i % 6}.bench.org", mx)
                   for i in range(3000)]   # 300 s of healthy history
            pubc.publish(topic, json.dumps({"schema": 1, "site": SITE, "node": "node-a", "events": evs}).encode(),
                         qos=1).wait_for_publish(10)
            time.sleep(0.3)
            fault = [_event(f"a{trial}-f{i}", "node-a", tb + 300 + i * 0.1, i % 3 == 1, relays[i % 3],
                            f"s{i % 6}.bench.org", mx, 6.0 if i % 3 == 1 else 0.2) for i in range(300)]
            t0 = time.monotonic()
            pubc.publish(topic, json.dumps({"schema": 1, "site": SITE, "node": "node-a", "events": fault}).encode(),
                         qos=1)
            needle = relays[1]
            found = False
            while time.monotonic() - t0 < 15 and not found:
                im.noop()
                im.select("INBOX")
                _, data = im.search(None, "SUBJECT", f'"{needle}"')
                found = bool(data and data[0].split())
                if not found:
                    time.sleep(0.02)
            if found:
                lat.append(time.monotonic() - t0)
        im.logout()
        print("alert bench incidents:", [(c.kind, c.incident["root_cause"]) for c in col.changes], file=sys.stderr)
        stop.set()
        pubc.loop_stop()
        pubc.disconnect()
        col.stop()
        return {"alert_trials": args.alerts, "alerts_arrived": len(lat),
                "alert_latency_p50_s": round(pct(lat, 50), 3), "alert_latency_p99_s": round(pct(lat, 99), 3),
                "alert_latency_max_s": round(max(lat), 3) if lat else None}
    finally:
        broker.stop()
        chain.cleanup()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--burst-publisher":
        h, p, d, u, n = sys.argv[2:7]
        burst_publisher(h, int(p), d, u, int(n))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        h, p, d, u, n, r, s = sys.argv[2:9]
        publisher(h, int(p), d, u, int(n), int(r), float(s))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--nodes", type=int, default=512)
    ap.add_argument("--rate", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--alerts", type=int, default=10)
    ap.add_argument("--burst", type=int, default=100_000, help="events of the capacity test (0: none)")
    args = ap.parse_args()
    miss = missing_tools("mosquitto")
    if miss:
        print("skipped:", "; ".join(miss))
        return 0
    tmp = make_root("mailpulse-bench-collector-")
    try:
        res = bench_ingest(args, tmp)
        print(json.dumps(res, indent=1), flush=True)
        if args.alerts:
            print(json.dumps(bench_alerts(args, tmp), indent=1), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
