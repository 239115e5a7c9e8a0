"""The collector's typed, validated TOML configuration.

Example (every key is optional except ``[archive] dir``)::

    [mqtt]
    host = "broker.example.net"
    port = 8883
    username = "collector"
    password_env = "MAILPULSE_MQTT_PASSWORD"   # the password comes from the environment
    tls = true
    ca_file = "/etc/mailpulse/ca.pem"
    client_id = "mailpulse-collector-1"        # the persistent session is tied to it
    session_expiry_s = 86400
    share_group = ""                           # non-empty: $share/<group>/... to split the load

    [archive]
    dir = "/var/lib/mailpulse/archive"
    max_bytes = 67108864
    max_age_s = 600

    [correlate]
    window_s = 60
    history_s = 1800

    [alerts]
    smtp_host = "127.0.0.1"
    to = ["ops@example.net"]

    [web]
    port = 8080

    [retrain]
    enabled = false

:func:`check_config` returns every problem as one sentence; :func:`load_config` raises
``UserError`` with the first one.  Unknown sections and keys are errors (a typo never passes
silently).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

from .correlate import CorrelateSettings

__all__ = ["AlertSettings", "ArchiveSettings", "CollectorConfig", "MqttSettings", "RetrainSettings", "WebSettings",
           "check_config", "load_config", "parse_config"]


@dataclass
class MqttSettings:
    """Broker connection of the collector (see the module docstring)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    tls: bool = False
    ca_file: str | None = None
    client_id: str = "mailpulse-collector"
    session_expiry_s: int = 86400
    keepalive_s: int = 30
    share_group: str = ""
    subscribe_anomalies: bool = False

    def validate(self, errors: list[str]) -> None:
        if not 0 < self.port < 65536:
            errors.append(f"[mqtt] port {self.port} is not a TCP port (1-65535).")
        if self.session_expiry_s < 0:
            errors.append("[mqtt] session_expiry_s must not be negative.")
        if self.share_group and any(c in self.share_group for c in "/+#"):
            errors.append(f"[mqtt] share_group {self.share_group!r} must not contain '/', '+' or '#'.")
        if self.ca_file and not Path(self.ca_file).is_file():
            errors.append(f"[mqtt] ca_file {self.ca_file} does not exist.")
        if self.password_env and self.password is None and self.password_env not in os.environ:
            errors.append(f"[mqtt] password_env names the environment variable {self.password_env}, which is not set.")

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password
        return os.environ.get(self.password_env) if self.password_env else None


@dataclass
class ArchiveSettings:
    dir: str = ""
    max_bytes: int = 64 << 20
    max_age_s: float = 600.0
    fsync: bool = True
    dedup_capacity: int = 1_000_000
    index_segments: int = 16

    def validate(self, errors: list[str]) -> None:
        if not self.dir:
            errors.append("[archive] dir is required (the folder of the archive's segments).")
        if self.max_bytes < 1024:
            errors.append(f"[archive] max_bytes {self.max_bytes} is below 1024.")
        if self.max_age_s <= 0:
            errors.append("[archive] max_age_s must be positive.")
        if self.dedup_capacity < 1000:
            errors.append("[archive] dedup_capacity must be at least 1000 event ids.")


@dataclass
class AlertSettings:
    enabled: bool = True
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    sender: str = "mailpulse@localhost"
    to: list[str] = field(default_factory=list)
    rate_limit_per_hour: int = 20
    min_interval_s: float = 300.0
    summary_interval_s: float = 86400.0
    dashboard_url: str = ""

    def validate(self, errors: list[str]) -> None:
        if self.enabled and not self.to:
            errors.append("[alerts] to must list at least one recipient when alerts are enabled.")
        for a in self.to:
            if "@" not in a:
                errors.append(f"[alerts] recipient {a!r} is not an e-mail address.")
        if not 0 < self.smtp_port < 65536:
            errors.append(f"[alerts] smtp_port {self.smtp_port} is not a TCP port (1-65535).")
        if self.rate_limit_per_hour < 1:
            errors.append("[alerts] rate_limit_per_hour must be at least 1.")
        if self.summary_interval_s < 60:
            errors.append("[alerts] summary_interval_s must be at least 60 seconds.")


