"""The MQTT payloads, declared once: events, the batch envelope and the node status, with bounds.

The node encodes with these declarations in mind (its fast encoder,
:meth:`mailpulse.pi_firmware.events.DeliveryEvent.payload_json`, is checked against them by the tests)
and the collector validates every payload it receives against them before anything else sees
it (:func:`check_event`, :func:`check_status`, :func:`check_envelope`).  ``docs/mqtt.md`` shows
the tables :func:`markdown` renders from these models (a test keeps the page current).

What the bounds are for: every value a node sends reaches the archive, the correlator, the
metrics, the dashboard and the trainer, so a payload is *bounded* before it is accepted:

* strings: at most :data:`MAX_TEXT` characters (the Received parser cuts at the same length),
  identifiers and enumerations much less;
* lists: hops at most :data:`MAX_HOPS`, the feature vector at most :data:`MAX_FEATURES` 16-bit
  integers, events per message at most :data:`MAX_EVENTS`;
* numbers: finite (no NaN or infinity), in a stated range; times are real instants
  (Unix seconds in ``[0, 2**32)``);
* open JSON (the MIME summary, a hop's extra keys, unknown keys of ``fields``): nesting at most
  :data:`MAX_DEPTH`, at most :data:`MAX_ITEMS` values in all.

The top-level keys of an event are closed (an unknown key is a reason to quarantine); ``fields``
has declared keys with types and may carry further keys with bounded JSON values, so a newer node
that adds a field is not quarantined by an older collector (the node's own tests check that it
adds none that are not declared here).  The types are strict: ``"size": "12"`` is not a number.

A payload that fails is never repaired: the collector quarantines it with a :class:`Problem`
(a reason from :data:`REASONS`, bounded so it can be a metric label, and one sentence).
"""

from __future__ import annotations

import functools
import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from mailpulse import features as F
from mailpulse import topics as T
from mailpulse.routes import DELAY_MAX_S

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENTS",
    "MAX_FEATURES",
    "MAX_HOPS",
    "MAX_ITEMS",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT",
    "QUEUE_NAMES",
    "REASONS",
    "BatchEnvelope",
    "DeliveryFields",
    "DeliveryPayload",
    "EventPayload",
    "Hop",
    "MessageFields",
    "MessagePayload",
    "PostfixQueueStatus",
    "ProbeFields",
    "ProbePayload",
    "Problem",
    "QueueGauge",
    "StatusPayload",
    "check_envelope",
    "check_event",
    "check_status",
    "event_model",
    "markdown",
    "parse_time",
]

#: Longest string value (characters); the Received parser cuts header fields at the same length.
MAX_TEXT = 8192
#: Most hops of a message or probe (the Received parser keeps the newest this many).
MAX_HOPS = 100
#: Longest feature vector (the schema's ``D`` is smaller; a later schema may grow).
MAX_FEATURES = 64
#: Most events in one ``events``/``anomalies`` message.
MAX_EVENTS = 10_000
#: Deepest nesting of open JSON values (MIME summary, a hop's extra keys).
MAX_DEPTH = 8
#: Most values (scalars, lists, objects) in one open JSON value.
MAX_ITEMS = 20_000
#: Default largest MQTT message the collector parses (its ``[mqtt] max_message_bytes``); a node's
#: ``batch_max_bytes`` (256 KiB by default) must not exceed it.
MAX_MESSAGE_BYTES = 1 << 20
#: Latest accepted instant (Unix seconds): 2106-02-07.
MAX_TIME = float(1 << 32)

#: Why a payload was refused: the quarantine reasons (metric label values, a closed set).
REASONS = ("too_large", "not_json", "envelope", "not_object", "unknown_key", "schema", "kind", "id", "node",
           "ts", "fields", "x", "verdict", "status", "topic", "node_mismatch")

_TOP_REASON = {"schema": "schema", "kind": "kind", "id": "id", "node": "node", "ts": "ts", "fields": "fields",
               "x": "x", "score": "verdict", "anomaly": "verdict", "argmax": "verdict", "argmax_feature": "verdict",
               "below": "verdict", "above": "verdict"}


