"""Events the node emits: one per Postfix delivery attempt, delivered message or probe.

Every event has a unique, *deterministic* id: a hash of the node id and the fields that identify
what was observed.  For a delivery that is the log line itself (its whole text, so two distinct
attempts logged in the same second differ) plus the recipient (one ``expired`` line covers several
recipients) and an occurrence counter that tells byte-identical lines of the same second apart (see
:class:`mailpulse.pi_firmware.postfix.PostfixParser`).  Reading the same log line twice (a restart before the
follower's position was saved, a replay) gives the same id, so the collector's de-duplication by id
makes replays idempotent.

The JSON payload (:meth:`Event.payload`) carries the feature schema version, the kind, the id,
the raw fields, the fixed-point feature vector ``x`` and, once scored, ``score``, ``anomaly``
and ``argmax``.  :meth:`Event.payload_json` gives the same document already encoded (compact UTF-8
JSON); :class:`DeliveryEvent` writes it directly, without building the dicts (the replay's hot path),
and a test checks that it equals the encoding of :meth:`Event.payload`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring as _jstr
from typing import Any, ClassVar

from mailpulse import features as F


def event_id(*parts: object) -> str:
    """Deterministic 128-bit id (32 hex digits) of the identifying parts of an event."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogateescape"), digest_size=16)
    return h.hexdigest()


