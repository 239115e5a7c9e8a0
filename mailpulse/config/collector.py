"""The collector's configuration: one TOML file, built like the node's (:mod:`mailpulse.config.node`).

Every key is optional except ``[archive] dir``; every key, with its type, default and meaning, is in
``docs/config.md``.  Passwords come from environment variables named in the file
(``[mqtt] password_env``, ``[alerts] password_env``).

:func:`check_config` returns every problem as one sentence; :func:`load_config` raises
:class:`~mailpulse.errors.UserError` with the first one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from mailpulse.errors import UserError

from .base import (
    Address,
    BrokerSettings,
    Host,
    Id,
    ParamsName,
    Port,
    SecretSource,
    Section,
    read_toml,
    secret_field,
)
from .validation import validate

__all__ = ["AlertSettings", "ArchiveSettings", "ClockSettings", "CollectorConfig", "CorrelateSettings",
           "HealthSettings", "MetricsSettings", "MqttSettings", "RelaySettings", "RetrainSettings", "WebSettings", "check_config",
           "load_config", "parse_config"]


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")) or len(v) > 2048:
        raise ValueError("must be an http:// or https:// URL")
    return v


def _share_group(v: str) -> str:
    if any(c in v for c in "/+#"):
        raise ValueError("must not contain '/', '+' or '#'")
    return v


class MqttSettings(BrokerSettings):
    """``[mqtt]``: the collector's broker connection and subscriptions."""

    client_id: str = Field("mailpulse-collector", description="MQTT client id; the broker's persistent session "
                                                              "(the collector's queue while it is away) is tied to it.")
    share_group: Annotated[str, AfterValidator(_share_group)] = Field(
        "", description="Non-empty: subscribe `$share/<group>/...`, so collectors of one group split the load.")
    subscribe_anomalies: bool = Field(False, description="Also subscribe the `anomalies` topics (they are in "
                                                         "`events` too; de-duplication makes this harmless).")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First wait before reconnecting to a lost broker.")
    reconnect_max_s: float = Field(1.0, gt=0, le=300, description="Longest wait between reconnection attempts (the "
                                                                  "collector is back within this of the broker).")
    max_message_bytes: int = Field(1 << 20, ge=1024, le=256 << 20,
                                   description="Larger messages are quarantined unparsed; at least the nodes' "
                                               "`batch_max_bytes`.")

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s:g}) must be at least reconnect_min_s "
                             f"({self.reconnect_min_s:g})")
        return self


class ArchiveSettings(Section):
    """``[archive]``: where accepted events are kept (segments, de-duplication index)."""

    dir: Annotated[str, Field(min_length=1)] = Field(description="Folder of the archive's segments.")
    max_bytes: int = Field(64 << 20, ge=1024, description="A segment is closed at this many uncompressed bytes.")
    max_age_s: float = Field(600.0, gt=0, description="... or after this many seconds.")
    fsync: bool = Field(True, description="fsync each batch before acknowledging it to the broker.")
    dedup_capacity: int = Field(1_000_000, ge=1000, description="Event ids remembered in memory for de-duplication "
                                                                "(about 130 MB per million).")
    index_segments: int = Field(16, ge=0, description="Newest segments read at start to seed the de-duplication.")


