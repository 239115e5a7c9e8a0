"""MQTT topics and payload envelopes: the one module that owns every topic string.

Layout (``<site>`` and ``<node>`` are ids made of ``[A-Za-z0-9_-]``, never ``/ + #``)::

    mailpulse/v1/<site>/<node>/events      batches of scored events (QoS 1, not retained)
    mailpulse/v1/<site>/<node>/anomalies   the events flagged anomalous, again (QoS 1)
    mailpulse/v1/<site>/<node>/status      node state (retained; last will = state "offline")
    mailpulse/v1/<site>/model              the site's current model file (retained, from the trainer)
    homeassistant/sensor/<object>/<key>/config   Home Assistant discovery (retained; object: NodeTopics.ha_object)

Every payload is JSON with ``"schema": PAYLOAD_SCHEMA``.  An ``events``/``anomalies`` message is a
*batch* envelope ``{"schema", "site", "node", "events": [event, ...]}``; each event carries its own
unique ``id`` (see :mod:`mailpulse.pi_firmware.events`), so a consumer de-duplicates replays by id.  The
broker's ACL (:func:`node_acl`) lets a node write only below its own ``<site>/<node>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Version of the topic layout and of the envelopes (``events``, ``status``).
PAYLOAD_SCHEMA = 1

#: Root of every mailpulse topic (the ``v1`` is the topic layout version).
PREFIX = "mailpulse/v1"

#: Home Assistant's default discovery prefix.
HA_PREFIX = "homeassistant"

#: Topic leaves below ``<site>/<node>``.
CHANNELS = ("events", "anomalies", "status")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The id rule in words (error messages, the config docs).
ID_RULE = "1-64 characters of letters, digits, '_' or '-'"


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid site or node id, else raise ``ValueError`` naming it."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what} id {value!r} must be {ID_RULE}")
    return value


@dataclass(frozen=True)
class NodeTopics:
    """The topics of one node."""

    site: str
    node: str

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        check_id(self.node, "node")

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.site}/{self.node}"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def anomalies(self) -> str:
        return f"{self.base}/anomalies"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def channel(self, name: str) -> str:
        """Topic of channel ``events``, ``anomalies`` or ``status``."""
        if name not in CHANNELS:
            raise ValueError(f"unknown channel {name!r}; known: {', '.join(CHANNELS)}")
        return f"{self.base}/{name}"

    @property
    def model(self) -> str:
        return model_topic(self.site)

    @property
    def fleet_status(self) -> str:
        return status_wildcard(self.site)

    def ha_object(self) -> str:
        """Home Assistant object id of this node, unique per (site, node).

        ``mailpulse_<site>_<node>`` when neither id holds ``_`` (as before); otherwise the site's
        length comes first, ``mailpulse_<len(site)>_<site>_<node>``, so site ``lab_x`` / node ``y``
        (``mailpulse_5_lab_x_y``) and site ``lab`` / node ``x_y`` (``mailpulse_3_lab_x_y``) differ.
        The two forms never meet: the first has one ``_`` after ``mailpulse_``, the second at least three.
        """
        if "_" in self.site or "_" in self.node:
            return f"mailpulse_{len(self.site)}_{self.site}_{self.node}"
        return f"mailpulse_{self.site}_{self.node}"

    def ha_config(self, key: str) -> str:
        """Home Assistant discovery topic of sensor ``key`` of this node."""
        return f"{HA_PREFIX}/sensor/{self.ha_object()}/{key}/config"


def model_topic(site: str) -> str:
    """The retained topic carrying the site's current model file."""
    return f"{PREFIX}/{check_id(site, 'site')}/model"


def status_wildcard(site: str) -> str:
    """Subscription matching the status of every node of ``site``."""
    return f"{PREFIX}/{check_id(site, 'site')}/+/status"


#: Subscriptions of a central consumer (the collector): every site, every node.
SUBSCRIPTIONS = {ch: f"{PREFIX}/+/+/{ch}" for ch in CHANNELS}


@dataclass(frozen=True)
class ParsedTopic:
    site: str
    node: str | None
    channel: str


