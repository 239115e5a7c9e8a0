"""An MQTT subscriber that records what mailpulse nodes publish (tests, demo, debugging)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mailpulse import topics as T
from mailpulse.collector.provision import Client

__all__ = ["Received", "Recorder"]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload.decode()) if self.payload else None


class Recorder:
    """Subscribes (QoS 1, persistent session) and keeps every message.

    Parameters
    ----------
    host, port : the broker (TLS)
    identity : Client
        The MQTT identity (user, password, CA and client certificate) of a consumer of the deployment.
    topics : sequence of str
        Subscriptions (default: every mailpulse topic).
    client_id : str
        Session id; the same id after a reconnect gets the messages queued meanwhile.
    """

    def __init__(self, host: str, port: int, identity: Client, topics: Sequence[str] = (f"{T.PREFIX}/#",),
                 client_id: str = "mailpulse-recorder") -> None:
        self.messages: list[Received] = []
        self._events: dict[str, list[dict[str, Any]]] = {"events": [], "anomalies": []}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.topics = list(topics)
        self.connected = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(identity.user, identity.password)
        self.client.tls_set(ca_certs=str(identity.ca_file), certfile=str(identity.cert_file),
                            keyfile=str(identity.key_file))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        for t in self.topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        rec = Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time())
        batch: list[dict[str, Any]] = []
        channel = ""
        try:
            channel = T.parse_topic(msg.topic).channel
            if channel in self._events:
                batch = list(rec.json()["events"])
        except (ValueError, KeyError, TypeError):
            pass
        with self._cond:
            self.messages.append(rec)
            if batch:
                self._events[channel].extend(batch)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[Recorder], bool], timeout: float = 10.0) -> bool:
        """Wait until ``pred(self)`` is true (checked at every message and every 0.1 s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if pred(self):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))

    def on(self, channel: str) -> list[Received]:
        """Messages of one channel (``events``, ``anomalies``, ``status``, ``model``)."""
        out = []
        for m in list(self.messages):
            try:
                if T.parse_topic(m.topic).channel == channel:
                    out.append(m)
            except ValueError:
                continue
        return out

    def events(self, channel: str = "events") -> list[dict[str, Any]]:
        """Every event of every batch message on ``channel`` (``events`` or ``anomalies``), in
        arrival order, duplicates included."""
        return list(self._events[channel])

    def event_ids(self, channel: str = "events") -> list[str]:
        return [e["id"] for e in self.events(channel)]

    def last_status(self, node: str) -> dict[str, Any] | None:
        for m in reversed(self.on("status")):
            if T.parse_topic(m.topic).node == node:
                doc: dict[str, Any] = m.json()
                return doc
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
