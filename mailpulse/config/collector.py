"""The collector's configuration: one TOML file, built like the node's (:mod:`mailpulse.config.node`).

Every key is optional except ``[archive] dir``; every key, with its type, default and meaning, is in
``docs/config.md``.  Passwords come from the secrets file (``secrets_file``, mode 0600, written by
``mailpulse collector init``) or from environment variables named in the file (``*_env``).

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
    FileHere,
    Host,
    Id,
    ParamsName,
    Port,
    RelaySettings,
    SecretSource,
    Section,
    read_secrets,
    read_toml,
    secret_field,
)
from .validation import validate

__all__ = ["SECRET_KEYS", "AlertSettings", "ArchiveSettings", "ClockSettings", "CollectorConfig", "CollectorSettings",
           "CorrelateSettings", "FlinkSettings", "HealthSettings", "MetricsSettings", "MqttSettings", "RelaySettings",
           "RetrainSettings", "WebSettings", "check_config", "load_config", "parse_config"]


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
    z_min: float = Field(3.0, description="Smallest z-score of a suspect's exact binomial tail probability against "
                                          "its baseline rate.")
    min_ratio: float = Field(2.0, description="Smallest ratio of a suspect's window rate to its baseline rate (an "
                                              "effect size).")
    floor_rate: float = Field(0.02, gt=0, lt=1, description="Floor of the baseline anomaly rate (a quiet "
                                                            "history is not infinitely sensitive).")
    probe_floor_rate: float = Field(0.02, gt=0, lt=1, description="Floor of the baseline rate of failed probes "
                                                                  "(lost or damaged) in the probe failure test.")
    probe_window_s: float = Field(0.0, ge=0, description="Window of the probe failure test (0 or less than "
                                  "window_s: window_s). A lost probe counts at its send time but is known only its "
                                  "node's probe timeout later: window_s plus that timeout holds the losses of the "
                                  "last window_s.")
    min_probe_failures: int = Field(3, ge=1, description="Fewest failed probes (lost or damaged) in the window of a "
                                                         "suspect of the probe failure test.")
    max_dispersion: float = Field(4.0, ge=1, le=100, description="Cap of a tree node's dispersion: how much more "
                                  "its anomalies cluster in time than independent verdicts would (from its history "
                                  "buckets); the walk's tests count that many verdicts as one. 1: verdicts are "
                                  "independent.")
    explain_frac: float = Field(0.6, gt=0, le=1, description="Share of a node's window anomalies its suspects must "
                                                             "hold for the walk to descend into them.")
    resolve_after: int = Field(3, ge=1, description="Quiet evaluations before an incident resolves.")
    open_after_s: float = Field(0.0, ge=0, description="A root cause must be found in every evaluation for this long "
                                                       "(event time) before its incident opens; 0: at once.")
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
        if self.probe_window_s > self.window_s + self.history_s:
            raise ValueError(f"probe_window_s ({self.probe_window_s:g}) must not exceed window_s + history_s "
                             f"({self.window_s + self.history_s:g}): older buckets are not kept")
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
    """``[web]``: the live dashboard, ``/api/state`` and ``/metrics``.

    Secure by default: served over TLS (``cert_file``/``key_file``, made by ``collector init``)
    and only to a client that authenticates (HTTP basic auth, or the password alone as a bearer
    token): the dashboard credential (``username``) may read everything, the metrics credential
    (``metrics_username``, for Prometheus) only ``/metrics``.  ``auth = false`` and ``tls = false``
    must be said explicitly; the log and the page then say so.
    """

    enabled: bool = Field(True, description="Serve the dashboard.")
    host: Host = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8443, ge=0, le=65535, description="Port to listen on (0: any free port).")
    tls: bool = Field(True, description="Serve HTTPS with `cert_file`/`key_file` (the default). `false`: plain HTTP, "
                                        "for a TLS-terminating proxy in front on the same host.")
    cert_file: FileHere | None = Field(None, description="Server certificate of the dashboard (PEM; `collector init` "
                                                         "makes one from the deployment's CA).")
    key_file: FileHere | None = Field(None, description="Its private key (PEM, mode 0600).")
    auth: bool = Field(True, description="Require a credential for every request (the default). `false` serves the "
                                         "dashboard, `/api/state` and `/metrics` to anyone who can connect; the log, "
                                         "the page and `mailpulse_web_auth_enabled` say so.")
    username: str = Field("mailpulse", min_length=1, description="User name of the dashboard credential (reads "
                                                                 "everything).")
    password: str | None = secret_field("The dashboard password (secrets file `web_password` or `password_env`).")
    password_env: str = Field("", description="Environment variable holding the dashboard password (else the "
                                              "secrets file's `web_password`).")
    metrics_username: str = Field("prometheus", min_length=1, description="User name of the read-only metrics "
                                                                          "credential (only `/metrics`).")
    metrics_password: str | None = secret_field("The metrics password (secrets file `web_metrics_password` or "
                                                "`metrics_password_env`).")
    metrics_password_env: str = Field("", description="Environment variable holding the metrics password (else the "
                                                      "secrets file's `web_metrics_password`; none: only the "
                                                      "dashboard credential reads `/metrics`).")
    max_sse_clients: int = Field(100, ge=1, description="Most open live-update (SSE) connections; one more is refused "
                                                        "with 503. One thread serves all of them.")
    max_connections: int = Field(64, ge=1, description="Most other connections being served or waiting for a worker; "
                                                       "beyond it a new connection is closed at once.")
    workers: int = Field(4, ge=1, le=64, description="Threads that serve requests (the thread count does not grow "
                                                     "with the connections).")
    request_timeout_s: float = Field(10.0, gt=0, description="A request (TLS handshake, request line and headers) "
                                                             "not complete within this is cut off.")
    max_request_bytes: int = Field(16384, ge=1024, description="Largest request line plus headers; requests with a "
                                                               "body are refused (413).")
    rate_per_s: float = Field(20.0, gt=0, description="Requests per second per client address (token bucket); "
                                                      "beyond it 429.")
    rate_burst: int = Field(60, ge=1, description="Burst of that token bucket.")


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


class CollectorSettings(Section):
    """``[collector]``: the collector itself (as ``[node]`` is the node)."""

    secrets_file: str = Field("", description="TOML file (mode 0600) with the collector's passwords: `mqtt_password`, "
                                              "`web_password`, `web_metrics_password`, `alerts_password` "
                                              "(`collector init` writes it); a key absent there may come from the "
                                              "environment variable a `*_env` key names.")


class FlinkSettings(Section):
    """``[flink]``: take the incidents from the Flink job (``mailpulse flink run --follow --incidents DIR``)."""

    incidents_dir: str = Field("", description="The Flink job's incident log folder: when set, the dashboard and "
                                               "alerts show its incidents (of every shard) instead of this "
                                               "collector's own correlation.")


class CollectorConfig(Section):
    """The whole collector configuration (one TOML file)."""

    collector: CollectorSettings = Field(default_factory=CollectorSettings)

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
    flink: FlinkSettings = Field(default_factory=FlinkSettings)


#: The keys of the collector's secrets file.
SECRET_KEYS = ("mqtt_password", "web_password", "web_metrics_password", "alerts_password", "alerts_webhook_token")


def _web_problems(w: WebSettings) -> list[str]:
    if not w.enabled:
        return []
    out = []
    if w.tls and not (w.cert_file and w.key_file):
        out.append("[web] tls is on (the default) but cert_file and key_file are not both set: run 'mailpulse "
                   "collector init' to make them, or set tls = false to serve plain HTTP.")
    if w.auth and w.password is None:
        out.append("[web] auth is on (the default) but there is no dashboard password: put web_password in the "
                   "secrets file or name an environment variable with password_env (or set auth = false to serve "
                   "the dashboard to anyone).")
    if w.auth and w.metrics_password is not None and w.metrics_password == w.password:
        out.append("[web] metrics_password equals the dashboard password: the metrics credential must be a "
                   "separate one (it may read only /metrics).")
    return out


def _resolve(cfg: CollectorConfig, env: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    values: dict[str, str] | None = {}
    secrets_file = cfg.collector.secrets_file
    if secrets_file:
        try:
            values = read_secrets(Path(secrets_file))
        except UserError as e:
            out.append(f"{e}.")
            values = None
    secrets = SecretSource(values, env, f"the secrets file {secrets_file}")
    cfg.mqtt.password = secrets.get("mqtt_password", cfg.mqtt.password_env, "[mqtt]", "password_env",
                                    needed=False, out=out)
    cfg.alerts.password = secrets.get("alerts_password", cfg.alerts.password_env, "[alerts]", "password_env",
                                      needed=False, out=out)
    cfg.alerts.webhook_token = secrets.get("alerts_webhook_token", cfg.alerts.webhook_token_env, "[alerts]",
                                           "webhook_token_env", needed=False, out=out)
    w = cfg.web
    w.password = secrets.get("web_password", w.password_env, "[web]", "password_env", needed=False, out=out)
    w.metrics_password = secrets.get("web_metrics_password", w.metrics_password_env, "[web]", "metrics_password_env",
                                     needed=False, out=out)
    for key in values or {}:
        if key not in SECRET_KEYS:
            out.append(f"the secrets file {secrets_file} has the key {key!r}, which the collector does not use "
                       f"(known: {', '.join(SECRET_KEYS)}).")
    return out + _web_problems(w)


def parse_config(doc: Any, source: str = "<config>", local: bool = True) -> tuple[CollectorConfig | None, list[str]]:
    """The config of a parsed TOML document and its problems (each one sentence, prefixed with
    ``source``); None when there are any.  Passwords are read from the environment here.  With
    ``local`` false (a config for a pod or another machine) its files and secrets are not looked for here."""
    cfg, errors = validate(CollectorConfig, doc, local=local)
    if cfg is not None and local:   # the secrets are in the environment of where it runs
        errors = _resolve(cfg, os.environ)
    return (None if errors else cfg), [f"{source}: {e}" for e in errors]


def check_config(path: str | os.PathLike[str], local: bool = True) -> list[str]:
    """Every problem of a config file, one sentence each (empty when it is valid)."""
    p = Path(path)
    try:
        doc = read_toml(p, "config file")
    except UserError as e:
        return [f"{e}."]
    return parse_config(doc, str(p), local)[1]


def load_config(path: str | os.PathLike[str]) -> CollectorConfig:
    """Read and validate a config file; :class:`UserError` naming the first problem."""
    cfg, errors = parse_config(read_toml(Path(path), "config file"), str(path))
    if cfg is None:
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more problems; run 'mailpulse collector check-config')"
        raise UserError(errors[0].rstrip(".") + more)
    return cfg
