"""Ingest: the MQTT v5 subscriber, validation, quarantine, de-duplication and the archive write.

The subscriber (:class:`MqttIngest`) connects with ``clean_start=False`` and a session expiry, so
the broker keeps its subscriptions and queues QoS 1 messages while the collector is away; with
``share_group`` it subscribes ``$share/<group>/mailpulse/v1/+/+/events`` so several collectors
split the load.  It acknowledges a message (manual PUBACK) only after the events in it are in
the archive and fsynced: a crash before that makes the broker redeliver it.  It reconnects
``reconnect_min_s``..``reconnect_max_s`` after losing the broker (paho's default back-off grows to
two minutes) and counts connection attempts, losses and the time of the last message
(:class:`LinkState`).

Every delivered message goes through :class:`IngestProcessor`:

1. the topic must be a mailpulse topic with valid ids, the message at most ``max_message_bytes``,
   JSON, and the batch envelope (or status) valid against :mod:`mailpulse.payload`, naming the
   topic's site and node;
2. each event is checked on its own against the declaration (so one bad event never affects the
   others) and must name the topic's node;
3. its time is judged against the node's clock (:class:`mailpulse.collector.clock.ClockBook`:
   ``t`` and ``clock`` are added);
4. it is de-duplicated by (site, node, id) (:class:`Dedup`, a bounded set of recent keys, seeded at
   start from the newest archive segments = the archive index), so one node's id never hides
   another node's event;
5. new events are written to the archive, the batch of new events is handed to the collector
   (correlation, dashboard, metrics, alerts).

Whatever fails a check is never dropped silently: it is written to the archive's quarantine
(``<archive>/quarantine/``, segments like the archive's, one record per refused event or
message: reason, sentence, topic, site, node, receive time and the payload - the parsed event, or
the first :data:`QUARANTINE_HEAD` bytes of a message that is too large or not JSON) and counted
per (site, node, reason).  A message larger than the limit is never parsed, so its size costs no
memory beyond its bytes.

Limits: a key older than the ``capacity`` newest keys and than the indexed segments is not
remembered; a replay older than that would be archived again (with the defaults: 1e6 keys).
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mailpulse import payload as P
from mailpulse import topics as T
from mailpulse.config.collector import MqttSettings

from .archive import ArchiveWriter, closed_segments, read_segment
from .clock import ClockBook

log = logging.getLogger(__name__)

__all__ = ["QUARANTINE_HEAD", "REASONS", "Batch", "Dedup", "IngestProcessor", "LinkState", "Message", "MqttIngest",
           "dedup_key", "load_index", "subscriptions"]

#: Bytes of a refused message kept in its quarantine record when it is too large or not JSON.
QUARANTINE_HEAD = 4096
#: Quarantine reasons: the payload's (:data:`mailpulse.payload.REASONS`) and ``internal`` (a
#: message the collector itself failed on, kept for the bug report).
REASONS = (*P.REASONS, "internal")


def dedup_key(site: str, node: str, eid: str) -> str:
    """The de-duplication key of an event: its id is unique per node, not across nodes."""
    return f"{site}/{node}/{eid}"


class Dedup:
    """The ``capacity`` most recently seen keys (a set plus a FIFO of insertion order)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> bool:
        """Remember ``key``; False if it was already known (a duplicate)."""
        if key in self._ids:
            return False
        self._ids.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True

    def discard(self, key: str) -> None:
        """Forget ``key`` (its archive write failed: the broker's redelivery must not be a duplicate)."""
        self._ids.discard(key)


def load_index(folder: str | Path, dedup: Dedup, segments: int = 16) -> int:
    """Seed ``dedup`` with the keys of the newest ``segments`` closed segments; returns how many."""
    n = 0
    for seg in closed_segments(folder)[-segments:]:
        try:
            for ev in read_segment(seg):
                if isinstance(ev, dict) and all(isinstance(ev.get(k), str) for k in ("site", "node", "id")) \
                        and dedup.add(dedup_key(ev["site"], ev["node"], ev["id"])):
                    n += 1
        except (OSError, ValueError) as e:
            log.error("archive segment %s is not readable for the index: %s", seg, e)
    return n


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    received: float
    mid: int = 0
    qos: int = 0
    retain: bool = False