class CorrelateSettings(Section):
    """``[correlate]``: the walk that finds the relay, hop or node behind an anomaly burst."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    bucket_s: float = Field(10.0, gt=0, description="Width of a time bucket (event time) of the path tree's "
                                                    "statistics.")
    window_s: float = Field(60.0, gt=0, description="The \"current\" window compared with the history.")
    history_s: float = Field(1800.0, ge=0, description="The baseline before the window.")
    eval_interval_s: float = Field(10.0, gt=0, description="Period of the evaluation (plus a quick one 0.25 s after "
                                                           "new anomalies).")
    max_depth: int = Field(8, ge=1, description="Deepest tree level the walk descends to.")
    min_anomalies: int = Field(5, ge=1, description="Fewest window anomalies of a suspect.")
    z_min: float = Field(3.0, description="Smallest binomial z-score of a suspect against its baseline rate.")
    min_ratio: float = Field(2.0, description="Smallest ratio of a suspect's window rate to its baseline rate (an "
                                              "effect size).")
    floor_rate: float = Field(0.02, gt=0, lt=1, description="Floor of the baseline anomaly rate (a quiet "
                                                            "history is not infinitely sensitive).")
    explain_frac: float = Field(0.6, gt=0, le=1, description="Share of a node's window anomalies its suspects must "
                                                             "hold for the walk to descend into them.")
    resolve_after: int = Field(3, ge=1, description="Quiet evaluations before an incident resolves.")
    samples_per_bucket: int = Field(128, ge=1, description="Latency and hop-delay samples kept per tree node and "
                                                           "bucket.")
    examples: int = Field(5, ge=0, description="Example event ids kept per tree node and bucket (an incident's "
                                               "evidence).")
    watermark_idle_s: float = Field(30.0, gt=0, description="A node silent this long (receive time) no longer holds "
                                                            "the correlation watermark back.")
    watermark_max_lag_s: float = Field(120.0, gt=0, description="The watermark is at least the newest receive time "
                                                                "minus this (a node's old backlog holds nobody back).")

    @model_validator(mode="after")
    def _window_holds_buckets(self) -> CorrelateSettings:
        if self.window_s < self.bucket_s:
            raise ValueError(f"window_s ({self.window_s:g}) must be at least bucket_s ({self.bucket_s:g}): "
                             "the window holds whole buckets")
        return self


class ClockSettings(Section):
    """``[clock]``: how far a node's clock may be off (see docs/collector.md, time)."""

    max_offset_s: float = Field(30.0, gt=0, description="A node whose estimated clock offset is larger is skewed: "
                                                        "reported, and kept out of the correlation.")
    max_future_s: float = Field(10.0, ge=0, description="An event time further ahead of its receive time (after "
                                                        "the offset correction) is replaced by the receive time.")


class HealthSettings(Section):
    """``[health]``: the collector's view of its own ingest and of the nodes' heartbeats."""

    heartbeat_s: float = Field(10.0, gt=0, description="Nodes' heartbeat period when their status does not say it.")
    missed_heartbeats: int = Field(3, ge=1, description="A node is offline after this many heartbeats without a "
                                                        "message, even without its last will.")
    ingest_stall_s: float = Field(30.0, gt=0, description="No message (or no broker) for this long, after ingest "
                                                          "ran: the collector opens an incident of its own.")


class MetricsSettings(Section):
    """``[metrics]``: bounds of ``/metrics`` against label floods."""

    label_values: int = Field(50, ge=1, le=10000, description="Distinct values kept per label of a free-text origin "
                                                              "(status, route, outcome); the rest count as `other`.")
    nodes: int = Field(1000, ge=1, le=100000, description="Distinct site/node label pairs kept; the rest count as "
                                                          "`other`.")


_RELAY_ADDR = r"^[A-Za-z0-9._:\[\]-]{1,255}$"
_RELAY_NAME = r"^[A-Za-z0-9._-]{1,64}$"
RelayAddress = Annotated[str, Field(pattern=_RELAY_ADDR)]
RelayName = Annotated[str, Field(pattern=_RELAY_NAME)]


class RelaySettings(Section):
    """``[relays]``: names of the relays, shown instead of addresses in metrics, alerts and the dashboard."""

    names: dict[RelayAddress, RelayName] = Field(
        default_factory=dict, max_length=10000,
        description="Address to name, e.g. `{ \"127.0.0.1:47627\" = \"relay2\", \"mx.example.net\" = \"mx\" }`. An address "
                    "is `host:port`, `ip:port`, `host` or `ip` (`[v6]:port` for IPv6); Postfix's `host[ip]:port` matches "
                    "any of them, most specific first. Unnamed relays show as `host:port`.")


