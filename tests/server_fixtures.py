"""pytest fixtures that start real servers on loopback (loaded by ``tests/conftest.py``).

The servers themselves are in :mod:`mailpulse.lab.servers` (also used by the demo); these
fixtures pick the scope, skip with the reason when a daemon is not installed, and always stop
the processes, also when a test fails.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mailpulse import topics as T
from mailpulse.lab.relays import MangleRelay
from mailpulse.lab.servers import MailChain, Mosquitto, make_root, missing_tools

SITE = "lab"


@dataclass
class Broker:
    """A running Mosquitto with two node users and a collector user (ACL from mailpulse.topics)."""

    server: Mosquitto
    site: str
    users: dict[str, str]

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls_port(self) -> int:
        return self.server.tls_port

    @property
    def ca_file(self) -> str:
        return str(self.server.ca_file)


def require(*tools: str, root: bool = False) -> None:
    """Skip the test, naming what is missing."""
    reasons = missing_tools(*tools, root=root)
    if reasons:
        pytest.skip("; ".join(reasons))


@pytest.fixture
def broker() -> Iterator[Broker]:
    """Mosquitto with password file, ACL and a TLS listener; users ``node-a``, ``node-b``, ``collector``."""
    require("mosquitto", "openssl")
    root = make_root("mailpulse-mqtt-")
    users = {"node-a": "pw-a", "node-b": "pw-b", "collector": "pw-c"}
    acl = T.node_acl(SITE, "node-a") + T.node_acl(SITE, "node-b") + T.collector_acl("collector")
    server = Mosquitto(root, users, acl, tls=True)
    try:
        server.start()
        yield Broker(server, SITE, users)
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
