"""Fleet awareness and model updates: what a node learns from its site's retained topics.

Fleet
-----
Every node publishes a retained ``status`` every heartbeat (see :mod:`mailpulse.pi_firmware.mqtt`) and
subscribes to the status of every node of its site.  A node is *live* while its last status says
``online`` and is younger than ``timeout_s`` (default three heartbeats); the broker's last will
turns a vanished node's status into ``offline`` after 1.5 keepalives, and a node whose heartbeats
simply stop is dropped after ``timeout_s``.  The probe routes are shared among live nodes by
rendezvous (highest random weight) hashing: route ``r`` belongs to the live node ``n`` with the
largest ``H(r, n)``.  Every node computes the same owner from the same view, a node that joins or
leaves moves only the routes it wins or owned, and a dead node's routes move to the others as soon
as it stops being live - within one heartbeat timeout.

Model updates
-------------
The trainer publishes the site's model file, retained, on ``mailpulse/v1/<site>/model``.  The
node validates it with :func:`mailpulse.modelfile.load_model` (format, checksum, parameters that
fit the core, feature schema version), then loads it into the scorer (shadow bank, commit) and
reports its version in status.  An invalid file is refused with the reason kept in status; the
running model stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailpulse import topics as T

from .quarantine import describe

__all__ = ["Fleet", "ModelUpdater", "NodeView", "assign_routes", "route_owner"]

log = logging.getLogger(__name__)


class _Msg(Protocol):
    topic: str
    payload: bytes
    retain: bool


def _weight(route: str, node: str) -> int:
    h = hashlib.blake2b(f"{route}\x1f{node}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


def route_owner(route: str, nodes: Iterable[str]) -> str | None:
    """The node that owns ``route`` among ``nodes`` (rendezvous hashing); None when no node."""
    best: tuple[int, str] | None = None
    for n in nodes:
        w = (_weight(route, n), n)
        if best is None or w > best:
            best = w
    return best[1] if best else None


def assign_routes(routes: Sequence[str], nodes: Iterable[str]) -> dict[str, list[str]]:
    """Node -> the routes it owns (every live node appears, possibly with no route)."""
    nodes = sorted(set(nodes))
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for r in routes:
        o = route_owner(r, nodes)
        if o is not None:
            out[o].append(r)
    return out


@dataclass
class NodeView:
    node: str
    state: str
    last_seen: float
    status: dict[str, Any]


class Fleet:
    """This node's view of its site (fed with status messages from MQTT).

    Parameters
    ----------
    site, node : str
        This node.
    heartbeat_s : float
        Status period of every node.
    timeout_s : float, optional
        Age after which a node without a new status is dead (default ``3 * heartbeat_s``).
    clock : callable
        Wall clock (Unix seconds), replaceable in tests.
    """

    def __init__(self, site: str, node: str, heartbeat_s: float, timeout_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if heartbeat_s <= 0:
            raise ValueError("fleet heartbeat_s must be positive")
        self.site, self.node = site, node
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s if timeout_s is not None else 3.0 * heartbeat_s
        if self.timeout_s < heartbeat_s:
            raise ValueError("fleet timeout_s must be at least one heartbeat")
        self.clock = clock
        self._nodes: dict[str, NodeView] = {}
        self._lock = threading.Lock()

    @property
    def topic(self) -> str:
        return T.status_wildcard(self.site)

    def on_message(self, msg: _Msg) -> None:
        """Handler for ``status`` messages (use with :meth:`MqttSink.subscribe`)."""
        try:
            parsed = T.parse_topic(msg.topic)
            doc = json.loads(msg.payload.decode()) if msg.payload else {}
        except (ValueError, UnicodeDecodeError):
            return
        if parsed.channel != "status" or parsed.site != self.site or parsed.node is None:
            return
        if not isinstance(doc, dict):
            return
        self.update(parsed.node, doc, retained=bool(msg.retain))

    def update(self, node: str, status: dict[str, Any], retained: bool = False) -> None:
        """Record a node's status.  A live message counts as seen now; a retained one (replayed by
        the broker at subscribe time) as seen when it was written (its ``ts``)."""
        now = self.clock()
        seen = now
        if retained:
            try:
                seen = min(now, float(status.get("ts", 0.0)))
            except (TypeError, ValueError):
                seen = 0.0
        state = str(status.get("state", "offline"))
        with self._lock:
            self._nodes[node] = NodeView(node, state, seen, status)

    def live_nodes(self) -> list[str]:
        """Nodes that are live now; this node is always live for itself."""
        now = self.clock()
        with self._lock:
            live = {v.node for v in self._nodes.values()
                    if v.state == "online" and now - v.last_seen <= self.timeout_s}
        live.add(self.node)
        return sorted(live)

    def my_routes(self, routes: Sequence[str]) -> list[str]:
        """The routes this node probes now."""
        live = self.live_nodes()
        return [r for r in routes if route_owner(r, live) == self.node]

    def view(self) -> dict[str, Any]:
        """For the status document: live nodes and when each was last seen."""
        with self._lock:
            seen = {v.node: {"state": v.state, "age_s": round(self.clock() - v.last_seen, 1)}
                    for v in self._nodes.values()}
        return {"live": self.live_nodes(), "seen": seen}


class ModelUpdater:
    """Validates model files from the site's model topic and installs them.

    Parameters
    ----------
    install : callable
        ``install(data) -> version``: validates the model file's bytes (raising ``UserError`` or
        ``ValueError`` with the reason) and makes it the active model (e.g. loads it into the
        scorer's shadow bank and commits, or swaps the pipeline's score function).  Called on the
        MQTT network thread; it must do its own locking against the scoring thread.
    """

    def __init__(self, install: Callable[[bytes], str]) -> None:
        self.install = install
        self.version: str | None = None
        self.loaded_at: float | None = None
        self.error: str | None = None
        self.refused = 0
        self._last_digest: str | None = None

    def on_message(self, msg: _Msg) -> None:
        """Handler for the model topic."""
        if not msg.payload:  # a cleared retained topic: keep the running model
            return
        self.apply(bytes(msg.payload))

    def apply(self, data: bytes) -> bool:
        """Validate and install a model file's bytes; True when installed (or already active)."""
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._last_digest:
            return True  # the same retained model again (reconnect): nothing to do
        try:
            version = self.install(data)
        except Exception as e:  # any failure keeps the running model
            self.refused += 1
            self.error = f"model refused: {describe(e)}"
            log.error("%s", self.error)
            return False
        self.version = version or f"sha256:{digest[:12]}"
        self.loaded_at = time.time()
        self.error = None
        self._last_digest = digest
        log.info("model %s installed", self.version)
        return True

    def status(self) -> dict[str, Any]:
        return {"model_version": self.version, "model_loaded_at": self.loaded_at, "model_error": self.error,
                "models_refused": self.refused}
