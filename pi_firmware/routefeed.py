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

The route registers (``ADAPT.ROUTES``, ``BETA_EXP``, ``ROUTE_STEP_EXP``) are committed with every model
the node loads (:meth:`RouteFeed.load`); a commit leaves the bounds alone (``ROUTE_BOUND`` is live
state, :mod:`mailpulse.hdl.regmap`), so after a model reload the table and the bounds carry on.  A
node that restarts starts with an empty table and reseeds each route on its first delivery (a
seed overwrites whatever bounds the core still held).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.reference import ADAPT_FRAC, NO_ROUTE, RouteConfig, ScoreResult, route_seed
from mailpulse.host_bridge.scorer import Scorer

from mailpulse.routes import RelayNames, RouteTable, delivery_latency, route_name

from .events import DeliveryEvent, Event

__all__ = ["RouteFeed", "core_routes"]

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
        The route registers committed with each model (the collector's ``ROUTE_CONFIG``).
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
        self.fed = self.seeded = 0

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
            if not isinstance(e, DeliveryEvent) or not e.relay or e.relay.strip().lower() == "none":
                continue
            v = delivery_latency(e.delay)
            if v is None:
                continue
            route = route_name(self.site, e.node, e.relay, self.names)
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
        """Score a batch's core inputs ``x`` with its route events; (result, carries flags)."""
        ids, lats, flagged = self.inputs(batch)
        r = self.scorer.score_batch(x, tags, routes=ids, latencies=lats)
        if r.below is None or r.above is None:
            raise RuntimeError(f"the {self.scorer.backend} scorer returned no route flags")
        return r, flagged

    def status(self) -> dict[str, int]:
        """Counts for the node's status: routes tracked, R, deliveries fed, routes seeded, untracked."""
        return {"tracked": len(self.table), "capacity": self.table.max_routes, "fed": self.fed,
                "seeded": self.seeded, "untracked": self.table.untracked}
