"""``mailpulse collector init`` / ``add-node`` / ``remove-node``: the layout it writes, and the broker
it configures, run for real: TLS only (no plaintext listener unless asked), a client certificate of
the deployment's CA *and* a password for every connection, the per-node ACL (a node cannot publish
as another node), a removed node locked out by the reload (password, ACL and its certificate, by the
CRL)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mailpulse.collector.provision import hash_password, init_deployment, open_deployment
from mailpulse.pi_firmware.mqtt import MqttSink
from mailpulse.pi_firmware.spool import Spool
from paho.mqtt.enums import CallbackAPIVersion
from server_fixtures import SITE, Broker, require

from mailpulse import topics as T
from mailpulse.cli import main
from mailpulse.config.base import SecretSource
from mailpulse.config.collector import check_config
from mailpulse.config.node import check_config as check_node_config
from mailpulse.config.node import validate_node
from mailpulse.errors import UserError
from mailpulse.lab.servers import Mosquitto, make_root

pytestmark = pytest.mark.xdist_group("servers")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_writes_the_secure_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dep"
    assert main(["collector", "init", str(d), "--host", "mqtt.example.org", "--host", "10.0.0.5",
                 "--web-port", "9443", "--node-dir", "", "--node", "lab/pi-01"]) == 0
    out = capsys.readouterr().out
    assert "mqtts://mqtt.example.org:8883" in out and "PLAINTEXT" not in out
    dep = open_deployment(d)
    # secrets are for their owner only; certificates and configs without secrets are public
    for f in ("ca/ca.key", "collector/secrets.toml", "collector/mqtt.key", "collector/web.key",
              "collector/prometheus.password", "broker/server.key", "broker/passwd", "broker/acl",
              "nodes/lab/pi-01/secrets.toml", "nodes/lab/pi-01/node.key"):
        assert _mode(d / f) == 0o600, f
    for f in ("ca", "collector", "nodes"):
        assert _mode(d / f) == 0o700, f
    assert _mode(d / "ca.crt") == 0o644
    conf = dep.mosquitto_conf.read_text()
    listeners = [ln for ln in conf.splitlines() if ln.startswith("listener ")]
    assert listeners == ["listener 8883"]
    for line in ("allow_anonymous false", "require_certificate true", "use_identity_as_username false",
                 f"crlfile {d.resolve() / 'broker/crl.pem'}", f"password_file {d.resolve() / 'broker/passwd'}"):
        assert line in conf.splitlines()
    # the password file holds Mosquitto's PBKDF2-SHA512 hash of the password in the secrets file
    passwd = dict(ln.split(":", 1) for ln in (d / "broker/passwd").read_text().splitlines())
    assert set(passwd) == {"collector", "lab.pi-01"}
    pw = tomllib.loads((d / "nodes/lab/pi-01/secrets.toml").read_text())["mqtt_password"]
    _, seven, iters, salt, digest = passwd["lab.pi-01"].split("$")
    assert seven == "7" and base64.b64decode(digest) == hashlib.pbkdf2_hmac(
        "sha512", pw.encode(), base64.b64decode(salt), int(iters))
    assert hash_password(pw, base64.b64decode(salt), int(iters)) == passwd["lab.pi-01"]
    assert T.node_acl("lab", "pi-01") == (d / "broker/acl").read_text().split("\n\n")[2].splitlines()
    # the collector's config is valid as written: TLS to the broker, HTTPS and a password for the dashboard
    assert check_config(dep.collector_config) == []
    coll = tomllib.loads(dep.collector_config.read_text())
    assert coll["mqtt"]["url"] == "mqtts://mqtt.example.org:8883" and coll["web"]["port"] == 9443
    assert "tls" not in coll["web"] and "auth" not in coll["web"]          # the defaults: on
    prom = (d / "collector/prometheus.yml").read_text()
    assert "scheme: https" in prom and "username: prometheus" in prom and "password_file:" in prom
    # the node's bundle is a valid node config on this machine (node_dir "" = the bundle folder)
    cfg, errors = check_node_config(d / "nodes/lab/pi-01/node.toml")
    assert cfg is not None, errors
    assert (cfg.mqtt.tls, cfg.mqtt.port, cfg.mqtt.username) == (True, 8883, "lab.pi-01")
    assert cfg.mqtt.password == pw
    # once only; bad names are one sentence
    with pytest.raises(UserError, match="already holds a deployment"):
        init_deployment(d)
    assert main(["collector", "add-node", str(d), "lab/pi-01"]) == 2
    assert "already in the deployment" in capsys.readouterr().err
    assert main(["collector", "add-node", str(d), "lab/pi 02"]) == 2
    assert "node id 'pi 02' must be" in capsys.readouterr().err
    assert main(["collector", "add-node", str(tmp_path / "nowhere"), "lab/x"]) == 2
    assert "not a mailpulse deployment" in capsys.readouterr().err


def _connect(server: Mosquitto, user: str, password: str, *, cert: tuple[Path, Path] | None,
             tls: bool = True, port: int | None = None) -> Any:
    """The CONNACK reason of one connection attempt, or the exception that ended it."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    if tls:
        c.tls_set(ca_certs=str(server.ca_file), certfile=str(cert[0]) if cert else None,
                  keyfile=str(cert[1]) if cert else None)
    got = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result["rc"] = rc
        got.set()

    c.on_connect = on_connect
    try:
        c.connect(server.host, port or server.port, 5)
        c.loop_start()
        got.wait(3)
    except (OSError, ssl.SSLError) as e:
        result["error"] = e
    finally:
        c.loop_stop()
        c.disconnect()
    rc = result.get("rc")
    return "connected" if rc is not None and not rc.is_failure else (str(rc) if rc else "no connection")


