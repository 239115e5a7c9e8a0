"""Publishing to MQTT behind the disk spool: QoS 1, batched, retained status with a last will.

Data path::

    pipeline --emit()--> Spool (SQLite WAL, committed) --pump thread--> paho-mqtt --> broker
                                     ^                                     |
                                     +------ ack(seqs) on PUBACK ----------+

* :meth:`MqttSink.emit_many` encodes each event's JSON payload (:meth:`Event.payload_json`), and
  writes the batch to the spool (channel ``events``, and ``anomalies`` too for the events the
  scorer flagged) in one transaction, already cut into message-sized batches of at most
  ``batch_max_events`` / ``batch_max_bytes``; it returns when they are committed.  Nothing is sent
  from the caller's thread.
* The pump thread reads spooled batches in order, wraps each in the batch envelope (see
  :mod:`mailpulse.topics`; no per-event work), publishes it with QoS 1, and keeps at most
  ``inflight_max`` messages unacknowledged.  A batch is deleted from the spool only when its
  message's PUBACK arrives with a success reason code.
* While the broker is away, rows stay in the spool (bounded, see :mod:`mailpulse.pi_firmware.spool`); paho
  reconnects with back-off and re-sends its in-flight messages; the pump continues where it was.
  After a daemon restart every row still in the spool is sent again, oldest first.  The guarantee
  is at-least-once; every event has a unique id, so consumers de-duplicate.
* The MQTT v5 session is persistent (``clean_start=False`` + ``session_expiry_s``), so the
  broker keeps the node's subscriptions (fleet, model) and queued messages across reconnects and
  broker restarts (Mosquitto with persistence).
* ``status`` is retained; the will (sent by the broker when the node vanishes) sets it to
  ``{"state": "offline"}``; a clean :meth:`close` publishes the same before disconnecting.
* A PUBACK with a refusal reason (not authorized, topic invalid, packet too large, payload format
  invalid) cannot succeed by retrying: those rows are dropped and counted as ``rejected``; any
  other failure reason makes the message be sent again.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mailpulse import topics as T
from mailpulse.config.node import MqttSettings

from .events import dumps as _dumps
from .quarantine import describe
from .spool import Spool, SpoolBatch

__all__ = ["MqttSettings", "MqttSink", "PublishStats", "batch_payload"]

log = logging.getLogger(__name__)

#: PUBACK reason codes that a retry cannot fix: the rows are dropped (counted as rejected).
_REFUSALS = {0x87, 0x90, 0x95, 0x99}


@dataclass
class PublishStats:
    """Counters of the sink (reported in status)."""

    emitted: int = 0
    anomalies: int = 0
    published: int = 0          # events acknowledged by the broker (channel "events")
    messages: int = 0           # MQTT messages acknowledged
    rejected: int = 0           # rows dropped because the broker refused them
    connects: int = 0
    last_error: str | None = None
    connected: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _EventLike(Protocol):
    @property
    def id(self) -> str: ...

    def payload(self) -> dict[str, Any]: ...


def _encode(ev: _EventLike) -> tuple[bytes, bool]:
    """An event's JSON payload and whether it is an anomaly (fast path for pipeline events)."""
    fast = getattr(ev, "payload_json", None)
    if fast is not None:
        sc = getattr(ev, "scored", None)
        return fast(), bool(sc is not None and sc.anomaly)
    p = ev.payload()
    return _dumps(p), bool(p.get("anomaly"))


def _envelope_head(site: str, node: str) -> bytes:
    head = json.dumps({"schema": T.PAYLOAD_SCHEMA, "site": site, "node": node}, separators=(",", ":"))
    return head[:-1].encode() + b',"events":['


def batch_payload(site: str, node: str, payloads: Iterable[bytes]) -> bytes:
    """The batch envelope of an ``events``/``anomalies`` message, from already-encoded payloads."""
    return _envelope_head(site, node) + b",".join(payloads) + b"]}"