def parse_topic(topic: str) -> ParsedTopic:
    """Split a mailpulse topic into site, node (None for the model topic) and channel.

    Raises ``ValueError`` for a topic outside the layout.
    """
    parts = topic.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) == PREFIX and parts[3] == "model":
        return ParsedTopic(parts[2], None, "model")
    if len(parts) == 5 and "/".join(parts[:2]) == PREFIX and parts[4] in CHANNELS:
        return ParsedTopic(parts[2], parts[3], parts[4])
    raise ValueError(f"topic {topic!r} is not a mailpulse v1 topic")


def node_user(site: str, node: str) -> str:
    """The MQTT user name of a node: ``<site>.<node>`` (ids never hold ``.``, so two nodes of
    different sites never share a user, and so never an ACL)."""
    return f"{check_id(site, 'site')}.{check_id(node, 'node')}"


def node_acl(site: str, node: str, user: str | None = None) -> list[str]:
    """Lines of a Mosquitto ACL file for one node's MQTT user (default :func:`node_user`).

    The node may write its own events, anomalies, status and discovery topics, and read the fleet's
    status and the site's model; nothing else (so it cannot publish as another node).
    """
    t = NodeTopics(site, node)
    return [
        f"user {user or node_user(site, node)}",
        f"topic write {t.base}/#",
        f"topic read {t.fleet_status}",
        f"topic read {t.model}",
        f"topic write {HA_PREFIX}/sensor/{t.ha_object()}/#",
    ]


def collector_acl(user: str) -> list[str]:
    """ACL lines for a central consumer: read everything of mailpulse, write the model topics."""
    if not user or any(c.isspace() for c in user):
        raise ValueError(f"MQTT user {user!r} must be a non-empty name without spaces")
    return [f"user {user}", f"topic read {PREFIX}/#", f"topic write {PREFIX}/+/model", f"topic read {HA_PREFIX}/#"]


#: Node sensors announced to Home Assistant: key -> (name, unit, JSON path in the status payload,
#: device class or None).
HA_SENSORS: dict[str, tuple[str, str | None, str, str | None]] = {
    "probe_latency": ("Probe latency", "ms", "probe.latency_ms", "duration"),
    "probe_fidelity": ("Probe fidelity", "dB", "probe.psnr_db", None),
    "probe_outcome": ("Probe outcome", None, "probe.outcome", None),
    "events_published": ("Events published", None, "published", None),
    "anomalies": ("Anomalies", None, "anomalies", None),
    "spool_depth": ("Spool depth", None, "spool.depth", None),
    "model_version": ("Model version", None, "model_version", None),
}


def ha_discovery(site: str, node: str, sw_version: str = "") -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: discovery topic -> config payload, one per node sensor.

    Each sensor reads its value from the node's retained status (``value_template`` over the JSON)
    and its availability from the same topic's ``state`` (``online`` / ``offline`` = last will).
    """
    t = NodeTopics(site, node)
    device = {"identifiers": [t.ha_object()], "name": f"mailpulse {site}/{node}", "manufacturer": "mailpulse",
              "model": "mailpulse node", "sw_version": sw_version}
    out: dict[str, dict[str, Any]] = {}
    for key, (name, unit, path, dev_class) in HA_SENSORS.items():
        tmpl = "{{ value_json." + path + " | default(None) }}"
        cfg: dict[str, Any] = {
            "name": name,
            "unique_id": f"{t.ha_object()}_{key}",
            "object_id": f"{t.ha_object()}_{key}",
            "state_topic": t.status,
            "value_template": tmpl,
            "availability_topic": t.status,
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        if unit:
            cfg["unit_of_measurement"] = unit
            cfg["state_class"] = "measurement"
        if dev_class:
            cfg["device_class"] = dev_class
        out[t.ha_config(key)] = cfg
    return out


__all__ = [
    "CHANNELS", "HA_PREFIX", "HA_SENSORS", "PAYLOAD_SCHEMA", "PREFIX", "SUBSCRIPTIONS", "NodeTopics",
    "ParsedTopic", "check_id", "collector_acl", "ha_discovery", "model_topic", "node_acl", "node_user", "parse_topic",
    "status_wildcard",
]