def _files(b: Any) -> tuple[Path, Path]:
    return b.cert_file, b.key_file


def test_every_connection_needs_tls_a_certificate_and_the_password(broker: Broker) -> None:
    srv = broker.server
    a = broker.identity("node-a")
    assert _connect(srv, a.user, a.password, cert=_files(a)) == "connected"
    assert _connect(srv, a.user, "wrong", cert=_files(a)) == "Not authorized"
    assert _connect(srv, a.user, a.password, cert=None) == "no connection"              # no client certificate
    assert _connect(srv, a.user, a.password, cert=None, tls=False) == "no connection"   # plaintext
    # a certificate from another CA is refused even with the right password
    other = make_root("mailpulse-other-ca-")
    try:
        stranger = init_deployment(other / "d", nodes=[(SITE, "node-a")]).bundle(SITE, "node-a").client
        assert _connect(srv, a.user, a.password, cert=_files(stranger)) == "no connection"
    finally:
        shutil.rmtree(other, ignore_errors=True)
    # nothing else listens: the one listener of the config is the TLS one
    assert broker.deployment.plaintext_port == 0
    with socket.create_connection((srv.host, srv.port), timeout=3) as s:
        # an MQTT v5 CONNECT in plaintext to the TLS port: no CONNACK (0x20) comes back
        s.sendall(bytes([0x10, 0x10, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 30, 0, 0, 3]) + b"abc")
        s.settimeout(3)
        try:
            reply = s.recv(16)
        except OSError:
            reply = b""
        assert not reply.startswith(b"\x20")


def test_a_node_cannot_publish_as_another_node_nor_the_model(broker: Broker) -> None:
    codes: list[int] = []
    c = broker.paho("node-b", "acl-probe")
    c.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(rc.value)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for topic in (T.NodeTopics(SITE, "node-a").events, T.NodeTopics(SITE, "node-a").status,
                      T.model_topic(SITE), f"{T.HA_PREFIX}/sensor/{T.NodeTopics(SITE, 'node-a').ha_object()}/x/config",
                      T.NodeTopics(SITE, "node-b").events):
            c.publish(topic, b"{}", qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    assert codes[:4] == [0x87] * 4 and codes[4] < 0x80     # "not authorized", then success (0x10: no subscriber)


def test_add_node_then_remove_node_with_the_broker_running(broker: Broker) -> None:
    srv, dep = broker.server, broker.deployment
    # a node enrolled while the broker runs connects after the reload (SIGHUP)
    new = dep.add_node(SITE, "node-c").client
    srv.reload()
    deadline = time.monotonic() + 5
    while _connect(srv, new.user, new.password, cert=_files(new)) != "connected" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _connect(srv, new.user, new.password, cert=_files(new)) == "connected"
    # removed: before the reload the broker still knows it; the reload locks it out at once: its
    # certificate is revoked (the CRL is re-read) and its password and ACL are gone
    b, a = broker.identity("node-b"), broker.identity("node-a")
    kept = broker.server.deployment.root / "kept"
    kept.mkdir()
    shutil.copy2(b.cert_file, kept / "b.crt")
    shutil.copy2(b.key_file, kept / "b.key")
    dep.remove_node(SITE, "node-b")
    assert not dep.node_dir(SITE, "node-b").exists()
    assert _connect(srv, b.user, b.password, cert=(kept / "b.crt", kept / "b.key")) == "connected"
    srv.reload()
    time.sleep(0.5)
    assert _connect(srv, b.user, b.password, cert=(kept / "b.crt", kept / "b.key")) == "no connection"
    assert _connect(srv, a.user, a.password, cert=(kept / "b.crt", kept / "b.key")) == "no connection"
    assert _connect(srv, b.user, b.password, cert=_files(a)) == "Not authorized"
    srv.restart()                                                  # and so it stays
    assert _connect(srv, a.user, a.password, cert=(kept / "b.crt", kept / "b.key")) == "no connection"
    assert _connect(srv, a.user, a.password, cert=_files(a)) == "connected"


@pytest.fixture
def plaintext_broker() -> Iterator[Mosquitto]:
    require("mosquitto")
    root = make_root("mailpulse-mqtt-plain-")
    server = Mosquitto.lab(root, nodes=[(SITE, "node-a")], plaintext=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_plaintext_only_when_asked_for(plaintext_broker: Mosquitto) -> None:
    srv = plaintext_broker
    conf = srv.deployment.mosquitto_conf.read_text()
    assert f"listener {srv.plaintext_port}" in conf and "PLAINTEXT" in conf
    a = srv.node(SITE, "node-a").client
    assert _connect(srv, a.user, a.password, cert=None, tls=False, port=srv.plaintext_port) == "connected"
    assert _connect(srv, a.user, "wrong", cert=None, tls=False, port=srv.plaintext_port) == "Not authorized"
    # a node config must say tls = false (or mqtt://) to use it; without it the node speaks TLS
    base = {"node": {"id": "node-a", "site": SITE}, "mqtt": {"host": srv.host, "port": srv.plaintext_port}}
    cfg, errors = validate_node(base, SecretSource({}), local=False)
    assert cfg is not None and cfg.mqtt.tls, errors
    plain = {**base, "mqtt": {"url": f"mqtt://{srv.host}:{srv.plaintext_port}", "username": a.user}}
    cfg, errors = validate_node(plain, SecretSource({"mqtt_password": a.password}), local=False)
    assert cfg is not None and not cfg.mqtt.tls, errors
    sink = MqttSink(SITE, "node-a", cfg.mqtt, Spool(srv.deployment.root / "spool.db"))
    sink.start()
    try:
        assert sink.wait_connected(10), sink.stats.last_error
    finally:
        sink.close(2)
