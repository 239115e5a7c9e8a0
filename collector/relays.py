"""Relay names and recipient domains: what metrics labels and alerts show instead of raw addresses.

A delivery names its next hop as Postfix writes it, ``host[ip]:port`` (``relay=none`` when no
connection was made); a probe hop names the relay that stamped ``Received:``.  The collector's
``[relays] names`` map gives them names: ``127.0.0.1:47627`` becomes ``relay2``.  Lookup is most
specific first: ``host:port``, ``ip:port``, ``host``, ``ip``.  An unnamed relay shows as
``host:port`` (``ip:port`` when Postfix had no name for it), so one relay is one label value however
Postfix spelled it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["RelayNames", "domain_of", "split_relay"]

# host[ip]:port, host[ip], [ip]:port, host:port, host, and IPv6 inside the brackets
_POSTFIX = re.compile(r"^(?P<host>[^\[\]\s]*)(?:\[(?P<ip>[^\]\s]*)\])?(?::(?P<port>\d{1,5}))?$")


def split_relay(raw: str) -> tuple[str, str, str]:
    """(host, ip, port) of a Postfix ``relay=`` value (empty strings where absent)."""
    m = _POSTFIX.match(raw.strip())
    if m is None:
        return raw.strip().lower(), "", ""
    host, ip, port = (m.group("host") or "").lower(), (m.group("ip") or "").lower(), m.group("port") or ""
    if not ip and host.count(":") == 0 and re.fullmatch(r"[\d.]+", host):
        ip = host
    return host, ip, port


def domain_of(address: str) -> str:
    """The domain of a recipient address, lower case (``""`` without one)."""
    a = address.strip().strip("<>")
    return a.rpartition("@")[2].lower().rstrip(".") if "@" in a else ""


class RelayNames:
    """Resolves relay addresses to the configured names."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.names = {k.lower(): v for k, v in (names or {}).items()}

    def configured(self, raw: str | None) -> str | None:
        """The configured name of a relay, or None when the map does not name it."""
        if not raw or raw.strip().lower() == "none" or not self.names:
            return None
        host, ip, port = split_relay(raw)
        ip_key = f"[{ip}]" if ":" in ip else ip
        keys = [f"{host}:{port}" if port else "", f"{ip_key}:{port}" if port and ip else "", host, ip, ip_key,
                raw.strip().lower(), "" if port else f"{host}:25"]   # the correlator drops ':25'
        for k in keys:
            if k and k in self.names:
                return self.names[k]
        return None

    def name(self, raw: str | None) -> str:
        """The name of a relay (``none`` for Postfix's ``relay=none`` or no relay)."""
        if not raw or raw.strip().lower() == "none":
            return "none"
        known = self.configured(raw)
        if known is not None:
            return known
        host, ip, port = split_relay(raw)
        ip_key = f"[{ip}]" if ":" in ip else ip
        shown = host if host and host != ip else ip_key
        return f"{shown}:{port}" if port else (shown or raw.strip())
