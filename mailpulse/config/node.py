"""The node's configuration: the one type that the node daemon, ``mailpulse node check-config`` and
``mailpulse image flash`` all use.

One TOML file (every key, with its type, default and meaning, is in ``docs/config.md``, rendered
from the field descriptions here):

* ``[node]``, ``[mqtt]``, ``[spool]``, ``[fleet]``: identity, broker, disk spool, fleet heartbeat;
* ``[probe]`` and ``[[probe.routes]]``: the 4K probes and the routes they take;
* ``[scorer]``, ``[postfix]``, ``[maildir]``, ``[mime]``: scoring, the Postfix log, the Maildir,
  the limits of the MIME walker;
* ``[relays]``: relay names (the routes of a core's latency intervals; the collector's map).

Secrets never sit in the TOML: ``[node] secrets_file`` names a TOML file of mode 0600 holding
``mqtt_password`` and ``probe.<route>.smtp_password`` / ``probe.<route>.imap_password``, or the TOML
names environment variables (``password_env``, ``smtp_password_env``, ``imap_password_env``).

:func:`validate_node` is the one verdict: the document (types, ranges, cross-field rules), then
the secrets the checker can see (:class:`~mailpulse.config.base.SecretSource`), then - only when
the config is for this machine - the files it names.  :func:`check_config` reads a file on the
node (its secrets file, its environment); ``image flash`` validates the same document with the
secrets it will write and without the Pi's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailpulse import topics as T
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
    env_source,
    in_context,
    read_secrets,
    read_toml,
    secret_field,
)
from .validation import validate

__all__ = ["BACKENDS", "FleetSettings", "MaildirSettings", "MimeLimits", "MqttSettings", "NodeConfig", "NodeIdentity",
           "PostfixSettings", "ProbeRoute", "ProbeSettings", "ScorerSettings", "SpoolSettings", "check_config",
           "load_config", "secret_keys", "validate_node"]

BACKENDS = ("model", "sim", "pynq", "ice40", "auto")


def _route_name(v: str) -> str:
    if not (0 < len(v) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in v)):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
    return v



class NodeIdentity(Section):
    """``[node]``: who this node is and where it keeps state."""

    id: Id = Field(description=f"Node id ({T.ID_RULE}); names the node's MQTT topics and event ids.")
    site: Id = Field(description="Site id (same rules); nodes of one site share probe routes and the model topic.")
    state_dir: str = Field("/var/lib/mailpulse", description="Directory for the node's state (spool, follower "
                                                             "positions, probe state).")
    secrets_file: str = Field("", description="TOML file with the passwords; must be mode 0600.")


class MqttSettings(BrokerSettings):
    """``[mqtt]``: how the node reaches its broker and how it publishes."""

    tls_insecure: bool = Field(False, description="Skip the broker host-name check (tests only).")
    client_id: str = Field("", description="MQTT client id (default `mailpulse-<site>-<node>`); the persistent session "
                                           "is tied to it.")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="How long the broker keeps the node's session "
                                                                     "while it is away.")
    batch_max_events: int = Field(500, ge=1, description="Most events in one `events`/`anomalies` message.")
    batch_max_bytes: int = Field(256 * 1024, ge=1024, description="Largest `events`/`anomalies` message in bytes.")
    inflight_max: int = Field(32, ge=1, description="Messages published but not yet acknowledged.")
    ha_discovery: bool = Field(True, description="Publish Home Assistant MQTT discovery configs (retained) at connect.")

    @model_validator(mode="after")
    def _insecure_needs_tls(self) -> MqttSettings:
        if self.tls_insecure and not self.tls:
            raise ValueError("tls_insecure is given but tls is false (set tls = true or use an mqtts:// url)")
        return self


class SpoolSettings(Section):
    """``[spool]``: the disk spool that keeps events through broker outages and reboots."""

    path: str = Field("", description="SQLite spool file (default `<state_dir>/spool.db`).")
    max_rows: int = Field(1_000_000, ge=1, description="Bound of the spool in events (an anomaly counts twice); beyond "
                                                       "it ordinary events are dropped before anomalies.")
    synchronous: Literal["NORMAL", "FULL", "EXTRA"] = Field("NORMAL", description="SQLite `synchronous` level "
                                                                                  "(upper or lower case).")

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class FleetSettings(Section):
    """``[fleet]``: the status heartbeat and the age after which a silent node is dead."""

    heartbeat_s: float = Field(10.0, gt=0, description="Period of the retained status message.")
    timeout_s: float = Field(0.0, ge=0, description="Age after which a silent node counts as dead (0: three "
                                                    "heartbeats).")

    @model_validator(mode="after")
    def _timeout(self) -> FleetSettings:
        if self.timeout_s and self.timeout_s < self.heartbeat_s:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) must be at least one heartbeat_s ({self.heartbeat_s:g}): "
                             "a node would be declared dead between two of its heartbeats")
        if not self.timeout_s:
            self.timeout_s = 3.0 * self.heartbeat_s
        return self


class ProbeRoute(Section):
    """``[[probe.routes]]``: where a probe is submitted and where it is read back."""

    name: Annotated[str, AfterValidator(_route_name)] = Field(
        description="Route name (1-64 letters, digits, `.`, `_`, `-`), unique.")
    smtp_host: Host = Field(description="Relay the probe is submitted to.")
    smtp_port: Port = Field(description="SMTP port of that relay.")
    mail_from: Address = Field(description="Envelope sender of the probe.")
    rcpt_to: Address = Field(description="Recipient whose mailbox is read back.")
    imap_host: Host = Field(description="IMAP server of the recipient's mailbox.")
    imap_port: Port = Field(description="IMAP port.")
    imap_username: str = Field(description="IMAP login (the password comes from the secrets file or "
                                            "`imap_password_env`).")
    imap_password: str = secret_field("The IMAP password.", default="")
    imap_password_env: str = Field("", description="Environment variable holding the IMAP password.")
    smtp_security: Literal["none", "starttls", "tls"] = Field("none", description="`none`, `starttls` or `tls` "
                                                                                   "(implicit TLS) for SMTP.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user (AUTH only when set; its password then comes "
                                                        "from the secrets file or `smtp_password_env`).")
    smtp_password: str | None = secret_field("The SMTP AUTH password.")
    smtp_password_env: str = Field("", description="Environment variable holding the SMTP AUTH password.")
    imap_security: Literal["none", "starttls", "tls"] = Field("none", description="`none`, `starttls` or `tls` for "
                                                                                   "IMAP.")
    mailbox: str = Field("INBOX", description="IMAP folder the probe arrives in.")
    timeout_s: float = Field(30.0, gt=0, description="A probe not back within this is lost (a later arrival is "
                                                     "reported as late).")
    imap_idle: bool = Field(True, description="Wait with IMAP IDLE when the server advertises it (the arrival is "
                                              "pushed: 1 ms resolution, no polling); false always polls.")
    poll_interval_s: float = Field(0.01, gt=0, description="IMAP poll period while waiting when the server has no IDLE "
                                                           "or `imap_idle` is false (the latency resolution).")
    ca_file: FileHere | None = Field(None, description="CA file that verifies the SMTP and IMAP servers.")
    maillogs: list[str] = Field(default_factory=list, description="Postfix logs of relays on the route that this node "
                                                                  "can read (refines hop delays).")

    @model_validator(mode="after")
    def _poll_within_timeout(self) -> ProbeRoute:
        if self.poll_interval_s > self.timeout_s:
            raise ValueError(f"poll_interval_s ({self.poll_interval_s:g}) must not exceed timeout_s "
                             f"({self.timeout_s:g}): the probe would be lost before the first look")
        return self


class ProbeSettings(Section):
    """``[probe]``: probe schedule and content, and the routes (``[[probe.routes]]``)."""

    enabled: bool = Field(True, description="Run probes at all (routes may still be configured).")
    interval_s: float = Field(60.0, gt=0, description="Period of the probes on each route this node owns.")
    image_format: Literal["jpeg", "png"] = Field("jpeg", description="Probe image format: `jpeg` (about 1.5 MB, "
                                                                     "realistic for photos) or `png` (lossless).")
    image_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the probe image.")
    attachment_bytes: int = Field(256 * 1024, ge=0, le=64 << 20, description="Size of the probe's deterministic "
                                                                              "attachment.")
    routes: list[ProbeRoute] = Field(default_factory=list, description="The probe routes.")

    @model_validator(mode="after")
    def _unique_names(self) -> ProbeSettings:
        names = [r.name for r in self.routes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"routes has the name {twice[0]!r} twice: route names must be unique")
        return self


def _dir_of_file_here(v: str, info: ValidationInfo) -> str:
    if v and in_context(info, "local") and not Path(v).parent.is_dir():
        raise ValueError("is in a directory that does not exist")
    return v


def _maildir_here(v: str, info: ValidationInfo) -> str:
    if v and in_context(info, "local") and not (Path(v) / "new").is_dir():
        raise ValueError("is not a Maildir (it has no new/ folder)")
    return v


class ScorerSettings(Section):
    """``[scorer]``: where and with what events are scored."""

    backend: Literal["model", "sim", "pynq", "ice40", "auto"] = Field(
        "model", description="Scorer backend: `model` (bit-exact software), `sim`, `pynq`, `ice40` or `auto` (pynq on "
                             "a Zynq, ice40 with spidev, else model).")
    params: ParamsName = Field("small", description="Core parameter set the node expects (`small`, `full`, `zynq`; "
                                                    "`<set>-r<R>`, e.g. `small-r4`: with R route latency intervals, "
                                                    "whose flags each delivery's payload carries).")
    model: FileHere = Field("", description="Model file to load at start (empty: the untrained bring-up model, never "
                                            "flags).")
    batch_size: int = Field(4096, ge=1, description="Events per scoring call when they arrive faster than one at a "
                                                    "time.")


class PostfixSettings(Section):
    """``[postfix]``: the Postfix log the node follows (not followed when ``log`` is empty)."""

    log: Annotated[str, AfterValidator(_dir_of_file_here)] = Field(
        "", description="Postfix log file to follow (empty: not followed); `maillog_file` or syslog's mail.log.")
    state_file: str = Field("", description="Where the follower remembers its position (default "
                                            "`<state_dir>/postfix.pos`).")
    poll_s: float = Field(0.5, gt=0, description="Poll period at the end of the log.")
    from_start: bool = Field(False, description="Without a saved position, read the log from its start (else from its "
                                                "end).")
    max_queue_ids: int = Field(100_000, ge=1, description="Most queue ids held for the join (the oldest are evicted "
                                                          "first).")
    year: int = Field(0, ge=0, le=9999, description="Year of RFC 3164 timestamps (0: inferred from the clock).")
    config_dir: str = Field("", description="Postfix configuration directory of `postqueue -c` (empty: Postfix's "
                                            "default).")
    queue_poll_s: float = Field(30.0, ge=0, description="Period of reading the queue with `postqueue -j` (sizes and "
                                                        "oldest age per queue in the status); 0: not read. Read only "
                                                        "when `log` or `config_dir` is set.")
    queue_timeout_s: float = Field(20.0, gt=0, description="A queue reading that takes longer is stopped and reported "
                                                           "as an error.")

    @field_validator("year")
    @classmethod
    def _plausible_year(cls, v: int) -> int:
        if v and v < 1970:
            raise ValueError("is not a plausible year (0 infers it)")
        return v


class MaildirSettings(Section):
    """``[maildir]``: a Maildir whose new messages the node analyses (not watched when ``path`` is empty)."""

    path: Annotated[str, AfterValidator(_maildir_here)] = Field(
        "", description="Maildir whose new messages are analysed (empty: not watched).")
    state_file: str = Field("", description="Where the watcher remembers the messages it has seen (default "
                                            "`<state_dir>/maildir.json`).")
    poll_s: float = Field(2.0, gt=0, description="Poll period of the Maildir.")
    max_seen: int = Field(100_000, ge=1, description="Most message names remembered as seen.")


class MimeLimits(Section):
    """``[mime]``: limits of the MIME walker (the defaults fit a Pi-class node's memory with room for
    a 4K probe: the peak is about twice the message size plus the pixels of the largest image)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_bytes: int = Field(64 << 20, ge=1, description="Larger messages are not parsed (only their size is used).")
    max_depth: int = Field(32, ge=1, description="Deepest MIME nesting visited.")
    max_parts: int = Field(1000, ge=1, description="Most MIME parts visited per message.")
    max_part_bytes: int = Field(32 << 20, ge=1, description="Larger parts are not decoded.")
    max_pixels: int = Field(4096 * 4096, ge=1, description="Images announcing more pixels are refused before "
                                                           "decoding (decompression bombs).")
    max_total_pixels: int = Field(4 * 4096 * 4096, ge=1, description="Most decoded image pixels per message.")
    max_header_bytes: int = Field(64 << 10, ge=1, description="Longest header field in bytes (continuation lines "
                                                              "included); a message with a longer one is refused.")
    max_headers: int = Field(1000, ge=1, description="Most fields in one header block; a message with more is "
                                                     "refused.")