@dataclass
class Batch:
    """What one round of :meth:`IngestProcessor.process` produced."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: (site, node, status document or None for a cleared status, retained, received)
    statuses: list[tuple[str, str, dict[str, Any] | None, bool, float]] = field(default_factory=list)
    duplicates: int = 0
    #: (site, node, reason) of every quarantine record written
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    #: (site, node) -> newest receive time of a valid message from that node
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    #: de-duplication keys added (forgotten again if the archive write fails)
    keys: list[str] = field(default_factory=list, repr=False)

    @property
    def rejected(self) -> int:
        return len(self.quarantined)


def _dump(obj: Any) -> bytes:
    # lone surrogates (from "\udcxx" escapes) stay escapes: the bytes are always valid UTF-8
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


class _Refused(Exception):
    """A message (not one of its events) fails a check."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class IngestProcessor:
    """Validates, quarantines, de-duplicates and archives (no MQTT here: tests call it directly).

    Parameters
    ----------
    archive : ArchiveWriter or None
        Where accepted events go (None: nowhere, tests and benchmarks).
    dedup : Dedup
        Recent (site, node, id) keys.
    quarantine : ArchiveWriter, optional
        Where refused payloads go (default: ``quarantine/`` inside the archive's folder).
    clocks : ClockBook, optional
        Clock offsets and event-time judgement (default settings when absent).
    max_message_bytes : int
        Larger messages are refused unparsed.
    """

    def __init__(self, archive: ArchiveWriter | None, dedup: Dedup, quarantine: ArchiveWriter | None = None,
                 clocks: ClockBook | None = None, max_message_bytes: int = P.MAX_MESSAGE_BYTES) -> None:
        self.archive = archive
        self.dedup = dedup
        if quarantine is None and archive is not None:
            quarantine = ArchiveWriter(archive.folder / "quarantine", max_bytes=archive.max_bytes,
                                       max_age_s=archive.max_age_s, fsync=archive.fsync)
        self.quarantine = quarantine
        self.clocks = clocks or ClockBook()
        self.max_message_bytes = max_message_bytes
        self.total_events = 0
        self.total_duplicates = 0
        self.total_quarantined = 0
        self.quarantine_counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        #: held while archiving (the collector also takes it to rotate the archive by age)
        self.lock = threading.Lock()

    @property
    def total_rejected(self) -> int:
        return self.total_quarantined

    def process(self, msgs: Iterable[Message]) -> Batch:
        """Handle messages; accepted events and quarantine records are durable when this returns."""
        with self.lock:
            return self._process(list(msgs))

    def tick(self) -> None:
        """Close archive and quarantine segments that are due (call periodically)."""
        with self.lock:
            if self.archive is not None:
                self.archive.tick()
            if self.quarantine is not None:
                self.quarantine.tick()

    def close(self) -> None:
        with self.lock:
            if self.archive is not None:
                self.archive.close()
            if self.quarantine is not None:
                self.quarantine.close()

    def _process(self, msgs: list[Message]) -> Batch:
        out = Batch()
        lines: list[bytes] = []
        qlines: list[bytes] = []
        for m in msgs:
            marks = (len(out.events), len(lines), len(qlines), len(out.quarantined), out.duplicates, len(out.keys))
            try:
                self._message(m, out, lines, qlines)
            except Exception as e:   # a bug must not take the ingest down: keep the message for the report
                log.exception("ingest failed on a message on %s", m.topic)
                del out.events[marks[0]:], lines[marks[1]:], qlines[marks[2]:], out.quarantined[marks[3]:]
                out.duplicates = marks[4]
                for k in out.keys[marks[5]:]:
                    self.dedup.discard(k)
                del out.keys[marks[5]:]
                self._refuse(m, None, "internal", f"the collector failed on this message ({type(e).__name__})",
                             out, qlines)
        try:
            if self.archive is not None and lines:
                self.archive.write_lines(lines)
                self.archive.sync()
            if self.quarantine is not None and qlines:
                self.quarantine.write_lines(qlines)
                self.quarantine.sync()
        except OSError:
            for k in out.keys:   # not archived: the broker redelivers (no ack), and then they are new
                self.dedup.discard(k)
            raise
        now = time.time()
        out.lags = [now - ev["t"] for ev in out.events]
        self.total_events += len(out.events)
        self.total_duplicates += out.duplicates
        self.total_quarantined += len(out.quarantined)
        self.quarantine_counts.update(out.quarantined)
        return out

    def _refuse(self, m: Message, doc: Any, reason: str, detail: str, out: Batch, qlines: list[bytes],
                site: str = "?", node: str = "?") -> None:
        rec: dict[str, Any] = {"quarantined": round(m.received, 3), "reason": reason, "detail": detail,
                               "topic": m.topic[:256], "site": site, "node": node, "bytes": len(m.payload)}
        if doc is not None:
            rec["payload"] = doc
        else:
            rec["head"] = m.payload[:QUARANTINE_HEAD].decode("utf-8", "backslashreplace")
        try:
            qlines.append(_dump(rec))
        except (ValueError, TypeError, RecursionError):
            rec.pop("payload", None)
            rec["head"] = m.payload[:QUARANTINE_HEAD].decode("utf-8", "backslashreplace")
            qlines.append(_dump(rec))
        out.quarantined.append((site, node, reason))

    def _message(self, m: Message, out: Batch, lines: list[bytes], qlines: list[bytes]) -> None:
        try:
            pt = T.parse_topic(m.topic)
            T.check_id(pt.site, "site")
            if pt.node is None:
                raise ValueError(f"topic {m.topic!r} is not a node topic")
            T.check_id(pt.node, "node")
        except ValueError as e:
            self._refuse(m, None, "topic", str(e)[:300], out, qlines)
            return
        site, node = pt.site, pt.node
        try:
            doc = self._parse(m)
        except _Refused as r:
            self._refuse(m, None, r.reason, r.detail, out, qlines, site, node)
            return
        if pt.channel == "status":
            self._status(m, doc, site, node, out, qlines)
            return
        if pt.channel not in ("events", "anomalies"):
            return
        prob = P.check_envelope(doc)
        if prob is None and (doc["site"], doc["node"]) != (site, node):
            prob = P.Problem("node_mismatch", f"batch names {doc['site']}/{doc['node']} on the topic of {site}/{node}")
        if prob is not None:
            self._refuse(m, doc, prob.reason, prob.detail, out, qlines, site, node)
            return
        out.seen[(site, node)] = max(out.seen.get((site, node), 0.0), m.received)
        received = round(m.received, 3)
        for ev in doc["events"]:
            prob = P.check_event(ev)
            if prob is None and ev["node"] != node:
                prob = P.Problem("node_mismatch", f"event names node {ev['node']} on the topic of {site}/{node}")
            if prob is not None:
                self._refuse(m, ev, prob.reason, prob.detail, out, qlines, site, node)
                continue
            key = dedup_key(site, node, ev["id"])
            if not self.dedup.add(key):
                out.duplicates += 1
                continue
            out.keys.append(key)
            t, how = self.clocks.judge(site, node, ev["ts"], m.received)
            ev["site"] = site
            ev["received"] = received
            ev["t"] = round(t, 3)
            ev["clock"] = how
            lines.append(_dump(ev))
            out.events.append(ev)

    def _parse(self, m: Message) -> Any:
        if m.payload == b"" and m.topic.endswith("/status"):
            return None
        if len(m.payload) > self.max_message_bytes:
            raise _Refused("too_large", f"message of {len(m.payload)} bytes is larger than the "
                                        f"{self.max_message_bytes}-byte limit (not parsed)")
        try:
            return json.loads(m.payload)
        except (ValueError, RecursionError) as e:
            raise _Refused("not_json", f"message is not JSON ({str(e)[:120]})") from None

    def _status(self, m: Message, doc: Any, site: str, node: str, out: Batch, qlines: list[bytes]) -> None:
        if doc is None:      # the retained status was cleared
            out.statuses.append((site, node, None, m.retain, m.received))
            return
        prob = P.check_status(doc)
        if prob is None and (doc["site"], doc["node"]) != (site, node):
            prob = P.Problem("node_mismatch", f"status names {doc['site']}/{doc['node']} on the topic of {site}/{node}")
        if prob is not None:
            self._refuse(m, doc, prob.reason, prob.detail, out, qlines, site, node)
            return
        if not m.retain and doc["state"] == "online":
            self.clocks.heartbeat(site, node, float(doc["ts"]), m.received)
        if not m.retain:
            out.seen[(site, node)] = max(out.seen.get((site, node), 0.0), m.received)
        out.statuses.append((site, node, doc, m.retain, m.received))