def _blake(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


_ISO_CACHE: dict[float, str] = {}


def iso_utc(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds (``2026-11-26T10:00:00.123Z``), or ``None`` (also for a time
    outside the years 1-9999, which ISO 8601 cannot write with four digits).

    Log timestamps repeat (many lines per second), so results are cached (a small, cleared cache).
    """
    if ts is None or not math.isfinite(ts):
        return None
    v = _ISO_CACHE.get(ts)
    if v is None:
        try:
            v = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        except (ValueError, OverflowError, OSError):
            return None
        if len(_ISO_CACHE) >= 4096:
            _ISO_CACHE.clear()
        _ISO_CACHE[ts] = v
    return v


#: One encoder for every payload (``json.dumps`` with options builds a new encoder per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj``.  Text read with ``surrogateescape`` (undecodable log bytes)
    keeps its lone surrogates as ``\\udcXX`` escapes, so the bytes are always valid UTF-8."""
    return _ENCODER.encode(obj).encode("utf-8", "backslashreplace")


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def _jopt(v: str | None) -> str:
    return "null" if v is None else str(_jstr(v))


def _jnum(v: float | None) -> str:
    # JSON has no NaN/Infinity: a non-finite number (a log field like "1e999") is written as null
    return "null" if v is None or not math.isfinite(v) else repr(float(v))


# Caches of the JSON text of values that repeat from event to event (host, agent, status, relay,
# dsn; delay values; vector components).  Each is cleared when it reaches _CACHE_MAX entries.
_CACHE_MAX = 65536
_STR_JSON: dict[str | None, str] = {None: "null"}
_NUM_JSON: dict[float | None, str] = {None: "null"}
_INT_TEXT: dict[int, str] = {}


def _cstr(v: str | None) -> str:
    r = _STR_JSON.get(v)
    if r is None:
        if len(_STR_JSON) >= _CACHE_MAX:
            _STR_JSON.clear()
            _STR_JSON[None] = "null"
        r = _STR_JSON[v] = _jopt(v)
    return r


def _cnum(v: float | None) -> str:
    r = _NUM_JSON.get(v)
    if r is None:
        if len(_NUM_JSON) >= _CACHE_MAX:
            _NUM_JSON.clear()
            _NUM_JSON[None] = "null"
        r = _NUM_JSON[v] = _jnum(v)   # NaN never hits the cache (NaN != NaN): it is just recomputed
    return r


def _ints(x: list[int]) -> str:
    c = _INT_TEXT
    try:
        return ",".join([c[v] for v in x])
    except KeyError:
        if len(c) >= _CACHE_MAX:
            c.clear()
        for v in x:
            c[v] = str(int(v))
        return ",".join([c[v] for v in x])


_FEATURE_JSON = tuple(_jstr(n) for n in F.NAMES)

# JSON fragments of field groups that repeat together (same relay, agent, status, dsn; same delays)
_GROUP_JSON: dict[tuple[str, str, str, str | None, str | None], tuple[str, str, str, str, str]] = {}
_DELAYS_JSON: dict[tuple[float, float, float, float] | None, str] = {None: "null"}


def _group(key: tuple[str, str, str, str | None, str | None]) -> tuple[str, str, str, str, str]:
    if len(_GROUP_JSON) >= _CACHE_MAX:
        _GROUP_JSON.clear()
    r = _GROUP_JSON[key] = (_cstr(key[0]), _cstr(key[1]), _cstr(key[2]), _cstr(key[3]), _cstr(key[4]))
    return r


def _delays(d: tuple[float, float, float, float] | None) -> str:
    r = _DELAYS_JSON.get(d)
    if r is None:
        if len(_DELAYS_JSON) >= _CACHE_MAX:
            _DELAYS_JSON.clear()
            _DELAYS_JSON[None] = "null"
        assert d is not None
        r = f"[{_cnum(d[0])},{_cnum(d[1])},{_cnum(d[2])},{_cnum(d[3])}]"
        if all(v == v for v in d):          # a NaN key would never be found again
            _DELAYS_JSON[d] = r
    return r


@dataclass(slots=True)
class Scored:
    """The scorer's verdict on one event."""

    score: int
    anomaly: bool
    argmax: int
    #: A core with route intervals, a delivery on a tracked route past its first one: the latency fell
    #: below / above the route's interval (:mod:`mailpulse.pi_firmware.routefeed`); else None.
    below: bool | None = None
    above: bool | None = None


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
    x_json: str | None = field(default=None, init=False, repr=False, compare=False)   # "1,2,..." of x
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
            if self.scored.below is not None and self.scored.above is not None:
                out["below"] = self.scored.below
                out["above"] = self.scored.above
        return out

    def payload_json(self) -> bytes:
        """:meth:`payload` encoded as compact UTF-8 JSON (what the spool stores and MQTT carries)."""
        return dumps(self.payload())



@dataclass(slots=True)
class DeliveryEvent(Event):
    """One Postfix delivery attempt to one recipient (joined with qmgr and cleanup lines).

    Times are seconds as Postfix logs them; ``None`` where the line or the join had no value.
    """

    KIND: ClassVar[str] = "delivery"

    # mailpulse.pi_firmware.postfix constructs these positionally on its hot path: keep the field order.

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
    text: str = ""                  # the whole log line, without its newline (part of the id)
    occ: int = 0                    # earlier identical lines with the same timestamp (part of the id)
    _id: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def id(self) -> str:
        i = self._id
        if i is None:
            i = self._id = _delivery_id(self.node, self.host, self.queue_id, self.recipient, self.stamp, self.status,
                                        self.dsn, self.text, self.occ)
        return i

    def payload_json(self) -> bytes:
        # The replay's hot path: the bytes dumps(self.payload()) gives, written without the dicts.
        eid, data, _ = delivery_payload(delivery_row(self))
        self._id = eid
        return data

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
            "status": self.status, "relay": self.relay, "delay": _finite(self.delay),
            "delays": [_finite(v) for v in self.delays] if self.delays is not None else None, "dsn": self.dsn,
            "from": self.sender, "size": self.size, "nrcpt": self.nrcpt, "message_id": self.message_id,
        }


def _delivery_id(node: str, host: str, queue_id: str, recipient: str, stamp: str, status: str, dsn: str | None,
                 text: str, occ: int) -> str:
    if text:
        # the line holds host, queue id, timestamp, status and dsn; the recipient is added
        # because one qmgr "expired" line stands for every deferred recipient
        return _blake(f"{node}\x1fdelivery\x1f{recipient}\x1f{text}\x1f{occ}")
    # built by hand (tests, tools): the identifying fields
    return event_id(node, "delivery", host, queue_id, recipient, stamp, status, dsn, occ)


#: A scored delivery event as a plain tuple (:func:`delivery_row`): what its payload is written
#: from, cheap to pickle (the replay hands these to its publisher process).
DeliveryRow = tuple[Any, ...]


def delivery_row(e: DeliveryEvent) -> DeliveryRow:
    """The fields :func:`delivery_payload` writes, in its order."""
    s = e.scored
    xj = e.x_json
    if xj is None:
        xj = _ints(e.x if e.x is not None else e.vector())
    return (e.ts, e.node, e.host, e.queue_id, e.agent, e.recipient, e.status, e.relay, e.delay, e.delays, e.dsn,
            e.sender, e.size, e.nrcpt, e.message_id, e._id, e.stamp, e.text, e.occ, xj,
            None if s is None else (s.score, s.anomaly, s.argmax, s.below, s.above))


def delivery_payload(row: DeliveryRow) -> tuple[str, bytes, bool]:
    """(event id, payload JSON, anomaly) of a :func:`delivery_row`: the bytes ``dumps(e.payload())``
    gives, written without building the dicts (the replay's hot path; a test checks the equality)."""
    (ts, node, host, qid, agent, to, status, relay, delay, delays, dsn, sender, size, nrcpt, mid, eid, stamp, text, occ,
     xj, verdict) = row
    if eid is None:
        eid = _delivery_id(node, host, qid, to, stamp, status, dsn, text, occ)
    key = (node, host, agent, relay, dsn)
    node_j, host_j, agent_j, relay_j, dsn_j = _GROUP_JSON.get(key) or _group(key)
    if verdict is None:
        tail = "}"
    else:
        a = verdict[2]
        feat = _FEATURE_JSON[a] if 0 <= a < F.D else "null"
        flags = "" if verdict[3] is None or verdict[4] is None else (
            f',"below":{"true" if verdict[3] else "false"},"above":{"true" if verdict[4] else "false"}')
        tail = (f',"score":{verdict[0]},"anomaly":{"true" if verdict[1] else "false"},"argmax":{a},'
                f'"argmax_feature":{feat}{flags}}}')
    doc = (f'{{"schema":{F.SCHEMA_VERSION},"kind":"delivery","id":"{eid}","node":{node_j},'
           f'"ts":{_cstr(iso_utc(ts))},"fields":{{"host":{host_j},'
           f'"queue_id":{_jstr(qid)},"agent":{agent_j},"to":{_jstr(to)},'
           f'"status":{_cstr(status)},"relay":{relay_j},"delay":{_cnum(delay)},'
           f'"delays":{_DELAYS_JSON.get(delays) or _delays(delays)},"dsn":{dsn_j},"from":{_jopt(sender)},'
           f'"size":{"null" if size is None else int(size)},'
           f'"nrcpt":{"null" if nrcpt is None else int(nrcpt)},'
           f'"message_id":{_jopt(mid)}}},"x":[{xj}]{tail}')
    return eid, doc.encode("utf-8", "backslashreplace"), bool(verdict is not None and verdict[1])


@dataclass(slots=True)
class MessageEvent(Event):
    """One delivered message (Maildir watcher or ``mailpulse inspect``): hops and render features.

    ``hops`` and ``mime`` are the JSON-ready dicts of :mod:`mailpulse.pi_firmware.received` and
    :mod:`mailpulse.pi_firmware.mime`.
    """

    KIND: ClassVar[str] = "message"

    key: str = ""                   # what identifies the message (Maildir unique name, file name)
    message_id: str | None = None
    size: int = 0
    recipients: int = 0
    hops: list[dict[str, Any]] = field(default_factory=list)
    mime: dict[str, Any] = field(default_factory=dict)
    mailbox_delay_s: float | None = None    # file time minus the newest hop's time (Maildir only)
    hops_dropped: int = 0                   # Received: fields beyond the hop limit (not in ``hops``)

    @property
    def id(self) -> str:
        return event_id(self.node, self.KIND, self.key, self.message_id, self.size)

    def raw_features(self) -> dict[str, float | None]:
        # only sound dates count: a date without a zone was taken as UTC and may be hours off
        times = [h["ts"] for h in self.hops if h.get("ts") is not None and h.get("zone_known", True)]
        delays = [h["delay_s"] for h in self.hops if h.get("delay_s") is not None and not h.get("delay_uncertain")]
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
        hops = [{k: v for k, v in h.items() if k not in ("ts", "zone_known")} for h in self.hops]
        return {"key": self.key, "message_id": self.message_id, "size": self.size,
                "recipients": self.recipients, "hops": hops, "hops_dropped": self.hops_dropped, "mime": self.mime,
                "mailbox_delay_s": self.mailbox_delay_s}


__all__ = ["DeliveryEvent", "DeliveryRow", "Event", "MessageEvent", "Scored", "delivery_payload", "delivery_row",
           "dumps", "event_id", "iso_utc"]
