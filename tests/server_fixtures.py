"""pytest fixtures that start real servers on loopback (loaded by ``tests/conftest.py``).

The servers themselves are in :mod:`mailpulse.lab.servers` (also used by the demo); these
fixtures pick the scope, skip with the reason when a daemon is not installed, and always stop
the processes, also when a test fails.  The broker is the one ``mailpulse collector init``
configures (TLS with client certificates, passwords, the per-node ACL): the tests run the secure
set-up, not a special one.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mailpulse.collector.pki import CertificateAuthority
from mailpulse.collector.provision import Client, Deployment
from paho.mqtt.enums import CallbackAPIVersion

from mailpulse.config.collector import WebSettings
from mailpulse.lab.relays import MangleRelay
from mailpulse.lab.servers import MailChain, Mosquitto, make_root, missing_tools

SITE = "lab"


@dataclass
class Broker:
    """A running Mosquitto configured by ``collector init``: nodes ``node-a``, ``node-b`` of site
    ``lab``; consumers ``collector``, ``viewer`` (recorders) and ``collector-2`` (a second collector
    of a share group)."""

    server: Mosquitto
    site: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ca_file(self) -> str:
        return str(self.server.ca_file)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def deployment(self) -> Deployment:
        return self.server.deployment

    def identity(self, name: str) -> Client:
        """The MQTT identity of node ``name`` of the site, or of the consumer user ``name``."""
        if name.startswith("node-"):
            return self.server.node(self.site, name).client
        return self.server.client(name)

    @property
    def users(self) -> dict[str, str]:
        """Name -> password (nodes by node id)."""
        return {n: self.identity(n).password for n in ("node-a", "node-b", "collector", "viewer", "collector-2")}

    def mqtt_doc(self, name: str) -> dict[str, Any]:
        """The ``[mqtt]`` keys of a config connecting as ``name`` (its password is ``users[name]``)."""
        return self.identity(name).mqtt_doc(self.url)

    def paho(self, name: str, client_id: str = "") -> mqtt.Client:
        """A paho client (MQTT v5) with ``name``'s credentials and TLS, not connected."""
        ident = self.identity(name)
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(ident.user, ident.password)
        c.tls_set(ca_certs=str(ident.ca_file), certfile=str(ident.cert_file), keyfile=str(ident.key_file))
        return c


def require(*tools: str, root: bool = False) -> None:
    """Skip the test, naming what is missing."""
    reasons = missing_tools(*tools, root=root)
    if reasons:
        pytest.skip("; ".join(reasons))


@pytest.fixture
def broker() -> Iterator[Broker]:
    """Mosquitto as ``collector init`` writes it (see :class:`Broker`)."""
    require("mosquitto")
    root = make_root("mailpulse-mqtt-")
    server = Mosquitto.lab(root, nodes=[(SITE, "node-a"), (SITE, "node-b")], consumers=["viewer", "collector-2"])
    try:
        server.start()
        yield Broker(server, SITE)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MailLab:
    """The mail chain and the recompressing relay in front of its ``lossy.test`` domain."""

    chain: MailChain
    mangle: Any                      # MangleRelay, or None when aiosmtpd is not installed

    def need_relay(self) -> Any:
        """The relay, or skip the test naming what is missing."""
        if self.mangle is None:
            pytest.skip("aiosmtpd is not installed (the recompressing/slow/STARTTLS relay)")
        return self.mangle


@pytest.fixture(scope="module")
def mail_lab() -> Iterator[MailLab]:
    """Postfix edge -> Postfix mx -> Maildir <- Dovecot, plus a recompressing relay for ``lossy.test``.

    The relay (``lab.mangle``, aiosmtpd) recompresses images to JPEG quality 30; mail to
    ``probe.test`` bypasses it.  Without aiosmtpd, ``lossy.test`` goes straight to the mx and
    ``lab.need_relay()`` skips the tests that need the relay.
    """
    require("postfix", "dovecot", root=True)

    relay: Any = None
    if importlib.util.find_spec("aiosmtpd") is not None:
        relay = MangleRelay(quality=30)
    chain = MailChain(extra_relay=(relay.host, relay.port) if relay else None)
    try:
        if relay is not None:
            relay.next_hop = (chain.mx.host, chain.mx.port)
            relay.start()
        chain.start()
        yield MailLab(chain, relay)
    finally:
        if relay is not None:
            relay.stop()
        chain.cleanup()


def secure_web(directory: Path, **overrides: Any) -> tuple[WebSettings, Path]:
    """``[web]`` settings as ``collector init`` makes them (TLS from a fresh CA, a dashboard and a
    metrics password), any free port, with ``overrides``; and the CA file that verifies it."""
    ca = CertificateAuthority.create("mailpulse test CA", days=2)
    ca.save(directory / "ca.crt", directory / "ca.key")
    ca.issue_server(["127.0.0.1", "localhost"], days=2).save(directory / "web.crt", directory / "web.key")
    w = WebSettings(port=0, cert_file=str(directory / "web.crt"), key_file=str(directory / "web.key"),
                    password=secrets.token_urlsafe(16), metrics_password=secrets.token_urlsafe(16))
    return w.model_copy(update=overrides), directory / "ca.crt"