class AlertSettings(Section):
    """``[alerts]``: e-mail about incidents (off when the section is absent)."""

    enabled: bool = Field(True, description="Send alerts (a config without `[alerts]` sends none).")
    smtp_host: Host = Field("127.0.0.1", description="SMTP server the alerts are sent through.")
    smtp_port: Port = Field(25, description="Its port.")
    starttls: bool = Field(False, description="Use STARTTLS.")
    username: str | None = Field(None, description="SMTP AUTH user (the password comes from `password_env`).")
    password: str | None = secret_field("The SMTP AUTH password (from `password_env`).")
    password_env: str = Field("", description="Environment variable holding the SMTP AUTH password.")
    sender: Address = Field("mailpulse@localhost", description="From address of the alerts.")
    to: list[Address] = Field(default_factory=list, description="Recipients.")
    rate_limit_per_hour: int = Field(20, ge=1, description="Most alerts per hour.")
    min_interval_s: float = Field(300.0, ge=0, description="Flap interval: the same incident is not re-sent sooner.")
    summary_interval_s: float = Field(86400.0, ge=60, description="Period of the summary mail.")
    dashboard_url: str = Field("", description="Public URL of the dashboard as operators reach it (proxy, DNS name); "
                                               "each alert links to `<dashboard_url>#incident=<id>` (default: the "
                                               "dashboard's own listening address, right only on the collector's "
                                               "machine).")
    webhook_urls: list[Annotated[str, AfterValidator(_http_url)]] = Field(
        default_factory=list, description="Alertmanager-format webhooks (`http(s)://...`): a channel that does not "
                                          "depend on the monitored mail path.")
    webhook_token: str | None = secret_field("Bearer token of the webhooks (from `webhook_token_env`).")
    webhook_token_env: str = Field("", description="Environment variable holding the webhooks' bearer token.")
    outbox_dir: str = Field("", description="Folder of the persistent alert outbox (default: `outbox/` in the "
                                            "archive folder).")
    retry_min_s: float = Field(5.0, gt=0, description="First wait before retrying a failed delivery (doubles).")
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between retries.")
    give_up_after_s: float = Field(86400.0, gt=0, description="A delivery still failing after this long is given "
                                                              "up (counted as failed, kept in `outbox/failed/`).")

    @model_validator(mode="after")
    def _someone_to_tell(self) -> AlertSettings:
        if self.enabled and not self.to and not self.webhook_urls:
            raise ValueError("to must list at least one recipient (or webhook_urls a webhook) when alerts are enabled")
        return self


class WebSettings(Section):
    """``[web]``: the live dashboard and ``/metrics``."""

    enabled: bool = Field(True, description="Serve the dashboard.")
    host: Host = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0: any free port).")


class RetrainSettings(Section):
    """``[retrain]``: scheduled retraining from the archive and publishing to the sites."""

    enabled: bool = Field(False, description="Retrain on a schedule.")
    interval_s: float = Field(86400.0, ge=60, description="Retraining period.")
    sites: list[Id] = Field(default_factory=list, description="Sites the new model is published to.")
    params: ParamsName = Field("small", description="Core parameter set of the model.")
    false_alarm_rate: float = Field(0.01, gt=0, lt=0.5, description="Target false-alarm rate of the threshold.")
    recent_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the newest events held out for the guard.")
    max_far_increase: float = Field(0.0, ge=0, description="How much worse than the current model the new one's "
                                                           "false-alarm rate may be before it is refused.")

    @model_validator(mode="after")
    def _somewhere_to_publish(self) -> RetrainSettings:
        if self.enabled and not self.sites:
            raise ValueError("sites must list the sites to publish to when retraining is enabled")
        return self


class CollectorConfig(Section):
    """The whole collector configuration (one TOML file)."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    archive: ArchiveSettings
    correlate: CorrelateSettings = Field(default_factory=CorrelateSettings)
    alerts: AlertSettings = Field(default_factory=lambda: AlertSettings(enabled=False))
    web: WebSettings = Field(default_factory=WebSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    clock: ClockSettings = Field(default_factory=ClockSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    relays: RelaySettings = Field(default_factory=RelaySettings)


def _resolve(cfg: CollectorConfig, env: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    secrets = SecretSource(None, env)
    cfg.mqtt.password = secrets.get("", cfg.mqtt.password_env, "[mqtt]", "password_env", needed=False, out=out)
    cfg.alerts.password = secrets.get("", cfg.alerts.password_env, "[alerts]", "password_env", needed=False, out=out)
    cfg.alerts.webhook_token = secrets.get("", cfg.alerts.webhook_token_env, "[alerts]", "webhook_token_env",
                                           needed=False, out=out)
    return out


def parse_config(doc: Any, source: str = "<config>") -> tuple[CollectorConfig | None, list[str]]:
    """The config of a parsed TOML document and its problems (each one sentence, prefixed with
    ``source``); None when there are any.  Passwords are read from the environment here."""
    cfg, errors = validate(CollectorConfig, doc, local=True)
    if cfg is not None:
        errors = _resolve(cfg, os.environ)
    return (None if errors else cfg), [f"{source}: {e}" for e in errors]


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of a config file, one sentence each (empty when it is valid)."""
    p = Path(path)
    try:
        doc = read_toml(p, "config file")
    except UserError as e:
        return [f"{e}."]
    return parse_config(doc, str(p))[1]


def load_config(path: str | os.PathLike[str]) -> CollectorConfig:
    """Read and validate a config file; :class:`UserError` naming the first problem."""
    cfg, errors = parse_config(read_toml(Path(path), "config file"), str(path))
    if cfg is None:
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more problems; run 'mailpulse collector check-config')"
        raise UserError(errors[0].rstrip(".") + more)
    return cfg