@dataclass
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080

    def validate(self, errors: list[str]) -> None:
        if not 0 <= self.port < 65536:
            errors.append(f"[web] port {self.port} is not a TCP port (0-65535, 0 = any free port).")


@dataclass
class RetrainSettings:
    enabled: bool = False
    interval_s: float = 86400.0
    sites: list[str] = field(default_factory=list)
    params: str = "small"
    false_alarm_rate: float = 0.01
    recent_fraction: float = 0.2
    max_far_increase: float = 0.0

    def validate(self, errors: list[str]) -> None:
        if self.enabled and not self.sites:
            errors.append("[retrain] sites must list the sites to publish to when retraining is enabled.")
        if self.interval_s < 60:
            errors.append("[retrain] interval_s must be at least 60 seconds.")
        if not 0 < self.recent_fraction < 1:
            errors.append("[retrain] recent_fraction must be between 0 and 1.")
        if not 0 < self.false_alarm_rate < 0.5:
            errors.append("[retrain] false_alarm_rate must be between 0 and 0.5.")


@dataclass
class CollectorConfig:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    correlate: CorrelateSettings = field(default_factory=CorrelateSettings)
    alerts: AlertSettings = field(default_factory=lambda: AlertSettings(enabled=False))
    web: WebSettings = field(default_factory=WebSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    source: str = "<config>"


_SECTIONS: dict[str, type] = {"mqtt": MqttSettings, "archive": ArchiveSettings, "correlate": CorrelateSettings,
                              "alerts": AlertSettings, "web": WebSettings, "retrain": RetrainSettings}


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if typing.get_origin(tp) is list:
        return "a list of strings"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return names.get(tp, str(tp))


def _section(name: str, cls: type, doc: Any, errors: list[str]) -> Any:
    if not isinstance(doc, dict):
        errors.append(f"[{name}] must be a table.")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in known:
            errors.append(f"[{name}] has an unknown key {key!r} (known: {', '.join(sorted(known))}).")
            continue
        tp = hints[key]
        if not _type_ok(value, tp):
            errors.append(f"[{name}] {key} must be {_type_name(tp)}, not {value!r}.")
            continue
        kw[key] = float(value) if tp is float else value
    try:
        obj = cls(**kw)
    except ValueError as e:
        errors.append(f"[{name}] {e}.")
        return cls()
    if hasattr(obj, "validate"):
        obj.validate(errors)
    return obj


def parse_config(doc: dict[str, Any], source: str = "<config>") -> tuple[CollectorConfig, list[str]]:
    """Typed config and the list of problems (each one sentence) from a parsed TOML document."""
    errors: list[str] = []
    parts: dict[str, Any] = {}
    for key in doc:
        if key not in _SECTIONS:
            errors.append(f"unknown section [{key}] (known: {', '.join(_SECTIONS)}).")
    for name, cls in _SECTIONS.items():
        if name == "alerts" and name not in doc:
            parts[name] = AlertSettings(enabled=False)
            continue
        parts[name] = _section(name, cls, doc.get(name, {}), errors)
    cfg = CollectorConfig(**parts, source=source)
    return cfg, [f"{source}: {e}" for e in errors]


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of a config file, one sentence each (empty when it is valid)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        return [f"config file {p} does not exist."]
    except (OSError, UnicodeDecodeError) as e:
        return [f"config file {p} cannot be read ({e})."]
    except tomllib.TOMLDecodeError as e:
        return [f"config file {p} is not valid TOML ({e})."]
    return parse_config(doc, str(p))[1]


def load_config(path: str | os.PathLike[str]) -> CollectorConfig:
    """Read and validate a config file; raises ``UserError`` naming the first problem."""
    errors = check_config(path)
    if errors:
        more = f" (and {len(errors) - 1} more problems; run 'mailpulse collector check-config')" if len(errors) > 1 else ""
        raise UserError(errors[0].rstrip(".") + more)
    doc = tomllib.loads(Path(path).read_text())
    return parse_config(doc, str(path))[0]
