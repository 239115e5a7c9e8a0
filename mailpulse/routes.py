"""Routes of delivery latency, declared once for the node and the collector: relay names, the route
of a delivery, the latency a route interval takes, and the bounded table of route ids.

A **route** is the observing node and the delivery's next hop by its ``[relays] names`` name:
``site/node|relay`` (:func:`route_name`).  A delivery names its next hop as Postfix writes it,
``host[ip]:port`` (``relay=none`` when no connection was made); a probe hop names the relay that
stamped ``Received:``.  ``[relays] names`` gives them names: ``127.0.0.1:47627`` becomes ``relay2``.
Lookup is most specific first: ``host:port``, ``ip:port``, ``host``, ``ip``.  An unnamed relay shows as
``host:port`` (``ip:port`` when Postfix had no name for it), so one relay is one label value however
Postfix spelled it.

The route intervals (:func:`mailpulse.hdl.reference.route_intervals`) take a delivery's latency as
the unsigned Q8.8 ``log2(microseconds)`` of :func:`mailpulse.features.route_latency`, and a route as
an id from a bounded table (:class:`RouteTable`): ids are given out in the order routes first
deliver; a route that finds the table full is not tracked and is counted.  The collector's tracker
(:mod:`mailpulse.collector.intervals`) and the node's core (:mod:`mailpulse.pi_firmware.routefeed`)
both follow these rules, so their flags agree bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from mailpulse.features import route_latency
from mailpulse.hdl.reference import RouteConfig

__all__ = ["DELAY_MAX_S", "ROUTE_CONFIG", "RelayNames", "RouteTable", "delivery_latency", "domain_of", "route_name",
           "split_relay"]

#: The route registers of the collector's tracker and of every node's core (the node commits them with
#: each model, so both compute the same flags).  ``ratio`` 19: a miss widens a bound 19 times as much as a hit
#: narrows it, 1/20 misses per side, nominal coverage 0.9.  ``step_exp`` 10: 4 Q8.8 counts
#: (``2**(4/256)``, 1.1 % of the latency) narrower per hit, 76 counts (23 %) wider per miss; a slow relay
#: that multiplies its latency by 100 (1700 counts) misses about 22 times before the band has followed
#: it.  Chosen by measurement (docs/benchmarks.md, 2026-12-05): on the fault bench's 80 s normal day
#: ``step_exp`` 8, 9, 10, 11 covered 0.792, 0.879, 0.903, 0.901 of the same deliveries (a short run
#: needs steps that settle within about 100 deliveries per route), on 6000 lognormal deliveries
#: 0.887 - 0.889, 0.893 - 0.895, 0.897, 0.898 - 0.899.
ROUTE_CONFIG = RouteConfig(enable=1, ratio=19, step_exp=10)

#: Largest delay (seconds, either sign) an event payload carries (``mailpulse.payload``'s seconds bound):
#: a delivery with a larger one is quarantined by the collector, so it is no route latency anywhere.
DELAY_MAX_S = 1e9

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


def route_name(site: object, node: object, relay_name: str) -> str:
    """The route of a delivery observed by ``site/node`` through the relay named ``relay_name``
    (:meth:`RelayNames.name`): ``site/node|relay name``."""
    return f"{site}/{node}|{relay_name}"


def delivery_latency(delay: object) -> int | None:
    """The Q8.8 latency (:func:`~mailpulse.features.route_latency`) of a delivery's ``delay`` as its
    payload carries it, or None when it carries no number there: absent, not a number (a bool is none),
    NaN or infinite (written as null), or beyond :data:`DELAY_MAX_S` (the payload is refused).  Zero,
    negative and tiny delays give the floor's value, like ``route_latency``."""
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        return None
    d = float(delay)
    if not math.isfinite(d) or abs(d) > DELAY_MAX_S:
        return None
    return route_latency(d)


class RouteTable:
    """Route ids by route name, given out in the order of first delivery, at most ``max_routes``.

    Attributes
    ----------
    ids : route name -> id (``0..max_routes-1``)
    untracked : deliveries on routes that found the table full
    """

    def __init__(self, max_routes: int) -> None:
        if max_routes < 1:
            raise ValueError(f"max_routes {max_routes} must be at least 1")
        self.max_routes = max_routes
        self.ids: dict[str, int] = {}
        self.untracked = 0

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, route: str) -> int | None:
        """The route's id, None when it has none."""
        return self.ids.get(route)

    def add(self, route: str) -> int | None:
        """Give a new route the next id; None (and one more ``untracked``) when the table is full."""
        if len(self.ids) >= self.max_routes:
            self.untracked += 1
            return None
        rid = self.ids[route] = len(self.ids)
        return rid

    def restore(self, route: str, rid: int) -> None:
        """Take back a route saved with its id (ids in order, no gaps)."""
        if rid != len(self.ids):
            raise ValueError(f"route {route!r} has id {rid}, expected {len(self.ids)}: the saved table has a gap")
        self.ids[route] = rid
