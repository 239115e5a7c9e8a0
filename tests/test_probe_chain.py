"""The 4K probe through real servers: Postfix edge -> (recompressing relay) -> Postfix mx -> Dovecot.

Cases: a round trip with every field; the next hop unreachable (deferrals in the edge's log, the
probe lost, then recorded once as late when the hop is back); a hop that recompresses the image
(fidelity drop, PSNR); ``mailpulse node probe --once``.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from mailpulse.pi_firmware.imapwait import idle_wait
from mailpulse.pi_firmware.postfix import parse_lines
from mailpulse.pi_firmware.probe import ProbeError, ProbeEvent, Prober, ProbeRoute, ProbeSettings
from mailpulse.pi_firmware.probemail import HEIGHT, WIDTH
from server_fixtures import MailLab

from mailpulse.cli import main
from mailpulse.lab.relays import MangleRelay
from mailpulse.lab.servers import CertificateAuthority, Dovecot, make_root

pytestmark = pytest.mark.xdist_group("servers")


def route(lab: MailLab, box: str = "probe", name: str = "direct", timeout_s: float = 10.0) -> ProbeRoute:
    c = lab.chain
    mb = c.mailboxes[box]
    return ProbeRoute(name=name, smtp_host=c.edge.host, smtp_port=c.edge.port, mail_from="probe@edge.mailpulse.test",
                      rcpt_to=mb.address, imap_host=c.imap.host, imap_port=c.imap.port, imap_username=mb.user,
                      imap_password=mb.password, timeout_s=timeout_s, poll_interval_s=0.005,
                      maillogs=[str(c.edge.maillog), str(c.mx.maillog)])


def test_probe_round_trip_with_all_fields(mail_lab: MailLab) -> None:
    prober = Prober("node-a", ProbeSettings(routes=[route(mail_lab)]))
    [ev] = prober.run("direct")
    assert ev.outcome == "ok", ev.fields()
    assert ev.error is None and ev.integrity is not None and ev.integrity["intact"]
    assert ev.integrity["structure_ok"] and ev.integrity["image_hash_ok"] and ev.integrity["attachment_hash_ok"]
    assert (ev.integrity["image_width"], ev.integrity["image_height"]) == (WIDTH, HEIGHT)
    assert ev.image_pixels == WIDTH * HEIGHT and ev.size > 1_000_000
    assert ev.latency_ms is not None and 0 < ev.latency_ms < 5000 and ev.arrived_ms and ev.arrived_ms >= ev.sent_ms
    # Received: chain, oldest first: the edge then the mx, each refined with Postfix's delays=
    assert [h["by"] for h in ev.hops] == ["edge.mailpulse.test", "mx.mailpulse.test"]
    assert all(h["id"] and h["timestamp"] for h in ev.hops)
    assert ev.hops[0]["delay_s"] is not None and ev.hops[0]["delay_s"] >= 0
    for h in ev.hops:
        assert h["postfix"]["status"] == "sent" and len(h["postfix"]["delays"]) == 4
    assert ev.integrity["structure"][:2] == ["multipart/mixed", "multipart/related"]
    p = ev.payload()
    assert p["kind"] == "probe" and p["fields"]["outcome"] == "ok" and len(p["x"]) == 8
    json.dumps(p)
    assert prober.counts["ok"] == 1 and prober.counts["lost"] == 0
    # the probe was deleted from the mailbox: the next probe finds only itself
    [again] = prober.run("direct")
    assert again.outcome == "ok" and again.probe_id != ev.probe_id


def test_a_measured_probe_still_in_the_mailbox_is_no_stray(mail_lab: MailLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe its own route has measured, fetched again before its deletion took effect (another
    route's thread on a shared mailbox, or a deletion that failed), is dropped quietly: not a stray."""
    prober = Prober("node-s", ProbeSettings(routes=[route(mail_lab)]))
    deletes: list[object] = []
    with monkeypatch.context() as mp:
        mp.setattr(Prober, "_delete", staticmethod(lambda im, uids: deletes.append(uids)))
        [first] = prober.run("direct")                # measured, but left in the mailbox
    assert first.outcome == "ok" and deletes
    [again] = prober.run("direct")                    # finds the first one again, then its own
    assert again.outcome == "ok" and again.probe_id != first.probe_id
    assert prober.counts["stray"] == 0 and prober.counts["ok"] == 2, prober.counts
    [third] = prober.run("direct")                    # the first one was deleted with the second's
    assert third.outcome == "ok" and prober.counts["ok"] == 3 and prober.counts["stray"] == 0