class JournalSettings(Section):
    """``[journal]``: follow the systemd journal for Postfix (disabled unless ``enabled``)."""

    enabled: bool = Field(False, description="Follow the systemd journal for Postfix's entries (where Postfix logs "
                                             "only there).")
    units: list[str] = Field(
        default_factory=lambda: ["postfix.service", "postfix@-.service"],
        description="Units whose entries are read (`journalctl --unit`; a pattern must match a unit already in the "
                    "journal, or journalctl refuses it).")
    identifiers: list[str] = Field(
        default_factory=list, description="Syslog identifiers whose entries are read (`journalctl --identifier`), "
                                          "e.g. `postfix/smtp`; used instead of `units` when given.")
    state_file: str = Field("", description="Where the journal cursor is kept (default `<state_dir>/journal.cursor`).")
    from_start: bool = Field(False, description="Without a saved cursor, read the whole journal (else only new "
                                                "entries).")
    namespace: str = Field("", description="Journal namespace to read (`journalctl --namespace`); empty: the default "
                                           "one.")
    directory: str = Field("", description="Read the journal files in this directory (`journalctl --directory`) "
                                           "instead of the system journal.")
    journalctl: str = Field("journalctl", description="The journalctl program.")
    poll_s: float = Field(0.2, gt=0, description="Longest wait for new entries before a batch is handed on.")

    @field_validator("units", "identifiers")
    @classmethod
    def _no_empty_names(cls, v: list[str]) -> list[str]:
        if any(not x for x in v):
            raise ValueError("must not hold an empty name")
        return v

    @model_validator(mode="after")
    def _reads_something(self) -> JournalSettings:
        if self.enabled and not (self.units or self.identifiers):
            raise ValueError("is enabled but names no units and no identifiers to read")
        return self


