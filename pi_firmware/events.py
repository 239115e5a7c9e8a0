"""Events the node emits: one per Postfix delivery attempt, delivered message or probe.

Every event has a unique, *deterministic* id: a hash of the node id and the fields that identify
what was observed (for a delivery: queue id, recipient, log timestamp, status).  Reading the same
log line twice (a restart before the follower's position was saved, a replay) gives the same id,
so the collector's de-duplication by id makes replays idempotent.

The JSON payload (:meth:`Event.payload`) carries the feature schema version, the kind, the id,
the raw fields, the fixed-point feature vector ``x`` and, once scored, ``score``, ``anomaly``
and ``argmax``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from mailpulse import features as F


def event_id(*parts: object) -> str:
    """Deterministic 128-bit id (32 hex digits) of the identifying parts of an event."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogateescape"), digest_size=16)
    return h.hexdigest()


def iso_utc(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds (``2026-11-26T10:00:00.123Z``), or ``None``."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Scored:
    """The scorer's verdict on one event."""

    score: int
    anomaly: bool
    argmax: int


@dataclass(slots=True)
class Event:
    """Base of every event.

    Attributes
    ----------
    ts : float
        When it happened (Unix seconds, UTC).
    node : str
        Id of the node that observed it.
    """

    KIND: ClassVar[str] = ""

    ts: float
    node: str
    x: list[int] | None = field(default=None, init=False)
    scored: Scored | None = field(default=None, init=False)

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def id(self) -> str:  # overridden
        raise NotImplementedError

    def raw_features(self) -> dict[str, float | None]:  # overridden
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:  # overridden
        raise NotImplementedError

    def raw_row(self) -> tuple[float, ...]:
        """Raw features in vector order, NaN where missing (the pipeline's batch input)."""
        raw = self.raw_features()
        nan = math.nan
        return tuple(nan if (v := raw.get(n)) is None else float(v) for n in F.NAMES)

    def vector(self) -> list[int]:
        """The fixed-point feature vector (computed once, then cached in ``x``)."""
        if self.x is None:
            self.x = F.encode(self.raw_features(), self.KIND)
        return self.x

    def payload(self) -> dict[str, Any]:
        """The JSON payload (schema version, id, kind, fields, vector, verdict)."""
        out: dict[str, Any] = {
            "schema": F.SCHEMA_VERSION,
            "kind": self.KIND,
            "id": self.id,
            "node": self.node,
            "ts": iso_utc(self.ts),
            "fields": self.fields(),
            "x": self.vector(),
        }
        if self.scored is not None:
            out["score"] = self.scored.score
            out["anomaly"] = self.scored.anomaly
            out["argmax"] = self.scored.argmax
            out["argmax_feature"] = F.NAMES[self.scored.argmax] if 0 <= self.scored.argmax < F.D else None
        return out


@dataclass(slots=True)
class DeliveryEvent(Event):
    """One Postfix delivery attempt to one recipient (joined with qmgr and cleanup lines).

    Times are seconds as Postfix logs them; ``None`` where the line or the join had no value.
    """

    KIND: ClassVar[str] = "delivery"

    # pi_firmware.postfix constructs these positionally on its hot path: keep the field order.

    host: str = ""
    queue_id: str = ""
    agent: str = ""                 # smtp, lmtp, virtual, local, pipe, error, ...
    recipient: str = ""
    status: str = ""                # sent, deferred, bounced, expired
    relay: str | None = None
    delay: float | None = None
    delays: tuple[float, float, float, float] | None = None
    dsn: str | None = None
    sender: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    message_id: str | None = None
    stamp: str = ""                 # the log line's timestamp text (part of the id)

    @property
    def id(self) -> str:
        return event_id(self.node, self.KIND, self.host, self.queue_id, self.recipient, self.stamp, self.status,
                        self.dsn)

    def raw_features(self) -> dict[str, float | None]:
        d = self.delays
        return {
            "delay_total_ms": None if self.delay is None else self.delay * 1000.0,
            "delay_queue_ms": None if d is None else (d[0] + d[1]) * 1000.0,
            "delay_connect_ms": None if d is None else d[2] * 1000.0,
            "delay_transfer_ms": None if d is None else d[3] * 1000.0,
            "size_bytes": None if self.size is None else float(self.size),
            "outcome": float(F.OUTCOMES.get(self.status, 3)),
            "recipients": None if self.nrcpt is None else float(self.nrcpt),
        }

    def raw_row(self) -> tuple[float, ...]:
        # the hot path of replay: no dict, same values as raw_features()
        nan = math.nan
        d = self.delays
        size = nan if self.size is None else float(self.size)
        nrcpt = nan if self.nrcpt is None else float(self.nrcpt)
        outcome = float(F.OUTCOMES.get(self.status, 3))
        total = nan if self.delay is None else self.delay * 1000.0
        if d is None:
            return (total, nan, nan, nan, size, outcome, nrcpt, nan)
        return (total, (d[0] + d[1]) * 1000.0, d[2] * 1000.0, d[3] * 1000.0, size, outcome, nrcpt, nan)

    def fields(self) -> dict[str, Any]:
        return {
            "host": self.host, "queue_id": self.queue_id, "agent": self.agent, "to": self.recipient,
            "status": self.status, "relay": self.relay, "delay": self.delay,
            "delays": list(self.delays) if self.delays is not None else None, "dsn": self.dsn,
            "from": self.sender, "size": self.size, "nrcpt": self.nrcpt, "message_id": self.message_id,
        }


@dataclass(slots=True)
class MessageEvent(Event):
    """One delivered message (Maildir watcher or ``mailpulse inspect``): hops and render features.

    ``hops`` and ``mime`` are the JSON-ready dicts of :mod:`pi_firmware.received` and
    :mod:`pi_firmware.mime`.
    """

    KIND: ClassVar[str] = "message"

    key: str = ""                   # what identifies the message (Maildir unique name, file name)
    message_id: str | None = None
    size: int = 0
    recipients: int = 0
    hops: list[dict[str, Any]] = field(default_factory=list)
    mime: dict[str, Any] = field(default_factory=dict)
    mailbox_delay_s: float | None = None    # file time minus the newest hop's time (Maildir only)

    @property
    def id(self) -> str:
        return event_id(self.node, self.KIND, self.key, self.message_id, self.size)

    def raw_features(self) -> dict[str, float | None]:
        times = [h["ts"] for h in self.hops if h.get("ts") is not None]
        delays = [h["delay_s"] for h in self.hops if h.get("delay_s") is not None]
        pixels = sum(int(i.get("pixels") or 0) for i in self.mime.get("images", []))
        return {
            "delay_total_ms": (times[-1] - times[0]) * 1000.0 if len(times) >= 2 else None,
            "delay_queue_ms": max(delays) * 1000.0 if delays else None,
            "size_bytes": float(self.size),
            "outcome": 0.0,
            "recipients": float(self.recipients),
            "image_pixels": float(pixels),
        }

    def fields(self) -> dict[str, Any]:
        hops = [{k: v for k, v in h.items() if k != "ts"} for h in self.hops]
        return {"key": self.key, "message_id": self.message_id, "size": self.size,
                "recipients": self.recipients, "hops": hops, "mime": self.mime,
                "mailbox_delay_s": self.mailbox_delay_s}


__all__ = ["DeliveryEvent", "Event", "MessageEvent", "Scored", "event_id", "iso_utc"]
