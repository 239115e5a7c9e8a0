"""Ingest: the MQTT v5 subscriber, de-duplication by event id, and the archive write.

The subscriber (:class:`MqttIngest`) connects with ``clean_start=False`` and a session expiry, so
the broker keeps its subscriptions and queues QoS 1 messages while the collector is away; with
``share_group`` it subscribes ``$share/<group>/mailpulse/v1/+/+/events`` so several collectors
split the load.  It acknowledges a message (manual PUBACK) only after the events in it are in
the archive and fsynced: a crash before that makes the broker redeliver it.

Every delivered message goes through :class:`IngestProcessor`: the batch envelope is parsed,
each event is checked against :class:`Dedup` (a bounded set of recent ids, seeded at start from
the newest archive segments = the archive index), new ones are written to the archive, and the
batch of new events is handed to the collector (correlation, dashboard, metrics, alerts).  So
the same events published twice, or replayed by a node after an outage, are archived once.

Limits: an id older than the ``capacity`` newest ids and than the indexed segments is not
remembered; a replay older than that would be archived again (with the defaults: 1e6 ids).
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

from mailpulse import topics as T
from mailpulse.config.collector import MqttSettings

from .archive import ArchiveWriter, closed_segments, read_segment
from .correlate import event_time

log = logging.getLogger(__name__)

__all__ = ["Batch", "Dedup", "IngestProcessor", "Message", "MqttIngest", "load_index", "subscriptions"]


class Dedup:
    """The ``capacity`` most recently seen event ids (a set plus a FIFO of insertion order)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, eid: str) -> bool:
        return eid in self._ids

    def add(self, eid: str) -> bool:
        """Remember ``eid``; False if it was already known (a duplicate)."""
        if eid in self._ids:
            return False
        self._ids.add(eid)
        self._order.append(eid)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True


def load_index(folder: str | Path, dedup: Dedup, segments: int = 16) -> int:
    """Seed ``dedup`` with the ids of the newest ``segments`` closed segments; returns how many."""
    n = 0
    for seg in closed_segments(folder)[-segments:]:
        try:
            for ev in read_segment(seg):
                if isinstance(ev.get("id"), str) and dedup.add(ev["id"]):
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
    statuses: list[tuple[str, str, dict[str, Any] | None, bool]] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0
    lags: list[float] = field(default_factory=list)


def _event_ts(ev: dict[str, Any]) -> float | None:
    t = event_time(ev)
    return t or None


class IngestProcessor:
    """Parses envelopes, de-duplicates and archives (no MQTT here: tests call it directly)."""

    def __init__(self, archive: ArchiveWriter | None, dedup: Dedup) -> None:
        self.archive = archive
        self.dedup = dedup
        self.total_events = 0
        self.total_duplicates = 0
        self.total_rejected = 0
        #: held while archiving (the collector also takes it to rotate the archive by age)
        self.lock = threading.Lock()

    def process(self, msgs: Iterable[Message]) -> Batch:
        """Handle messages; events are durable in the archive when this returns."""
        with self.lock:
            return self._process(msgs)

    def _process(self, msgs: Iterable[Message]) -> Batch:
        out = Batch()
        lines: list[bytes] = []
        for m in msgs:
            try:
                pt = T.parse_topic(m.topic)
            except ValueError:
                out.rejected += 1
                continue
            if pt.channel == "status" and pt.node is not None:
                if not m.payload:
                    out.statuses.append((pt.site, pt.node, None, m.retain))
                    continue
                try:
                    doc = json.loads(m.payload)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    out.rejected += 1
                    continue
                out.statuses.append((pt.site, pt.node, doc if isinstance(doc, dict) else None, m.retain))
                continue
            if pt.channel not in ("events", "anomalies") or pt.node is None:
                continue
            try:
                env = json.loads(m.payload)
                events = env["events"]
                if not isinstance(events, list):
                    raise TypeError("events is not a list")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                out.rejected += 1
                log.warning("rejected a malformed batch on %s", m.topic)
                continue
            for ev in events:
                if not isinstance(ev, dict) or not isinstance(ev.get("id"), str):
                    out.rejected += 1
                    continue
                if not self.dedup.add(ev["id"]):
                    out.duplicates += 1
                    continue
                ev["site"] = pt.site
                ev["node"] = pt.node
                ev["received"] = round(m.received, 3)
                lines.append(json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode())
                out.events.append(ev)
        if self.archive is not None and lines:
            self.archive.write_lines(lines)
            self.archive.sync()
        now = time.time()
        for ev in out.events:
            t = _event_ts(ev)
            if t is not None:
                out.lags.append(now - t)
        self.total_events += len(out.events)
        self.total_duplicates += out.duplicates
        self.total_rejected += out.rejected
        return out


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


class MqttIngest:
    """The MQTT v5 subscriber feeding :class:`IngestProcessor` from a worker thread.

    Parameters
    ----------
    settings : MqttSettings
        Broker and session.
    processor : IngestProcessor
        De-duplication and archive.
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
        self._q: queue.Queue[Message] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        # paho's default back-off grows to 120 s: after a broker outage the collector would stay
        # away up to two minutes; at most 2 s between attempts bounds the ingest gap
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        else:
            log.warning("collector MQTT without TLS ([mqtt] tls = false): the password and every event cross the "
                        "network in clear")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._worker = threading.Thread(target=self._run, name="collector-ingest", daemon=True)
        self.errors = 0

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
        if rc.is_failure:
            log.error("collector MQTT connect refused: %s", rc)
            return
        client.subscribe([(t, 1) for t in subscriptions(self.settings)])
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put(Message(msg.topic, bytes(msg.payload), time.time(), msg.mid, msg.qos, bool(msg.retain)))

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
            for m in msgs:
                if m.qos > 0:
                    self.client.ack(m.mid, m.qos)
            try:
                self.on_batch(batch)
            except Exception:
                self.errors += 1
                log.exception("collector batch handler failed")