class NodeConfig(Section):
    """The whole node configuration (one TOML file)."""

    node: NodeIdentity
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    postfix: PostfixSettings = Field(default_factory=PostfixSettings)
    maildir: MaildirSettings = Field(default_factory=MaildirSettings)
    mime: MimeLimits = Field(default_factory=MimeLimits)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    relays: RelaySettings = Field(default_factory=RelaySettings)

    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def site(self) -> str:
        return self.node.site

    @property
    def state_dir(self) -> Path:
        return Path(self.node.state_dir)

    @model_validator(mode="after")
    def _every_needed_password_has_a_source(self) -> NodeConfig:
        for r in self.probe.routes:
            for kind, needed, env in (("imap", True, r.imap_password_env),
                                      ("smtp", r.smtp_username is not None, r.smtp_password_env)):
                if needed and not env and not self.node.secrets_file:
                    why = "an IMAP password" if kind == "imap" else "an SMTP password (smtp_username is set)"
                    raise ValueError(
                        f"[[probe.routes]] {r.name} needs {why} but has no way to get one: set {kind}_password_env, "
                        f"or set [node] secrets_file and put probe.{r.name}.{kind}_password in that file.")
        return self

    @model_validator(mode="after")
    def _derived_defaults(self) -> NodeConfig:
        state = Path(self.node.state_dir)
        if not self.spool.path:
            self.spool.path = str(state / "spool.db")
        if self.postfix.log and not self.postfix.state_file:
            self.postfix.state_file = str(state / "postfix.pos")
        if self.maildir.path and not self.maildir.state_file:
            self.maildir.state_file = str(state / "maildir.json")
        if self.journal.enabled and not self.journal.state_file:
            self.journal.state_file = str(state / "journal.cursor")
        return self


