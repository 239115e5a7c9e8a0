"""Benchmarks of the node's publishing side, on loopback with real servers.

1. 4K probe round trip through the two-hop Postfix chain (edge -> mx -> Dovecot): latency (send
   timestamp to IMAP arrival) and the whole probe cycle (compose, send, wait, fetch, verify, delete),
   waiting with IMAP IDLE against polling every 5 ms and every 10 ms (the default).
   Target: latency <= 1 s.
2. Resident memory of the node daemon (``mailpulse node run``) following a log and probing.
   Target: <= 100 MB.
3. Publishing throughput: events/s from ``MqttSink.emit_many`` (spool commit) to PUBACK of the last
   batch, QoS 1, local Mosquitto, for a few batch sizes.

Run: ``.venv/bin/python bench/bench_probe.py [probe]`` (``probe``: the round trip only; root needed for Postfix and Dovecot; parts whose
servers cannot start are skipped with the reason).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailpulse.pi_firmware.mqtt import MqttSettings, MqttSink
from mailpulse.pi_firmware.postfix import parse_lines
from mailpulse.pi_firmware.probe import Prober, ProbeRoute, ProbeSettings, probe_content
from mailpulse.pi_firmware.spool import Spool
from mailpulse.pi_firmware.synthlog import generate

from mailpulse.lab.servers import MailChain, Mosquitto, make_root, missing_tools

ROOT = Path(__file__).resolve().parent.parent

SITE = "bench"


def bench_probe(chain: MailChain, n: int = 8) -> None:
    """IDLE against polling (5 ms and the 10 ms default), interleaved probe by probe on one chain."""
    t = time.perf_counter()
    content = probe_content()
    gen = time.perf_counter() - t
    mb = chain.mailboxes["probe"]
    base = ProbeRoute(name="idle", smtp_host=chain.edge.host, smtp_port=chain.edge.port,
                      mail_from="probe@edge.mailpulse.test", rcpt_to=mb.address, imap_host=chain.imap.host,
                      imap_port=chain.imap.port, imap_username=mb.user, imap_password=mb.password,
                      timeout_s=10, poll_interval_s=0.005)
    routes = [base, ProbeRoute(**{**base.__dict__, "name": "poll-5ms", "imap_idle": False}),
              ProbeRoute(**{**base.__dict__, "name": "poll-10ms", "imap_idle": False, "poll_interval_s": 0.01})]
    prober = Prober("bench", ProbeSettings(routes=routes))
    looks = {r.name: 0 for r in routes}
    search = Prober._search
    current = ""

    def counting(im: object, node: str) -> list[str]:
        looks[current] += 1
        return search(im, node)  # type: ignore[arg-type]

    prober._search = counting  # type: ignore[method-assign]
    lat: dict[str, list[float]] = {r.name: [] for r in routes}
    cycle: dict[str, list[float]] = {r.name: [] for r in routes}
    size = 0
    for _ in range(n):
        for r in routes:
            current = r.name
            t = time.perf_counter()
            [ev] = prober.run(r.name)
            cycle[r.name].append((time.perf_counter() - t) * 1000)
            assert ev.outcome == "ok", ev.fields()
            lat[r.name].append(ev.latency_ms or 0.0)
            size = ev.size
    assert prober.wait_mode["idle"] == "idle"
    print(f"probe: image {len(content.image) / 1e6:.2f} MB (generated once in {gen * 1000:.0f} ms), "
          f"message {size / 1e6:.2f} MB, {n} probes per mode through edge -> mx -> Dovecot, interleaved")
    ref = statistics.median(lat["idle"])
    for r in routes:
        med = statistics.median(lat[r.name])
        print(f"probe [{r.name:9s}]: latency ms median {med:7.1f}  min {min(lat[r.name]):7.1f}  "
              f"max {max(lat[r.name]):7.1f}  ({med / ref:4.2f}x IDLE)  round trip (whole cycle) ms median "
              f"{statistics.median(cycle[r.name]):7.1f}  mailbox searches/probe {looks[r.name] / n:6.1f}")
    print("probe: target latency <= 1000 ms; IDLE resolution 1 ms (EXISTS push), polling = its interval")


def bench_publish(broker: Mosquitto, tmp: Path) -> None:
    events, _ = parse_lines(itertools.islice(generate(10**6, 7), 500_000), "node-a")
    seen: set[str] = set()
    events = [e for e in events if not (e.id in seen or seen.add(e.id))]  # type: ignore[func-returns-value]
    for e in events:
        e.payload()   # featurise once, outside the timing (the pipeline does it before the sink)
    n = len(events)
    for batch in (1, 50, 500):
        spool = Spool(tmp / f"spool-{batch}.db")
        ident = broker.node(SITE, "node-a").client
        sink = MqttSink(SITE, "node-a", MqttSettings(**ident.mqtt_doc(broker.url), password=ident.password,
                                                      batch_max_events=batch, client_id=f"bench-{batch}",
                                                      ha_discovery=False), spool)
        sink.start()
        assert sink.wait_connected(10)
        m = n if batch > 1 else min(n, 20_000)
        t = time.perf_counter()
        for i in range(0, m, 1000):
            sink.emit_many(events[i:i + 1000])
        ok = sink.flush(300)
        dt = time.perf_counter() - t
        sink.close(5)
        spool.close()
        print(f"publish: {m} events, QoS 1, batch {batch:3d} events/message: {m / dt:9.0f} events/s "
              f"({'all acknowledged' if ok else 'NOT all acknowledged'}, spool on disk)")


def bench_rss(broker: Mosquitto, chain: MailChain | None, tmp: Path, flood: bool = True, secs: float = 12.0) -> None:
    tmp = tmp / f"rss-{int(flood)}-{int(chain is not None)}"
    tmp.mkdir()
    log = tmp / "maillog"
    log.write_text("")
    cfg = tmp / "node.toml"
    lines = [
        "[node]", 'id = "node-a"', f'site = "{SITE}"', f'state_dir = "{tmp / "state"}"',
        "[mqtt]", *(f'{k} = "{v}"' for k, v in broker.node(SITE, "node-a").client.mqtt_doc(broker.url).items()),
        'password_env = "BENCH_MQTT_PW"',
        "[fleet]", "heartbeat_s = 1.0",
        "[postfix]", f'log = "{log}"', "from_start = true", "poll_s = 0.1",
    ]
    if chain is not None:
        mb = chain.mailboxes["probe"]
        lines += ["[probe]", "interval_s = 1.0", "[[probe.routes]]", 'name = "chain"', 'smtp_host = "127.0.0.1"',
                  f"smtp_port = {chain.edge.port}", 'mail_from = "probe@edge.mailpulse.test"',
                  f'rcpt_to = "{mb.address}"', 'imap_host = "127.0.0.1"', f"imap_port = {chain.imap.port}",
                  f'imap_username = "{mb.user}"', 'imap_password_env = "BENCH_IMAP_PW"', "timeout_s = 10"]
    else:
        lines += ["[probe]", "enabled = false"]
    cfg.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, BENCH_MQTT_PW=broker.node(SITE, "node-a").client.password, BENCH_IMAP_PW=chain.mailboxes["probe"].password if chain else "")
    proc = subprocess.Popen([sys.executable, "-m", "mailpulse", "node", "run", "--config", str(cfg),
                             "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True)
    peak = 0
    try:
        gen = generate(10**7, 11)
        t_end = time.monotonic() + secs
        written = 0
        while time.monotonic() < t_end and proc.poll() is None:
            with open(log, "a") as f:
                chunk = list(itertools.islice(gen, 20_000 if flood else 20))
                f.writelines(chunk)
                written += len(chunk)
            time.sleep(0.5)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1])
            peak = max(peak, rss)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    print(f"daemon: followed {written} log lines in {secs:g} s{' and probed every second' if chain else ''}: "
          f"RSS peak sampled {peak / 1024:.1f} MB, VmHWM {hwm / 1024:.1f} MB (target <= 100 MB); "
          f"SIGTERM exit status {rc}")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mailpulse-bench-"))
    broker = None
    chain = None
    try:
        miss = missing_tools("mosquitto")
        if miss:
            print("publish/daemon: skipped:", "; ".join(miss))
        else:
            # the broker as `collector init` writes it: TLS with client certificates, passwords, ACL
            broker = Mosquitto.lab(make_root("mailpulse-bench-mq-"), nodes=[(SITE, "node-a")])
            broker.start()
        miss = missing_tools("postfix", "dovecot", root=True)
        if miss:
            print("probe: skipped:", "; ".join(miss))
        else:
            chain = MailChain()
            chain.start()
            bench_probe(chain)
        if broker is not None and "probe" not in sys.argv[1:]:
            bench_publish(broker, tmp)
            bench_rss(broker, chain, tmp, flood=False)
            bench_rss(broker, None, tmp, flood=True)
            bench_rss(broker, chain, tmp, flood=True)
    finally:
        if chain is not None:
            chain.cleanup()
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.deployment.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