# --------------------------------------------------------------------------------------------
# value types
# --------------------------------------------------------------------------------------------


def _bounded_json(v: Any) -> Any:
    """Check an open JSON value: finite numbers, bounded strings, lists, objects and nesting."""
    stack: list[tuple[Any, int]] = [(v, 0)]
    seen = 0
    while stack:
        x, depth = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise ValueError(f"holds more than {MAX_ITEMS} values")
        if x is None or isinstance(x, bool):
            continue
        if isinstance(x, int):
            if abs(x) >= 1 << 63:
                raise ValueError("holds an integer beyond 64 bits")
        elif isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError("holds a number that is not finite")
        elif isinstance(x, str):
            if len(x) > MAX_TEXT:
                raise ValueError(f"holds a string longer than {MAX_TEXT} characters")
        elif isinstance(x, list | dict):
            if depth >= MAX_DEPTH:
                raise ValueError(f"is nested deeper than {MAX_DEPTH} levels")
            if isinstance(x, dict):
                for k, item in x.items():
                    if not isinstance(k, str) or len(k) > 256:
                        raise ValueError("has a key that is not a string of at most 256 characters")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in x)
        else:
            raise ValueError(f"holds a {type(x).__name__}, not a JSON value")
    return v


#: Any JSON value within the bounds of the module docstring.
JsonValue = Annotated[Any, AfterValidator(_bounded_json)]


@functools.lru_cache(maxsize=65536)
def parse_time(text: str) -> float:
    """Unix seconds of an ISO 8601 instant with a time zone (``2026-11-26T10:00:00.123Z``).

    Raises ``ValueError`` for anything else, a naive time or an instant outside ``[0, 2**32)``.
    """
    if len(text) > 40:
        raise ValueError("is longer than an ISO 8601 time")
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError("is not an ISO 8601 time") from None
    if d.tzinfo is None:
        raise ValueError("has no time zone")
    t = d.timestamp()
    if not 0.0 <= t < MAX_TIME:
        raise ValueError("is not between 1970 and 2106")
    return t


def _iso(v: str) -> str:
    parse_time(v)
    return v


class _MaxLen:
    """A string's bound, checked in Python (see :func:`_text`) and shown in the docs."""

    def __init__(self, n: int) -> None:
        self.max_length = n


def _text(n: int) -> Any:
    """The check of a string of at most ``n`` characters, in Python: a node's text read with
    ``surrogateescape`` (log bytes that are not UTF-8) arrives as ``\\udcXX`` escapes, which
    JSON allows and pydantic's own ``str`` refuses."""
    def check(v: Any) -> str:
        if type(v) is not str:
            raise ValueError("Input should be a valid string")
        if len(v) > n:
            raise ValueError(f"String should have at most {n} characters")
        return v
    return PlainValidator(check)