def test_unreachable_hop_deferrals_loss_then_late_once(mail_lab: MailLab) -> None:
    chain = mail_lab.chain
    prober = Prober("node-b", ProbeSettings(routes=[route(mail_lab, timeout_s=2.0)]))
    log_before = len(chain.edge.log_text().splitlines())
    chain.mx.stop()                                   # the next hop is unreachable
    try:
        [lost] = prober.run("direct")
        assert lost.outcome == "lost" and "not arrived" in (lost.error or "")
        assert prober.counts["lost"] == 1 and lost.probe_id in prober.lost
    finally:
        chain.mx.start()
    lines = chain.edge.log_text().splitlines()[log_before:]
    deliveries, _ = parse_lines([ln + "\n" for ln in lines], "node-b")
    deferred = [e for e in deliveries if e.status == "deferred"]
    assert deferred, "\n".join(lines[-10:])
    assert all(e.dsn and e.dsn.startswith("4.") and e.recipient == "probe@probe.test" for e in deferred)
    chain.edge.flush()                                # retry now that the hop is back
    assert chain.edge.wait_queue_empty(15)
    events = prober.run("direct")
    by = {e.outcome: e for e in events}
    assert set(by) == {"late", "ok"}, [e.fields() for e in events]
    late = by["late"]
    assert late.probe_id == lost.probe_id and late.supersedes == lost.id and late.id != lost.id
    assert late.latency_ms is not None and late.latency_ms > 2000
    assert prober.counts["lost"] == 0 and prober.counts["late"] == 1 and not prober.lost
    # it is never counted again
    [only] = prober.run("direct")
    assert only.outcome == "ok" and prober.counts["late"] == 1
    # a probe lost now carries the path the route's last arrived probe took (assumed, no delays)
    chain.mx.stop()
    try:
        [lost2] = prober.run("direct")
    finally:
        chain.mx.start()
    assert lost2.outcome == "lost"
    assert [h["by"] for h in lost2.hops] == [h["by"] for h in only.hops] == ["edge.mailpulse.test", "mx.mailpulse.test"]
    assert all(h["assumed"] and "delay_s" not in h for h in lost2.hops)
    chain.edge.flush()
    assert chain.edge.wait_queue_empty(15)
    # the edge's log now also has the delivery after the deferrals
    sent = [e for e in parse_lines([ln + "\n" for ln in chain.edge.log_text().splitlines()], "node-b")[0]
            if e.queue_id == deferred[0].queue_id and e.status == "sent"]
    assert len(sent) == 1


def test_recompressing_hop_lowers_fidelity(mail_lab: MailLab) -> None:
    mail_lab.need_relay()
    prober = Prober("node-c", ProbeSettings(routes=[route(mail_lab, box="lossy", name="lossy")]))
    [ev] = prober.run("lossy")
    integ = ev.integrity
    assert integ is not None
    assert ev.outcome == "damaged", ev.fields()
    assert integ["structure_ok"] and integ["attachment_hash_ok"] and integ["resolution_ok"]
    assert not integ["image_hash_ok"] and integ["image_decodes"]
    assert integ["psnr_db"] is not None and 20 < integ["psnr_db"] < 45
    assert [h["by"] for h in ev.hops] == ["edge.mailpulse.test", "mangle.mailpulse.test", "mx.mailpulse.test"]
    assert mail_lab.mangle.count >= 1