class MqttSink:
    """The pipeline's sink: durable spool plus MQTT publisher (see the module docstring).

    Parameters
    ----------
    site, node : str
        Ids that name the topics.
    settings : MqttSettings
        Broker connection.
    spool : Spool
        The disk spool (owned by the caller; :meth:`close` does not close it).
    status : callable, optional
        Returns extra fields merged into every status payload (model version, probe results...).
    sw_version : str
        Software version shown in status and Home Assistant.
    """

    def __init__(self, site: str, node: str, settings: MqttSettings, spool: Spool,
                 status: Callable[[], Mapping[str, Any]] | None = None, sw_version: str = "") -> None:
        self.topics = T.NodeTopics(site, node)
        self.site, self.node = site, node
        self.settings = settings
        self.spool = spool
        self.stats = PublishStats()
        self._status_extra = status
        self.sw_version = sw_version
        self._subs: dict[str, Callable[[Any], None]] = {}
        self._acks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._pending: dict[int, SpoolBatch] = {}    # mid -> batch (pump thread only)
        self._retry: deque[SpoolBatch] = deque()
        self._ahead: deque[SpoolBatch] = deque()     # read from the spool, not yet published
        self._last_seq = 0
        self._head = _envelope_head(site, node)
        # spooled batches must fit one message with its envelope
        self._batch_bytes = max(1, settings.batch_max_bytes - len(self._head) - 2)
        self._connected = threading.Event()
        self._pump: threading.Thread | None = None
        self._started_at = time.time()
        s = settings
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"mailpulse-{site}-{node}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(max(20, s.inflight_max + 8))
        self.client.max_queued_messages_set(0)
        # at most 2 s between attempts: the node is back within 2 s of the broker (the spool holds the
        # events meanwhile, so retrying often costs nothing but a TCP SYN)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        if s.username is not None:
            self.client.username_pw_set(s.username, s.password)
        if s.tls:
            self.client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file,
                                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if s.tls_insecure:
                self.client.tls_insecure_set(True)
        else:
            log.warning("MQTT without TLS ([mqtt] tls = false): the node's password and events cross the network "
                        "in clear")
        self.client.will_set(self.topics.status, self._offline_payload(), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the pump."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        self._pump = threading.Thread(target=self._pump_loop, name="mqtt-pump", daemon=True)
        self._pump.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the spool is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            if len(self.spool) == 0 and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> bool:
        """Flush (up to ``timeout``), publish ``offline`` status, disconnect; return whether flushed.

        Rows not acknowledged stay in the spool for the next start.
        """
        flushed = self.flush(timeout) if self._connected.is_set() else False
        if self._connected.is_set():
            info = self.client.publish(self.topics.status, self._offline_payload(), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=min(timeout, 5.0))
            except (RuntimeError, ValueError):
                pass
        self._stop.set()
        self._wake.set()
        if self._pump is not None:
            self._pump.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
        return flushed

    # -- the Sink protocol --------------------------------------------------------------------

    def emit(self, event: _EventLike) -> None:
        """Spool one event (durable when this returns); it is published in the background."""
        self.emit_many([event])

    def emit_many(self, events: Iterable[_EventLike]) -> None:
        """Spool events in one transaction, in order (durable when this returns)."""
        self._spool_rows((ev.id, *_encode(ev)) for ev in events)

    def emit_encoded(self, rows: Iterable[tuple[str, bytes, bool]]) -> None:
        """Spool already-encoded events: ``(event_id, payload JSON, anomaly)`` tuples."""
        self._spool_rows(rows)

    def emit_payloads(self, rows: Iterable[tuple[str, Mapping[str, Any], bool]]) -> None:
        """Spool raw payload dicts: ``(event_id, payload, anomaly)`` tuples."""
        self._spool_rows((eid, _dumps(p), anomaly) for eid, p, anomaly in rows)

    def _spool_rows(self, items: Iterable[tuple[str, bytes, bool]]) -> None:
        # the events of a call first, then the anomalies among them: two runs, so few batches
        ev_rows: list[tuple[str, str, bytes]] = []
        an_rows: list[tuple[str, str, bytes]] = []
        for eid, data, anomaly in items:
            ev_rows.append(("events", eid, data))
            if anomaly:
                an_rows.append(("anomalies", eid, data))
        if not ev_rows:
            return
        self.spool.put_many(ev_rows + an_rows, max_events=self.settings.batch_max_events, max_bytes=self._batch_bytes)
        self.stats.emitted += len(ev_rows)
        self.stats.anomalies += len(an_rows)
        self._idle.clear()
        self._wake.set()

    # -- status, discovery, subscriptions -----------------------------------------------------

    def _offline_payload(self) -> bytes:
        return _dumps({"schema": T.PAYLOAD_SCHEMA, "site": self.site, "node": self.node, "state": "offline",
                       "ts": time.time()})

    def status_payload(self) -> dict[str, Any]:
        """The retained status document (``state`` online, counters, spool, extras)."""
        st = self.spool.stats()
        doc: dict[str, Any] = {
            "schema": T.PAYLOAD_SCHEMA, "site": self.site, "node": self.node, "state": "online",
            "ts": time.time(), "started": self._started_at, "version": self.sw_version,
            "emitted": self.stats.emitted, "published": self.stats.published, "anomalies": self.stats.anomalies,
            "rejected": self.stats.rejected, "spool": st.as_dict(),
        }
        if self._status_extra is not None:
            doc.update(self._status_extra())
        return doc

    def publish_status(self) -> None:
        """Publish the retained status now (also done at every connect)."""
        self.client.publish(self.topics.status, _dumps(self.status_payload()), qos=1, retain=True)

    def subscribe(self, topic: str, handler: Callable[[Any], None]) -> None:
        """Subscribe (QoS 1) now and after every reconnect; ``handler`` runs in the network thread."""
        self._subs[topic] = handler
        self.client.message_callback_add(topic, lambda _c, _u, msg: handler(msg))
        if self._connected.is_set():
            self.client.subscribe(topic, qos=1)

    def _publish_discovery(self) -> None:
        for topic, cfg in T.ha_discovery(self.site, self.node, self.sw_version).items():
            self.client.publish(topic, _dumps(cfg), qos=1, retain=True)

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            self.stats.last_error = f"connect refused: {rc}"
            log.warning("MQTT connect to %s:%s refused: %s", self.settings.host, self.settings.port, rc)
            return
        self.stats.connects += 1
        self.stats.connected = True
        for topic in self._subs:
            client.subscribe(topic, qos=1)
        client.publish(self.topics.status, _dumps(self.status_payload()), qos=1, retain=True)
        if self.settings.ha_discovery:
            self._publish_discovery()
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Properties | None) -> None:
        self._connected.clear()
        self.stats.connected = False
        if rc.is_failure:
            self.stats.last_error = f"disconnected: {rc}"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Properties | None) -> None:
        # Runs with paho's internal locks held: hand over to the pump thread, take no lock here.
        self._acks.put((mid, rc.value))
        self._wake.set()

    # -- the pump -----------------------------------------------------------------------------

    def _drain_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid, code = self._acks.get_nowait()
            except queue.Empty:
                break
            batch = self._pending.pop(mid, None)
            if batch is None:  # status, discovery: not spooled
                continue
            self._settle(batch, code, done)
        if done:
            self.spool.ack_batches(done)

    def _settle(self, batch: SpoolBatch, code: int, done: list[int]) -> None:
        if code < 0x80:
            done.append(batch.seq)
            self.stats.messages += 1
            if batch.channel == "events":
                self.stats.published += batch.n
        elif code in _REFUSALS:
            done.append(batch.seq)
            self.stats.rejected += batch.n
            self.stats.last_error = f"broker refused a message on {batch.channel}: reason code 0x{code:02x}"
            log.error("%s", self.stats.last_error)
        else:
            self._retry.append(batch)

    def _next_batch(self) -> SpoolBatch | None:
        if self._retry:
            return self._retry.popleft()
        if not self._ahead:
            want = max(1, self.settings.inflight_max - len(self._pending))
            self._ahead.extend(self.spool.peek_batches(want, after=self._last_seq))
            if not self._ahead:
                return None
            self._last_seq = self._ahead[-1].seq
        return self._ahead.popleft()

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._drain_acks()
                while self._connected.is_set() and len(self._pending) < self.settings.inflight_max:
                    batch = self._next_batch()
                    if batch is None:
                        break
                    topic = self.topics.channel(batch.channel)
                    info = self.client.publish(topic, self._head + batch.payload + b"]}", qos=1)
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                        # not queued by paho: send again later, in order
                        self._retry.appendleft(batch)
                        break
                    # Acks are drained only by this thread, after this registration: no race.
                    self._pending[info.mid] = batch
                if not self._pending and not self._retry and not self._ahead and self._acks.empty() \
                        and not self.spool.has_after(self._last_seq):
                    self._idle.set()
                else:
                    self._idle.clear()
            except Exception as e:  # keep the pump alive; the spool keeps the data
                self.stats.last_error = f"publisher error: {describe(e)}"
                log.exception("MQTT publisher error")
                time.sleep(0.5)