Text = Annotated[str, _text(MAX_TEXT), _MaxLen(MAX_TEXT)]
Short = Annotated[str, _text(256), _MaxLen(256)]
Code = Annotated[str, _text(64), _MaxLen(64)]
Iso = Annotated[str, AfterValidator(_iso)]
Count = Annotated[int, Field(ge=0, le=1 << 53)]
Seconds = Annotated[float, Field(ge=-DELAY_MAX_S, le=DELAY_MAX_S)]
Instant = Annotated[float, Field(ge=0.0, lt=MAX_TIME)]
Fixed = Annotated[int, Field(ge=F.MISSING, le=F.FIXED_MAX)]
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Envelope = Annotated[int, Field(ge=T.PAYLOAD_SCHEMA, le=T.PAYLOAD_SCHEMA)]


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _Open(BaseModel):
    """Declared keys typed; further keys allowed with bounded JSON values."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)


# --------------------------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------------------------


class Hop(_Open):
    """One ``Received:`` hop (oldest first), as :mod:`mailpulse.pi_firmware.received` writes it."""

    from_: Text | None = Field(None, alias="from", description="The `from` host of the stamp.")
    by: Text | None = Field(None, description="The relay that wrote the stamp.")
    with_: Text | None = Field(None, alias="with", description="Protocol (`ESMTPS`, ...).")
    id: Text | None = Field(None, description="The relay's queue id.")
    for_: Text | None = Field(None, alias="for", description="Recipient named in the stamp.")
    ip: Text | None = Field(None, description="Address of the `from` host.")
    timestamp: Text | None = Field(None, description="The stamp's date (ISO 8601) or null.")
    delay_s: Seconds | None = Field(None, description="Seconds to the next hop's stamp (null for the newest).")
    delay_uncertain: bool | None = Field(None, description="`delay_s` uses a date whose time zone was not known.")
    date_note: Text | None = Field(None, description="Why the date is missing or uncertain (null: it is sound).")
    postfix: JsonValue = Field(None, description="Postfix delays of the hop's queue id (probes reading mail logs).")
    assumed: bool | None = Field(None, description="A lost probe's hop: the path its route's last arrived probe took "
                                                   "(no stamp of this probe).")


class DeliveryFields(_Open):
    """``fields`` of a ``delivery`` event: one Postfix delivery attempt to one recipient."""

    host: Text = Field("", description="The node's Postfix host name.")
    queue_id: Short = Field("", description="Postfix queue id.")
    agent: Code = Field("", description="Delivery agent (`smtp`, `lmtp`, `virtual`, ...).")
    to: Text = Field("", description="Recipient.")
    status: Code = Field("", description="`sent`, `deferred`, `bounced`, `expired`, ...")
    relay: Text | None = Field(None, description="Next hop (`host[ip]:port`) or null; a deferral without a "
                                  "connection (`relay=none`) names the relay Postfix was trying, when known.")
    delay: Seconds | None = Field(None, description="Postfix `delay=` (seconds).")
    delays: list[Seconds | None] | None = Field(None, min_length=4, max_length=4,
                                                description="Postfix `delays=a/b/c/d` (seconds).")
    dsn: Code | None = Field(None, description="Delivery status code (`2.0.0`).")
    from_: Text | None = Field(None, alias="from", description="Sender.")
    size: Count | None = Field(None, description="Message size in bytes.")
    nrcpt: Count | None = Field(None, description="Recipients of the message.")
    message_id: Text | None = Field(None, description="Message-ID.")


class MessageFields(_Open):
    """``fields`` of a ``message`` event: one delivered message, its hops and MIME summary."""

    key: Text = Field("", description="What identifies the message (Maildir unique name, file name).")
    message_id: Text | None = Field(None, description="Message-ID.")
    size: Count = Field(0, description="Size in bytes.")
    recipients: Count = Field(0, description="Addresses in To: and Cc:.")
    hops: list[Hop] = Field(default_factory=list, max_length=MAX_HOPS, description="Received hops, oldest first.")
    hops_dropped: Count = Field(0, description="`Received:` fields beyond the hop limit (not in `hops`).")
    mime: JsonValue = Field(default_factory=dict, description="The MIME walk's summary (open JSON, bounded).")
    mailbox_delay_s: Seconds | None = Field(None, description="File time minus the newest hop's time.")


class ProbeFields(_Open):
    """``fields`` of a ``probe`` event: one probe's measurement."""

    route: Code = Field("", description="Probe route name.")
    probe_id: Short = Field("", description="Probe id.")
    outcome: Code = Field("", description="`ok`, `late`, `damaged`, `lost`.")
    sent_ms: Count = Field(0, description="Send time (Unix milliseconds).")
    arrived_ms: Count | None = Field(None, description="Arrival time (Unix milliseconds) or null.")
    latency_ms: Annotated[float, Field(ge=-1e12, le=1e12)] | None = Field(None, description="End-to-end latency.")
    poll_interval_ms: Annotated[float, Field(ge=0, le=1e12)] = Field(
        0.0, description="Mailbox poll period (0: IMAP IDLE, the arrival was pushed).")
    size: Count = Field(0, description="Probe size in bytes.")
    image_pixels: Count | None = Field(None, description="Pixels of the decoded image.")
    hops: list[Hop] = Field(default_factory=list, max_length=MAX_HOPS, description="Received hops, oldest first.")
    integrity: JsonValue = Field(None, description="`psnr_db`, `intact`, ... (open JSON, bounded) or null.")
    supersedes: EventId | None = Field(None, description="Id of the `lost` event a late arrival corrects.")
    error: Text | None = Field(None, description="Why the probe failed, or null.")