def subscriptions(settings: MqttSettings) -> list[str]:
    """Topic filters of the collector (shared when ``share_group`` is set)."""
    chans = ["events", "status"] + (["anomalies"] if settings.subscribe_anomalies else [])
    out = []
    for ch in chans:
        t = T.SUBSCRIPTIONS[ch]
        # status is retained: a shared subscription gets no retained messages, so every collector
        # subscribes to status directly
        out.append(f"$share/{settings.share_group}/{t}" if settings.share_group and ch != "status" else t)
    return out


@dataclass
class LinkState:
    """The collector's side of the broker link (``/metrics`` and the dashboard show it)."""

    connected: bool = False
    attempts: int = 0               # connection attempts after the first (reconnects), failed or not
    failures: int = 0               # attempts that failed (refused, unreachable)
    losses: int = 0                 # connections lost
    connected_since: float | None = None
    disconnected_since: float | None = None
    last_message: float | None = None     # receive time of the newest message (any topic)
    last_ingest: float | None = None      # when the newest accepted event was archived

    def as_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "reconnect_attempts": self.attempts, "connect_failures": self.failures,
                "connection_losses": self.losses, "connected_since": self.connected_since,
                "disconnected_since": self.disconnected_since, "last_message": self.last_message,
                "last_ingest": self.last_ingest}


