"""The node's side of the route intervals: every delivery it scores is fed to its core with its
route id and latency, and the core's ``below``/``above`` flags go into the delivery's payload.

A scorer core with route intervals (R > 0, read from the core's ``PARAMS.ROUTES_LOG2`` by
``identify()``, never assumed from the config) keeps a lower and an upper latency bound per route id
and flags each event against them (:func:`mailpulse.hdl.reference.route_intervals`).  The node feeds
it with the rules the collector's tracker follows (:mod:`mailpulse.routes`,
:mod:`mailpulse.collector.intervals`), so for this node's routes the flags equal the tracker's bit for
bit:

* a delivery's route is ``site/node|relay`` by ``[relays] names`` (:func:`~mailpulse.routes.route_name`),
  its latency the Q8.8 ``log2(microseconds)`` of its delay (:func:`~mailpulse.routes.delivery_latency`);
* route ids are given out in the order routes first deliver, from a table of R
  (:class:`~mailpulse.routes.RouteTable`); a route's first delivery seeds both of its bounds with
  ``route_seed(latency << ADAPT_FRAC)`` (``ROUTE_BOUND`` writes, before the batch is scored) and is
  scored with :data:`~mailpulse.hdl.reference.NO_ROUTE`: no flag, no update, as the tracker's first
  delivery has no interval yet;
* every other event - not a delivery, no relay (``relay=none``), a delay the payload does not carry as
  a number, a route that found the table full (counted in ``untracked``) - is scored with
  ``NO_ROUTE`` and carries no flags.

The route registers (the route fields of ``ADAPT``) are committed with every model
the node loads (:meth:`RouteFeed.load`); a commit leaves the bounds alone (``ROUTE_BOUND`` is live
state, :mod:`mailpulse.hdl.regmap`), so after a model reload the table and the bounds carry on.  A
node that restarts starts with an empty table and reseeds each route on its first delivery (a
seed overwrites whatever bounds the core still held).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.reference import ADAPT_FRAC, NO_ROUTE, RouteConfig, ScoreResult, route_seed
from mailpulse.host_bridge.scorer import Scorer

from mailpulse.routes import RelayNames, RouteTable, delivery_latency, route_name

from .events import DeliveryEvent, Event

__all__ = ["SAVE_FORMAT", "RouteFeed", "core_routes", "route_feed"]

#: The ``format`` of a saved route table (:meth:`RouteFeed.save`).
SAVE_FORMAT = "mailpulse-route-intervals-1"

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def core_routes(scorer: Scorer) -> int:
    """R of the scorer's core, as its ``PARAMS`` register says (``identify()``, which also checks the
    core is the set the host expects).  A host that expects no routes does not ask (0): its core is
    left as it was before route intervals existed."""
    if not scorer.params.r:
        return 0
    return int(scorer.identify().params.r)


def route_feed(scorer: Scorer | None, site: str, node: str, cfg: RouteConfig | None,
               names: RelayNames | None = None) -> tuple[RouteFeed | None, str | None]:
    """The route feed of a scorer, as ``node run`` and ``node replay`` both set it up: (feed, problem).

    No feed for no scorer (the reference model in process) or a core without routes (:func:`core_routes`);
    for a core with routes but no route registers (``cfg`` None) the problem is one sentence and its
    deliveries are scored without their routes."""
    r = core_routes(scorer) if scorer is not None else 0
    if not r or scorer is None:
        return None, None
    if cfg is None:
        return None, (f"the core has {r} route intervals but no route registers were given: "
                      "deliveries are scored without their routes")
    return RouteFeed(scorer, site, node, r, cfg, names), None


class RouteFeed:
    """Feeds a core with routes (see the module docstring).

    Parameters
    ----------
    scorer : Scorer
        The node's scorer; its core has ``routes`` > 0 route intervals.
    site, node : str
        The node's identity (the routes' names).
    routes : int
        R, the size of the route table.
    cfg : RouteConfig
        The route registers committed with each model (``mailpulse.routes.ROUTE_CONFIG``).
    names : RelayNames
        ``[relays] names``.

    Attributes
    ----------
    table : the route ids
    fed : deliveries scored with a route id (they carry flags)
    seeded : routes seeded on their first delivery
    """

    def __init__(self, scorer: Scorer, site: str, node: str, routes: int, cfg: RouteConfig,
                 names: RelayNames | None = None) -> None:
        if routes < 1:
            raise ValueError(f"a route feed needs a core with routes, not R = {routes}")
        if not cfg.enable:
            raise ValueError("the node's route registers must have enable=1")
        self.scorer, self.site, self.node, self.cfg = scorer, site, node, cfg
        self.names = names or RelayNames()
        self.table = RouteTable(routes)
        self.fed = self.seeded = self.restored = 0
        self._relay_names: dict[str | None, str] = {}

    def load(self, model: Any) -> None:
        """Load ``model`` (a ``CoreConfig``) with the route registers and commit (bounds kept)."""
        self.scorer.load_model(model, routes=self.cfg)

    def inputs(self, batch: Sequence[Event]) -> tuple[IntArray, IntArray, BoolArray]:
        """(route ids, Q8.8 latencies, carries flags) of a batch; new routes seeded on the way."""
        n = len(batch)
        ids = np.full(n, NO_ROUTE, dtype=np.int64)
        lats = np.zeros(n, dtype=np.int64)
        flagged = np.zeros(n, dtype=bool)
        for i, e in enumerate(batch):
            # no relay: Postfix's relay=none, or a relay [relays] names calls "none" (the collector's
            # route of relay-less deliveries, which the node does not feed)
            if not isinstance(e, DeliveryEvent):
                continue
            relay = self._relay_names.get(e.relay)
            if relay is None:
                if len(self._relay_names) >= 4096:      # a bounded cache: Postfix spells few relays
                    self._relay_names.clear()
                relay = self._relay_names[e.relay] = self.names.name(e.relay)
            if relay == "none":
                continue
            v = delivery_latency(e.delay)
            if v is None:
                continue
            route = route_name(self.site, e.node, relay)
            rid = self.table.get(route)
            if rid is None:
                rid = self.table.add(route)
                if rid is None:          # the table is full: untracked (counted by the table)
                    continue
                seed = route_seed(v << ADAPT_FRAC)
                self.scorer.seed_route(rid, seed, seed)
                self.seeded += 1
                continue
            ids[i], lats[i], flagged[i] = rid, v, True
        self.fed += int(flagged.sum())
        return ids, lats, flagged

    def score(self, batch: Sequence[Event], x: IntArray, tags: IntArray) -> tuple[ScoreResult, BoolArray]:
        """Score a batch's core inputs ``x`` with its route events; (result, carries flags).

        A batch that fails to score is not spooled (its source reads it again): the routes it added
        to the table are taken out again and its counts undone, so the retry seeds them afresh and
        the node still sees each delivery once, like the collector."""
        n0, counts = len(self.table), (self.fed, self.seeded, self.table.untracked)
        try:
            ids, lats, flagged = self.inputs(batch)
            r = self.scorer.score_batch(x, tags, routes=ids, latencies=lats)
            if r.below is None or r.above is None:
                raise RuntimeError(f"the {self.scorer.backend} scorer returned no route flags")
        except BaseException:
            for route in [k for k, v in self.table.ids.items() if v >= n0]:
                del self.table.ids[route]
            self.fed, self.seeded, self.table.untracked = counts
            raise
        return r, flagged

    def status(self) -> dict[str, int]:
        """Counts for the node's status: routes tracked, R, deliveries fed, routes seeded or restored,
        untracked."""
        return {"tracked": len(self.table), "capacity": self.table.max_routes, "fed": self.fed,
                "seeded": self.seeded, "restored": self.restored, "untracked": self.table.untracked}

    def save(self, path: Path) -> None:
        """Write the route table and the core's bounds of its routes (atomically) for the next start."""
        lower, upper = self.scorer.route_bounds()
        routes = sorted(self.table.ids.items(), key=lambda kv: kv[1])
        doc = {"format": SAVE_FORMAT, "capacity": self.table.max_routes,
               "routes": [[name, int(lower[rid]), int(upper[rid])] for name, rid in routes]}
        tmp = path.with_name(path.name + ".new")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, path)

    def restore(self, path: Path) -> int:
        """Seed the routes saved by :meth:`save` back into the core and the table; the file is removed
        (a later crash must not bring back these bounds).  A file that is not usable is one logged
        sentence and removed; the routes are then reseeded on their first deliveries."""
        if not path.exists():
            return 0
        try:
            doc = json.loads(path.read_text())
            routes = doc["routes"] if isinstance(doc, dict) and doc.get("format") == SAVE_FORMAT else None
            if routes is None or doc.get("capacity") != self.table.max_routes or not isinstance(routes, list):
                raise ValueError(f"it is not a route table for a core of {self.table.max_routes} routes")
            if len(routes) > self.table.max_routes or len(self.table):
                raise ValueError("it holds more routes than the core has")
            top = route_seed(1 << 62)
            for entry in routes:
                if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                        or not all(type(v) is int and 0 <= v <= top for v in entry[1:])):
                    raise ValueError(f"the entry {str(entry)[:80]!r} is not [route, lower, upper]")
            for rid, (name, lo, up) in enumerate(routes):
                self.scorer.seed_route(rid, lo, up)
                self.table.restore(name, rid)
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.table.ids.clear()
            log.error("the saved route intervals %s are not used (%s): each route is seeded afresh on its "
                      "first delivery", path, e)
            path.unlink(missing_ok=True)
            return 0
        path.unlink(missing_ok=True)
        self.restored = len(routes)
        return self.restored