class _EventBase(_Closed):
    schema_: int = Field(alias="schema", ge=1, le=F.SCHEMA_VERSION,
                         description="Feature schema version of `x` (:mod:`mailpulse.features`).")
    id: EventId = Field(description="Unique, deterministic event id (de-duplication key with the node).")
    node: NodeId = Field(description="Node id; must be the node of the topic.")
    ts: Iso | None = Field(description="When it happened, ISO 8601 with time zone (node clock), or null.")
    x: list[Fixed] = Field(min_length=1, max_length=MAX_FEATURES, description="The fixed-point feature vector.")
    score: Annotated[int, Field(ge=0, lt=1 << 40)] | None = Field(None, description="Scorer output.")
    anomaly: bool | None = Field(None, description="The scorer's flag.")
    argmax: Annotated[int, Field(ge=0, lt=1 << 16)] | None = Field(
        None, description="Index of the most contributing feature (outside the vector: `argmax_feature` null).")
    argmax_feature: Code | None = Field(None, description="Its name.")
    # set by the collector (archive records); a node does not send them
    site: NodeId | None = Field(None, description="Collector: the site of the topic.")
    received: Instant | None = Field(None, description="Collector: receive time (its clock, Unix seconds).")
    t: Instant | None = Field(None, description="Collector: the event time it used (corrected and bounded).")
    clock: Literal["ok", "corrected", "future", "skewed", "missing"] | None = Field(
        None, description="Collector: how `t` was judged (see docs/collector.md, time).")
    label: bool | Annotated[int, Field(ge=0, le=1)] | None = Field(
        None, description="Ground truth of labelled lab data (1 = anomaly).")


class DeliveryPayload(_EventBase):
    """A ``delivery`` event."""

    kind: Literal["delivery"] = Field(description="Event kind.")
    fields: DeliveryFields = Field(description="The delivery attempt (see DeliveryFields).")
    below: bool | None = Field(None, description="The node's core: the latency fell below its route's interval "
                                                 "(a core with route intervals, a tracked route past its first "
                                                 "delivery; else absent).")
    above: bool | None = Field(None, description="The node's core: the latency fell above its route's interval "
                                                 "(sent with `below`).")


class MessagePayload(_EventBase):
    """A ``message`` event."""

    kind: Literal["message"] = Field(description="Event kind.")
    fields: MessageFields = Field(description="The message (see MessageFields).")


class ProbePayload(_EventBase):
    """A ``probe`` event."""

    kind: Literal["probe"] = Field(description="Event kind.")
    fields: ProbeFields = Field(description="The probe (see ProbeFields).")


EventPayload = Annotated[DeliveryPayload | MessagePayload | ProbePayload, Field(discriminator="kind")]
_EVENT = TypeAdapter(EventPayload)
_MODELS: dict[str, type[_EventBase]] = {"delivery": DeliveryPayload, "message": MessagePayload, "probe": ProbePayload}


def event_model(kind: str) -> type[_EventBase]:
    """The payload model of an event kind."""
    return _MODELS[kind]


# --------------------------------------------------------------------------------------------
# envelope and status
# --------------------------------------------------------------------------------------------


class BatchEnvelope(_Closed):
    """An ``events``/``anomalies`` message (the events are checked one by one, see :func:`check_event`)."""

    schema_: Envelope = Field(alias="schema", description="Envelope version (`mailpulse.topics.PAYLOAD_SCHEMA`).")
    site: NodeId = Field(description="Site id; must be the site of the topic.")
    node: NodeId = Field(description="Node id; must be the node of the topic.")
    events: list[Any] = Field(max_length=MAX_EVENTS, description=f"The events (at most {MAX_EVENTS}).")