class MqttIngest:
    """The MQTT v5 subscriber feeding :class:`IngestProcessor` from a worker thread.

    Parameters
    ----------
    settings : MqttSettings
        Broker and session.
    processor : IngestProcessor
        Validation, de-duplication and archive.
    on_batch : callable
        ``on_batch(batch)`` after the batch is durable and its messages are acknowledged.
    """

    def __init__(self, settings: MqttSettings, processor: IngestProcessor, on_batch: Callable[[Batch], None],
                 max_messages: int = 256) -> None:
        self.settings = settings
        self.processor = processor
        self.on_batch = on_batch
        self.max_messages = max_messages
        self.connected = threading.Event()
        self.stop_event = threading.Event()
        self.link = LinkState(disconnected_since=time.time())
        self._q: queue.Queue[Message] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        # paho waits 1, 2, 4 ... 120 s between attempts by default: a broker back after 30 s would
        # be seen up to a minute later ([mqtt] reconnect_max_s, 2 s by default, bounds the ingest gap)
        self.client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        else:
            log.warning("collector MQTT without TLS ([mqtt] tls = false): the password and every event cross the "
                        "network in clear")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._worker = threading.Thread(target=self._run, name="collector-ingest", daemon=True)
        self.errors = 0
        self._ever_connected = False

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = 1000
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        self._worker.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        if self._worker.is_alive():
            self._worker.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self._ever_connected:
            self.link.attempts += 1
        if rc.is_failure:
            self.link.failures += 1
            log.error("collector MQTT connect refused: %s", rc)
            return
        self._ever_connected = True
        client.subscribe([(t, 1) for t in subscriptions(self.settings)])
        self.link.connected, self.link.connected_since, self.link.disconnected_since = True, time.time(), None
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._ever_connected:
            self.link.attempts += 1
        self.link.failures += 1

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self.link.connected:
            self.link.losses += 1
            self.link.disconnected_since = time.time()
        self.link.connected = False
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        self.link.last_message = now
        self._q.put(Message(msg.topic, bytes(msg.payload), now, msg.mid, msg.qos, bool(msg.retain)))

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            msgs = [first]
            while len(msgs) < self.max_messages:
                try:
                    msgs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                batch = self.processor.process(msgs)
            except OSError as e:  # archive trouble: no ack, the broker redelivers after reconnect
                self.errors += 1
                log.error("archive write failed, %d messages not acknowledged: %s", len(msgs), e)
                time.sleep(1.0)
                continue
            if batch.events:
                self.link.last_ingest = time.time()
            for m in msgs:
                if m.qos > 0:
                    self.client.ack(m.mid, m.qos)
            try:
                self.on_batch(batch)
            except Exception:
                self.errors += 1
                log.exception("collector batch handler failed")