def secret_keys(cfg: NodeConfig) -> list[str]:
    """The keys a secrets file of this config may hold."""
    return ["mqtt_password", *(f"probe.{r.name}.{k}_password" for r in cfg.probe.routes for k in ("smtp", "imap"))]


def apply_secrets(cfg: NodeConfig, secrets: SecretSource) -> list[str]:
    """Fill the passwords of ``cfg`` from ``secrets``; the problems (missing or unused secrets)."""
    out: list[str] = []
    cfg.mqtt.password = secrets.get("mqtt_password", cfg.mqtt.password_env, "[mqtt]", "password_env",
                                    needed=False, out=out)
    for r in cfg.probe.routes:
        where = f"[[probe.routes]] {r.name}"
        r.imap_password = secrets.get(f"probe.{r.name}.imap_password", r.imap_password_env, where,
                                      "imap_password_env", needed=True, out=out) or ""
        r.smtp_password = secrets.get(f"probe.{r.name}.smtp_password", r.smtp_password_env, where,
                                      "smtp_password_env", needed=r.smtp_username is not None, out=out)
    if secrets.values is not None:
        known = secret_keys(cfg)
        for key in secrets.values:
            if key not in known:
                out.append(f"{secrets.origin} has the key {key!r}, which this config does not use "
                           f"(known: {', '.join(known)}).")
    return out