class SpoolStatus(_Open):
    """The node's spool in its status."""

    depth: Count | None = Field(None, description="Events waiting to be published.")


#: The Postfix queues a node reports (``postqueue -j`` names; :mod:`mailpulse.pi_firmware.postqueue`).
QUEUE_NAMES = ("active", "deferred", "hold", "incoming", "maildrop")
QueueName = Literal["active", "deferred", "hold", "incoming", "maildrop"]


class QueueGauge(_Closed):
    """One Postfix queue of the node."""

    messages: Count = Field(description="Messages in the queue.")
    bytes: Count = Field(description="Their total size.")
    oldest_age_s: Annotated[float, Field(ge=0, le=1e9)] | None = Field(description="Age of the oldest message "
                                                                                   "(seconds) or null when empty.")


class PostfixQueueStatus(_Closed):
    """The node's Postfix queue as ``postqueue -j`` showed it (every ``[postfix] queue_poll_s``)."""

    queues: dict[QueueName, QueueGauge] = Field(max_length=len(QUEUE_NAMES), description="Per queue; empty when "
                                                                                         "the reading failed.")
    bad_lines: Count = Field(0, description="Output lines skipped as unreadable.")
    error: Text | None = Field(None, description="Why the queue could not be read, or null.")
    ts: Instant = Field(description="When it was read (node clock).")


class StatusPayload(_Open):
    """The retained ``status`` message (a heartbeat every ``heartbeat_s``; the last will says offline)."""

    schema_: Envelope = Field(alias="schema", description="Envelope version.")
    site: NodeId = Field(description="Site id; must be the site of the topic.")
    node: NodeId = Field(description="Node id; must be the node of the topic.")
    state: Literal["online", "offline"] = Field(description="`online`, or `offline` (last will, clean stop).")
    ts: Instant = Field(description="When it was sent (node clock, Unix seconds): the clock-offset sample.")
    started: Instant | None = Field(None, description="When the daemon started.")
    version: Short | None = Field(None, description="Software version.")
    heartbeat_s: Annotated[float, Field(gt=0, le=86400)] | None = Field(None, description="Heartbeat period.")
    model_version: Short | None = Field(None, description="Version of the scorer model in use.")
    spool: SpoolStatus | None = Field(None, description="Spool counters.")
    emitted: Count | None = Field(None, description="Events emitted since start.")
    published: Count | None = Field(None, description="Events acknowledged by the broker.")
    anomalies: Count | None = Field(None, description="Anomalies emitted.")
    rejected: Count | None = Field(None, description="Events the broker refused.")
    postfix_queue: PostfixQueueStatus | None = Field(None, description="The node's Postfix queue (`postqueue -j`).")
    quarantine: JsonValue = Field(None, description="Inputs the node's sources skipped: `total`, `by_source` "
                                                    "(counts), `last` (reason per source), `write_errors`.")
    sources: JsonValue = Field(None, description="Per source: its counters and `restarts`.")
    restarts: JsonValue = Field(None, description="Restarts of each source (or prober) thread after it failed.")
    route_intervals: JsonValue = Field(None, description="A core with route intervals: `tracked` routes of its "
                                                          "`capacity` (R), deliveries `fed`, routes `seeded` and "
                                                          "`restored`, `untracked` deliveries (table full).")


_ENVELOPE = TypeAdapter(BatchEnvelope)
_STATUS = TypeAdapter(StatusPayload)


# --------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a payload was refused: ``reason`` (one of :data:`REASONS`) and one sentence."""

    reason: str
    detail: str


def _problem(e: ValidationError, what: str, top: Mapping[str, str], default: str) -> Problem:
    err = e.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in err["loc"]]
    # a discriminated union puts the tag first: ("delivery", "fields", "size") -> ("fields", "size")
    if loc and loc[0] in _MODELS and len(loc) > 1:
        loc = loc[1:]
    if err["type"] == "extra_forbidden":
        reason = "unknown_key"
    elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        reason = "kind"
    else:
        reason = top.get(loc[0], default) if loc else default
    where = ".".join(loc) or ("kind" if reason == "kind" else what)
    msg = str(err["msg"]).removeprefix("Value error, ")
    n = len(e.errors())
    more = f" (and {n - 1} more problems)" if n > 1 else ""
    return Problem(reason, f"{what} {where}: {msg}{more}"[:300])