def test_node_probe_cli_once(mail_lab: MailLab, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    c = mail_lab.chain
    mb = c.mailboxes["probe"]
    cfg = tmp_path / "node.toml"
    cfg.write_text(f"""
[node]
id = "node-d"
site = "lab"
state_dir = "{tmp_path / 'state'}"
[mqtt]
host = "127.0.0.1"
[probe]
interval_s = 60
[[probe.routes]]
name = "direct"
smtp_host = "127.0.0.1"
smtp_port = {c.edge.port}
mail_from = "probe@edge.mailpulse.test"
rcpt_to = "{mb.address}"
imap_host = "127.0.0.1"
imap_port = {c.imap.port}
imap_username = "{mb.user}"
imap_password_env = "MAILPULSE_TEST_IMAP_PW"
timeout_s = 10
""")
    monkeypatch.setenv("MAILPULSE_TEST_IMAP_PW", mb.password)
    assert main(["node", "probe", "--config", str(cfg), "--once"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["outcome"] == "ok" and out["route"] == "direct" and out["latency_ms"] > 0
    assert main(["node", "probe", "--config", str(cfg), "--once", "--route", "nope"]) == 2
    assert "no probe route named 'nope'" in capsys.readouterr().err
    monkeypatch.delenv("MAILPULSE_TEST_IMAP_PW")
    assert main(["node", "probe", "--config", str(cfg), "--once"]) == 2
    assert "MAILPULSE_TEST_IMAP_PW" in capsys.readouterr().err


def test_slow_hop_shows_in_latency_and_hop_delays(mail_lab: MailLab) -> None:
    mail_lab.need_relay()
    prober = Prober("node-e", ProbeSettings(routes=[route(mail_lab, box="lossy", name="slow")]))
    mail_lab.mangle.delay_s, quality = 2.0, mail_lab.mangle.quality
    mail_lab.mangle.quality = None                 # slow but faithful
    try:
        [ev] = prober.run("slow")
    finally:
        mail_lab.mangle.delay_s, mail_lab.mangle.quality = 0.0, quality
    assert ev.outcome == "ok" and ev.latency_ms is not None and ev.latency_ms >= 2000
    # the edge's hop waits for the slow relay: Postfix's delays= puts it in transmission (d) ...
    edge = ev.hops[0]
    assert edge["by"] == "edge.mailpulse.test" and edge["postfix"]["delays"][3] >= 1.9
    # ... and the Received: chain shows the hold on the slow relay's own hop (stamped on arrival, as an
    # MTA does, then held 2 s: its stamp to the next hop's is 1-3 s at 1 s resolution), not on the edge's
    slow = ev.hops[1]
    assert slow["by"] == "mangle.mailpulse.test" and 1.0 <= (slow["delay_s"] or 0.0) <= 3.0
    assert (edge["delay_s"] or 0.0) <= 1.0


def test_probe_submits_with_starttls_and_auth(mail_lab: MailLab, tmp_path: Path) -> None:
    """The probe's SMTP client: STARTTLS verified against the route's CA, then AUTH."""
    mail_lab.need_relay()

    ca = CertificateAuthority.create(tmp_path / "tls")
    c = mail_lab.chain
    front = MangleRelay(next_hop=(c.edge.host, c.edge.port), quality=None, hostname="submit.mailpulse.test",
                        tls=(str(ca.server_cert), str(ca.server_key)), users={"prober": "s3cret"})
    front.start()
    try:
        r = route(mail_lab, name="submit")
        secure = ProbeRoute(**{**r.__dict__, "smtp_host": "localhost", "smtp_port": front.port,
                               "smtp_security": "starttls", "smtp_username": "prober", "smtp_password": "s3cret",
                               "ca_file": str(ca.ca_cert)})
        prober = Prober("node-f", ProbeSettings(routes=[secure]))
        [ev] = prober.run("submit")
        assert ev.outcome == "ok" and front.logins == ["prober"]
        assert ev.hops[0]["by"] == "submit.mailpulse.test"
        wrong = ProbeRoute(**{**secure.__dict__, "smtp_password": "nope"})
        [bad] = Prober("node-f", ProbeSettings(routes=[wrong])).run("submit")
        assert bad.outcome == "lost" and "SMTP" in (bad.error or "") and "535" in (bad.error or "")
    finally:
        front.stop()


def test_probe_reads_back_over_imap_starttls_and_tls(mail_lab: MailLab, tmp_path: Path) -> None:
    """A second Dovecot with TLS on the same Maildirs: the prober verifies it against the route's CA."""
    c = mail_lab.chain
    ca = CertificateAuthority.create(tmp_path / "tls")
    root = make_root("mailpulse-imaps-")
    imaps = Dovecot(root, {m.user: m.password for m in c.mailboxes.values()}, c.mail_root, tls=ca)
    imaps.start()
    try:
        base = route(mail_lab, name="tls")
        for security, port in (("starttls", imaps.port), ("tls", imaps.imaps_port)):
            r = ProbeRoute(**{**base.__dict__, "imap_host": "localhost", "imap_port": port, "imap_security": security,
                              "ca_file": str(ca.ca_cert)})
            [ev] = Prober("node-g", ProbeSettings(routes=[r])).run("tls")
            assert ev.outcome == "ok", (security, ev.fields())
        # a CA that did not sign the server's certificate: refused, with the reason
        other = CertificateAuthority.create(tmp_path / "other")
        r = ProbeRoute(**{**base.__dict__, "imap_host": "localhost", "imap_port": imaps.imaps_port,
                          "imap_security": "tls", "ca_file": str(other.ca_cert)})
        with pytest.raises(ProbeError, match="CERTIFICATE_VERIFY_FAILED"):
            Prober("node-g", ProbeSettings(routes=[r])).run("tls")
    finally:
        imaps.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_probe_waits_with_idle_against_dovecot(mail_lab: MailLab) -> None:
    """Dovecot advertises IDLE: the prober idles (no polling) and times the EXISTS push to 1 ms."""
    prober = Prober("node-i", ProbeSettings(routes=[route(mail_lab, name="idle")]))
    polls = 0
    search = Prober._search

    def counting(im: object, node: str) -> list[str]:
        nonlocal polls
        polls += 1
        return search(im, node)  # type: ignore[arg-type]

    prober._search = counting  # type: ignore[method-assign]
    [ev] = prober.run("idle")
    assert prober.wait_mode["idle"] == "idle"
    assert ev.outcome == "ok" and ev.poll_interval_ms == 0.0, ev.fields()
    assert ev.latency_ms is not None and 0 < ev.latency_ms < 5000 and ev.arrived_ms and ev.arrived_ms >= ev.sent_ms
    # one look before sending, one after, one when the push came: a 5 ms poll would look hundreds of times
    assert polls <= 4, polls
    # the connection left IDLE cleanly: the next probe on a fresh connection works the same way
    [again] = prober.run("idle")
    assert again.outcome == "ok" and prober.wait_mode["idle"] == "idle"
    # nothing arrives: IDLE ends at its timeout (or at once when stopped) and the connection still answers
    r = route(mail_lab, name="idle")
    with prober._imap(r) as im:
        t = time.monotonic()
        assert idle_wait(im, 0.3) is None and 0.25 < time.monotonic() - t < 2.0
        stop = threading.Event()
        stop.set()
        t = time.monotonic()
        assert idle_wait(im, 30.0, stop) is None and time.monotonic() - t < 1.0
        assert im.noop()[0] == "OK"


def test_probe_falls_back_to_polling(mail_lab: MailLab) -> None:
    """A Dovecot whose capabilities lack IDLE, and a route with ``imap_idle = false``: the prober polls."""
    c = mail_lab.chain
    root = make_root("mailpulse-noidle-")
    caps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ NAMESPACE UIDPLUS"
    noidle = Dovecot(root, {m.user: m.password for m in c.mailboxes.values()}, c.mail_root,
                     settings={"imap_capability": caps})
    noidle.start()
    try:
        base = route(mail_lab, name="poll")
        r = ProbeRoute(**{**base.__dict__, "imap_port": noidle.port})
        prober = Prober("node-p", ProbeSettings(routes=[r]))
        [ev] = prober.run("poll")
        assert prober.wait_mode["poll"] == "poll"
        assert ev.outcome == "ok" and ev.poll_interval_ms == 5.0, ev.fields()
        off = ProbeRoute(**{**base.__dict__, "imap_idle": False})
        prober = Prober("node-p", ProbeSettings(routes=[off]))
        [ev] = prober.run("poll")
        assert prober.wait_mode["poll"] == "poll" and ev.outcome == "ok" and ev.poll_interval_ms == 5.0
    finally:
        noidle.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_imap_gone_while_idling_reports_the_probe_lost_then_late(mail_lab: MailLab) -> None:
    """Dovecot stops while the prober idles: the probe is lost with the reason, not an exception;
    it is recognised as late once it arrives."""
    c = mail_lab.chain
    root = make_root("mailpulse-dropidle-")
    extra = Dovecot(root, {m.user: m.password for m in c.mailboxes.values()}, c.mail_root)
    extra.start()
    base = route(mail_lab, name="main", timeout_s=20.0)
    gone = ProbeRoute(**{**base.__dict__, "name": "gone", "imap_port": extra.port})
    prober = Prober("node-d", ProbeSettings(routes=[gone, base]))
    c.mx.stop()                                        # the probe cannot arrive meanwhile
    try:
        threading.Timer(1.0, extra.stop).start()
        t = time.monotonic()
        [lost] = prober.run("gone")
        assert prober.wait_mode["gone"] == "idle" and time.monotonic() - t < 10
        assert lost.outcome == "lost" and "failed while idling" in (lost.error or ""), lost.fields()
        assert lost.probe_id in prober.lost
    finally:
        c.mx.start()
        extra.stop()
        shutil.rmtree(root, ignore_errors=True)
    c.edge.flush()
    assert c.edge.wait_queue_empty(15)
    by = {e.outcome: e for e in prober.run("main")}
    assert set(by) == {"late", "ok"} and by["late"].supersedes == lost.id


def test_routes_probe_concurrently_and_share_a_mailbox(mail_lab: MailLab) -> None:
    """One route's lost probe waits out its time-out in its own thread while another route, reading
    the same mailbox, keeps probing: its probes arrive intact and none is taken for a stray."""
    ok = route(mail_lab, name="direct")
    # accepted by the edge but delivered to another mailbox than the one the route reads: never arrives
    gone = ok.model_copy(update={"name": "gone", "rcpt_to": mail_lab.chain.mailboxes["lossy"].address,
                                 "timeout_s": 120.0})
    prober = Prober("node-k", ProbeSettings(routes=[ok, gone]))
    stop = threading.Event()
    waiting: list[list[ProbeEvent]] = []
    t = threading.Thread(target=lambda: waiting.append(prober.run("gone", stop=stop)))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while "gone" not in prober.inflight.values() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "gone" in prober.inflight.values()
        runs = [prober.run("direct") for _ in range(3)]
        assert t.is_alive()                       # still waiting for its probe, 120 s time-out
    finally:
        stop.set()
        t.join(30)
    assert [[e.outcome for e in r] for r in runs] == [["ok"]] * 3, [[e.fields() for e in r] for r in runs]
    assert all(e.route == "direct" and e.latency_ms is not None for r in runs for e in r)
    [[lost]] = waiting
    assert lost.outcome == "lost" and lost.route == "gone" and "stopped" in (lost.error or "")
    assert prober.counts["stray"] == 0 and prober.counts["ok"] == 3 and prober.counts["sent"] == 4
    assert not prober.inflight and list(prober.lost) == [lost.probe_id]