def validate_node(doc: Any, secrets: SecretSource, *, local: bool) -> tuple[NodeConfig | None, list[str]]:
    """The one verdict on a parsed node config: (the config with its secrets, []) or (None, problems).

    ``secrets`` is what the checker can see of the secrets; ``local`` is true when the config is for
    this machine (the files it names must exist here).
    """
    cfg, errors = validate(NodeConfig, doc, local=local)
    if cfg is None:
        return None, errors
    errors = apply_secrets(cfg, secrets)
    return (None, errors) if errors else (cfg, [])


def check_config(path: Path | str, *, require_secrets: bool = True) -> tuple[NodeConfig | None, list[str]]:
    """Validate a node config file on the node: the config (None when anything is wrong) and every
    problem, one sentence each.

    The secrets come from ``[node] secrets_file`` and the environment; with ``require_secrets=False``
    (a machine without them) they are neither read nor required.
    """
    p = Path(path)
    try:
        doc = read_toml(p, "config file")
    except UserError as e:
        return None, [f"{e}."]
    errors: list[str] = []
    secrets = SecretSource()
    if require_secrets:
        node = doc.get("node")
        secrets_file = node.get("secrets_file") if isinstance(node, dict) else None
        values: dict[str, str] | None = {}
        if secrets_file and isinstance(secrets_file, str):
            try:
                values = read_secrets(Path(secrets_file))
            except UserError as e:
                errors.append(f"{e}.")
                values = None   # unknown: the other checks go on without it
        secrets = env_source(values, f"the secrets file {secrets_file}" if secrets_file else "the config")
    cfg, more = validate_node(doc, secrets, local=True)
    errors += more
    return (None, errors) if errors else (cfg, [])


def load_config(path: Path | str, *, require_secrets: bool = True) -> NodeConfig:
    """Load and validate a node config file; :class:`UserError` with the first problem otherwise."""
    cfg, errors = check_config(path, require_secrets=require_secrets)
    if cfg is None:
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more problems: run mailpulse node check-config {path})"
        raise UserError(f"config {path}: {errors[0].rstrip('.')}{more}")
    return cfg