def check_event(ev: Any) -> Problem | None:
    """None when ``ev`` (a parsed JSON value) is a valid event, else the :class:`Problem`."""
    if not isinstance(ev, dict):
        return Problem("not_object", f"event is a {type(ev).__name__}, not a JSON object")
    try:
        _EVENT.validate_python(ev)
    except ValidationError as e:
        return _problem(e, "event", _TOP_REASON, "fields")
    return None


def check_envelope(doc: Any) -> Problem | None:
    """None when ``doc`` is a valid batch envelope (its events are not looked at), else the problem."""
    try:
        _ENVELOPE.validate_python(doc)
    except ValidationError as e:
        return _problem(e, "batch", {}, "envelope")
    return None


def check_status(doc: Any) -> Problem | None:
    """None when ``doc`` is a valid status document, else the problem."""
    try:
        _STATUS.validate_python(doc)
    except ValidationError as e:
        return _problem(e, "status", {}, "status")
    return None


# --------------------------------------------------------------------------------------------
# the tables of docs/mqtt.md
# --------------------------------------------------------------------------------------------


_SIGNS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"),
          ("max_length", "length ≤"), ("pattern", "matching"))


def _bounds(meta: Any) -> list[str]:
    out: list[str] = []
    for m in meta:
        if isinstance(m, FieldInfo):
            out += _bounds(m.metadata)
            continue
        if isinstance(m, AfterValidator) and m.func is _bounded_json:
            out.append("bounded")
        for attr, sign in _SIGNS:
            v = getattr(m, attr, None)
            if v is not None:
                if attr == "pattern":
                    v = f"`{v}`"
                elif isinstance(v, float):
                    v = f"{v:.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:g}"
                out.append(f"{sign} {v}")
    return out


def _type_text(tp: Any, meta: Any = ()) -> str:
    """A field type in words (the docs tables)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *more = get_args(tp)
        return _type_text(base, [*more, *meta])
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        return " or ".join(_type_text(a, meta) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    bounds = _bounds(meta)
    if origin is list:
        text = f"list of {_type_text(get_args(tp)[0])}"
    elif origin is dict:
        text = "object of {} to {}".format(*(_type_text(a) for a in get_args(tp)))
    elif origin is Literal:
        text = " or ".join(json.dumps(a) for a in get_args(tp))
    elif tp is Any:
        text = "JSON"
    else:
        text = getattr(tp, "__name__", str(tp))
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def markdown() -> str:
    """The payload tables of ``docs/mqtt.md`` (between its ``payload-tables`` markers)."""
    out: list[str] = []
    for model in (BatchEnvelope, DeliveryPayload, DeliveryFields, MessageFields, Hop, ProbeFields, StatusPayload,
                  SpoolStatus, PostfixQueueStatus, QueueGauge):
        doc = (model.__doc__ or "").strip().splitlines()[0]
        extra = " Further keys: bounded JSON values." if issubclass(model, _Open) else " No other keys."
        out += [f"#### {model.__name__}", "", doc + extra, "", "| key | type | required | meaning |",
                "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            key = f.alias or name
            typ = _type_text(f.annotation, f.metadata).replace("|", "\\|")
            req = "yes" if f.is_required() else "no"
            out.append(f"| `{key}` | {typ} | {req} | {f.description or ''} |")
        out.append("")
    out.append(f"Limits: strings {MAX_TEXT} characters, hops {MAX_HOPS}, feature vector {MAX_FEATURES}, "
               f"events per message {MAX_EVENTS}, open JSON nesting {MAX_DEPTH} and {MAX_ITEMS} values, "
               f"message {MAX_MESSAGE_BYTES} bytes (collector default). Topic ids: {T.ID_RULE}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m mailpulse.payload` prints the tables
    print(markdown(), end="")
