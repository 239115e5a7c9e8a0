"""The node's configuration: one TOML file, typed and validated, secrets kept apart.

Sections (every key is listed, with its type, default and meaning, in ``docs/config.md``, which is
generated from :func:`schema` and checked by a test):

* ``[node]``, ``[mqtt]``, ``[spool]``, ``[fleet]``, ``[probe]``, ``[[probe.routes]]``: identity,
  broker, disk spool, fleet heartbeat and probes (:mod:`mailpulse.pi_firmware.node_config`);
* ``[scorer]``: backend (``model``, ``sim``, ``pynq``, ``ice40``, ``auto``), parameter set, model
  file, batch size (:class:`ScorerSettings`);
* ``[postfix]``: the Postfix log to follow (:class:`PostfixSettings`);
* ``[maildir]``: the Maildir to watch (:class:`MaildirSettings`);
* ``[mime]``: limits of the MIME walker (:class:`mailpulse.pi_firmware.mime.MimeLimits`);
* ``[journal]``: the systemd journal to follow (:class:`mailpulse.pi_firmware.journal.JournalSettings`).

Secrets never sit in the TOML: ``[node] secrets_file`` names a TOML file that must be mode 0600
(not readable by group or others), holding ``mqtt_password`` and ``probe.<route>.smtp_password`` /
``probe.<route>.imap_password``; or the TOML names environment variables (``[mqtt] password_env``,
``smtp_password_env``, ``imap_password_env``).

:func:`check_config` returns every problem it finds, each as one sentence naming the key and the
reason (``mailpulse node check-config F`` prints them); :func:`load_config` raises
:class:`~mailpulse.errors.UserError` with the first.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

from .journal import JournalSettings
from .mime import MimeLimits

BACKENDS = ("model", "sim", "pynq", "ice40", "auto")


@dataclass
class ScorerSettings:
    """``[scorer]``: where and with what events are scored."""

    backend: str = "model"
    params: str = "small"
    model: str = ""
    batch_size: int = 4096

    def __post_init__(self) -> None:
        from mailpulse.hdl.params import get_params

        if self.backend not in BACKENDS:
            raise ValueError(f"[scorer] backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        get_params(self.params)
        if self.batch_size < 1:
            raise ValueError(f"[scorer] batch_size must be at least 1, not {self.batch_size}")
        if self.model and not Path(self.model).is_file():
            raise ValueError(f"[scorer] model file {self.model} does not exist")


@dataclass
class PostfixSettings:
    """``[postfix]``: the Postfix log the node follows (disabled when ``log`` is empty)."""

    log: str = ""
    state_file: str = ""
    poll_s: float = 0.5
    from_start: bool = False
    max_queue_ids: int = 100_000
    year: int = 0

    def __post_init__(self) -> None:
        if self.poll_s <= 0:
            raise ValueError(f"[postfix] poll_s must be positive, not {self.poll_s}")
        if self.max_queue_ids < 1:
            raise ValueError(f"[postfix] max_queue_ids must be at least 1, not {self.max_queue_ids}")
        if self.year and not 1970 <= self.year <= 9999:
            raise ValueError(f"[postfix] year {self.year} is not a plausible year (0 infers it)")
        if self.log and not Path(self.log).parent.is_dir():
            raise ValueError(f"[postfix] log {self.log} is in a directory that does not exist")


@dataclass
class MaildirSettings:
    """``[maildir]``: a Maildir whose new messages the node analyses (disabled when ``path`` is empty)."""

    path: str = ""
    state_file: str = ""
    poll_s: float = 2.0
    max_seen: int = 100_000

    def __post_init__(self) -> None:
        if self.poll_s <= 0:
            raise ValueError(f"[maildir] poll_s must be positive, not {self.poll_s}")
        if self.max_seen < 1:
            raise ValueError(f"[maildir] max_seen must be at least 1, not {self.max_seen}")
        if self.path and not (Path(self.path) / "new").is_dir():
            raise ValueError(f"[maildir] path {self.path} is not a Maildir (it has no new/ folder)")


#: Keys that are not dataclass fields: consumed by the loaders.
EXTRA_KEYS: dict[str, dict[str, tuple[str, str, str]]] = {
    "node": {"secrets_file": ("str", '""', "TOML file with the passwords; must be mode 0600.")},
    "mqtt": {"password_env": ("str", '""', "Environment variable holding the broker password."),
             "url": ("str", '""', "Broker as a URL, `mqtt://host:port` or `mqtts://host:port` (TLS); sets "
                                  "`host`, `port` and `tls`, which must then not be given.")},
    "probe": {"enabled": ("bool", "true", "Run probes at all (routes may still be configured).")},
    "probe.routes": {
        "smtp_password_env": ("str", '""', "Environment variable holding the SMTP AUTH password."),
        "imap_password_env": ("str", '""', "Environment variable holding the IMAP password."),
    },
}

#: Fields of the section dataclasses that never come from the TOML (secrets, nested tables).
NOT_IN_TOML = {("mqtt", "password"), ("probe.routes", "smtp_password"), ("probe.routes", "imap_password"),
               ("probe", "routes")}

#: One sentence per key (``docs/config.md``); a test checks that every field has one.
KEY_DOCS: dict[str, str] = {
    "node.id": "Node id: 1-64 letters, digits, `_` or `-`; names the node's MQTT topics and event ids.",
    "node.site": "Site id (same rules); nodes of one site share probe routes and the model topic.",
    "node.state_dir": "Directory for the node's state (spool, follower positions, probe state).",
    "mqtt.host": "Broker host name or address.",
    "mqtt.port": "Broker TCP port (8883 is usual with TLS).",
    "mqtt.username": "Broker user name (the password comes from the secrets file or `password_env`).",
    "mqtt.tls": "Connect with TLS.",
    "mqtt.ca_file": "CA certificate file that verifies the broker (system CAs when absent).",
    "mqtt.cert_file": "Client certificate (authenticates the node by certificate).",
    "mqtt.key_file": "Key of the client certificate.",
    "mqtt.tls_insecure": "Skip the broker host-name check (tests only).",
    "mqtt.client_id": "MQTT client id (default `mailpulse-<site>-<node>`); the persistent session is tied to it.",
    "mqtt.keepalive_s": "MQTT keepalive; the broker sends the `offline` will after 1.5 times this.",
    "mqtt.session_expiry_s": "How long the broker keeps the node's session while it is away.",
    "mqtt.batch_max_events": "Most events in one `events`/`anomalies` message.",
    "mqtt.batch_max_bytes": "Largest `events`/`anomalies` message in bytes.",
    "mqtt.inflight_max": "Messages published but not yet acknowledged.",
    "mqtt.ha_discovery": "Publish Home Assistant MQTT discovery configs (retained) at connect.",
    "spool.path": "SQLite spool file (default `<state_dir>/spool.db`).",
    "spool.max_rows": "Bound of the spool in events (an anomaly counts twice); beyond it ordinary events are dropped before anomalies.",
    "spool.synchronous": "SQLite `synchronous` level: NORMAL, FULL or EXTRA.",
    "fleet.heartbeat_s": "Period of the retained status message.",
    "fleet.timeout_s": "Age after which a silent node counts as dead (0: three heartbeats).",
    "probe.interval_s": "Period of the probes on each route this node owns.",
    "probe.image_format": "Probe image format: `jpeg` or `png`.",
    "probe.image_quality": "JPEG quality of the probe image (1-100).",
    "probe.attachment_bytes": "Size of the probe's deterministic attachment.",
    "probe.routes.name": "Route name (1-64 letters, digits, `.`, `_`, `-`), unique.",
    "probe.routes.smtp_host": "Relay the probe is submitted to.",
    "probe.routes.smtp_port": "SMTP port of that relay.",
    "probe.routes.mail_from": "Envelope sender of the probe.",
    "probe.routes.rcpt_to": "Recipient whose mailbox is read back.",
    "probe.routes.imap_host": "IMAP server of the recipient's mailbox.",
    "probe.routes.imap_port": "IMAP port.",
    "probe.routes.imap_username": "IMAP login.",
    "probe.routes.smtp_security": "`none`, `starttls` or `tls` (implicit TLS) for SMTP.",
    "probe.routes.smtp_username": "SMTP AUTH user (AUTH only when set).",
    "probe.routes.imap_security": "`none`, `starttls` or `tls` for IMAP.",
    "probe.routes.mailbox": "IMAP folder the probe arrives in.",
    "probe.routes.timeout_s": "A probe not back within this is lost (a later arrival is reported as late).",
    "probe.routes.poll_interval_s": "IMAP poll period while waiting (the latency resolution).",
    "probe.routes.ca_file": "CA file that verifies the SMTP and IMAP servers.",
    "probe.routes.maillogs": "Postfix logs of relays on the route that this node can read (refines hop delays).",
    "scorer.backend": "Scorer backend: `model` (bit-exact software), `sim`, `pynq`, `ice40` or `auto`.",
    "scorer.params": "Core parameter set the node expects (`small`, `full`, `zynq`).",
    "scorer.model": "Model file to load at start (empty: the untrained bring-up model, never flags).",
    "scorer.batch_size": "Events per scoring call when they arrive faster than one at a time.",
    "postfix.log": "Postfix log file to follow (empty: not followed); `maillog_file` or syslog's mail.log.",
    "postfix.state_file": "Where the follower remembers its position (default `<state_dir>/postfix.pos`).",
    "postfix.poll_s": "Poll period at the end of the log.",
    "postfix.from_start": "Without a saved position, read the log from its start (else from its end).",
    "postfix.max_queue_ids": "Most queue ids held for the join (the oldest are evicted first).",
    "postfix.year": "Year of RFC 3164 timestamps (0: inferred from the clock).",
    "maildir.path": "Maildir whose new messages are analysed (empty: not watched).",
    "maildir.state_file": "Where the watcher remembers the messages it has seen (default `<state_dir>/maildir.json`).",
    "maildir.poll_s": "Poll period of the Maildir.",
    "maildir.max_seen": "Most message names remembered as seen.",
    "mime.max_bytes": "Larger messages are not parsed (only their size is used).",
    "mime.max_depth": "Deepest MIME nesting visited.",
    "mime.max_parts": "Most MIME parts visited per message.",
    "mime.max_part_bytes": "Larger parts are not decoded.",
    "mime.max_pixels": "Images announcing more pixels are refused before decoding (decompression bombs).",
    "mime.max_total_pixels": "Most decoded image pixels per message.",
}



def _field_docs(section: str, cls: type) -> dict[str, str]:
    """The one-sentence docs that a library dataclass carries in its fields' metadata."""
    return {f"{section}.{f.name}": f.metadata["doc"] for f in dataclasses.fields(cls) if "doc" in f.metadata}


# keys whose description lives with their dataclass in the library (issue 13's limits)
for _k, _v in (_field_docs("mime", MimeLimits) | _field_docs("journal", JournalSettings)).items():
    KEY_DOCS.setdefault(_k, _v)


@dataclass
class NodeConfig:
    """The whole node configuration."""

    path: Path
    sections: Any                # mailpulse.pi_firmware.node_config.NodeSections
    scorer: ScorerSettings
    postfix: PostfixSettings
    maildir: MaildirSettings
    mime: MimeLimits
    journal: JournalSettings = dataclasses.field(default_factory=JournalSettings)

    @property
    def node_id(self) -> str:
        return str(self.sections.node.id)

    @property
    def site(self) -> str:
        return str(self.sections.node.site)

    @property
    def state_dir(self) -> Path:
        return Path(self.sections.node.state_dir)


def _section_classes() -> dict[str, type]:
    from .mqtt import MqttSettings
    from .node_config import FleetSettings, NodeIdentity, SpoolSettings
    from .probe import ProbeRoute, ProbeSettings

    return {"node": NodeIdentity, "mqtt": MqttSettings, "spool": SpoolSettings, "fleet": FleetSettings,
            "probe": ProbeSettings, "probe.routes": ProbeRoute, "scorer": ScorerSettings,
            "postfix": PostfixSettings, "maildir": MaildirSettings, "mime": MimeLimits, "journal": JournalSettings}


_MINE = ("scorer", "postfix", "maildir", "mime", "journal")


def schema() -> list[tuple[str, str, str, str, str]]:
    """Every config key: (section, key, type, default, meaning), in file order."""
    rows = []
    for sec, cls in _section_classes().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (sec, f.name) in NOT_IN_TOML:
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default).replace("'", '"')
                default = {"True": "true", "False": "false", "None": "(none)"}.get(default, default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory()).replace("'", '"')
            else:
                default = "(required)"
            tname = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            tname = tname.replace(" | None", " (optional)")
            rows.append((sec, f.name, tname, default, KEY_DOCS.get(f"{sec}.{f.name}", "")))
        for k, (t, d, doc) in EXTRA_KEYS.get(sec, {}).items():
            rows.append((sec, k, t, d, doc))
    return rows


def markdown_table() -> str:
    """The key table of ``docs/config.md``."""
    out = ["| section | key | type | default | meaning |", "|---|---|---|---|---|"]
    for sec, key, t, d, doc in schema():
        shown = f"[[{sec}]]" if sec == "probe.routes" else f"[{sec}]"
        out.append(f"| `{shown}` | `{key}` | {t} | `{d}` | {doc} |")
    return "\n".join(out) + "\n"


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"the {what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"the {what} {path} is a directory, not a file") from None
    except OSError as e:
        raise UserError(f"cannot read the {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserError(f"the {what} {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"the {what} {path} is not valid TOML: {e}") from None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def read_secrets(path: Path) -> dict[str, str]:
    """Read a secrets file (TOML), refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"the secrets file {path} does not exist") from None
    if mode & 0o077:
        raise UserError(f"the secrets file {path} is readable by group or others (mode {mode & 0o777:o}); "
                        f"run chmod 600 {path}")
    return _flatten(_read_toml(path, "secrets file"))


def _build_mine(cls: type, table: Any, where: str) -> Any:
    from .node_config import _build

    return _build(cls, table, where)


def _broker_url(table: dict[str, Any]) -> dict[str, Any]:
    """Replace ``[mqtt] url`` by ``host``, ``port`` and ``tls``."""
    from urllib.parse import urlsplit

    url = table.pop("url")
    if not isinstance(url, str):
        raise ValueError("[mqtt] url must be a string such as mqtts://broker.example.org:8883")
    clash = [k for k in ("host", "port", "tls") if k in table]
    if clash:
        raise ValueError(f"[mqtt] url and {', '.join(clash)} are both given; use one or the other")
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"[mqtt] url {url!r} must look like mqtt://host:port or mqtts://host:port")
    if u.username or u.password:
        raise ValueError("[mqtt] url must not carry credentials: use username and the secrets file")
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"[mqtt] url {url!r} has a bad port") from None
    tls = u.scheme == "mqtts"
    table.update(host=u.hostname, port=port or (8883 if tls else 1883), tls=tls)
    return table


def _section_errors(doc: Mapping[str, Any]) -> list[str]:
    """Problems of the plain publishing-side sections, each checked on its own (so that one
    error does not hide the next; :func:`sections_from_mapping` stops at the first)."""
    from .node_config import _build

    classes = _section_classes()
    out = []
    for sec in ("node", "mqtt", "spool", "fleet"):
        table = {k: v for k, v in dict(doc.get(sec, {}) or {}).items()
                 if k not in EXTRA_KEYS.get(sec, {}) and (sec, k) not in NOT_IN_TOML}
        if sec == "node":
            table.setdefault("id", "x")
            table.setdefault("site", "x")
        try:
            _build(classes[sec], table, f"[{sec}]")
        except ValueError as e:
            out.append(str(e))
    return out


def check_config(path: Path | str, *, require_secrets: bool = True) -> tuple[NodeConfig | None, list[str]]:
    """Validate a config file: the config (None when anything is wrong) and every problem found.

    Each problem is one sentence naming the key and the reason.  Sections are checked
    independently, so one bad section does not hide the problems of another.
    """
    p = Path(path)
    errors: list[str] = []
    try:
        doc = _read_toml(p, "config file")
    except UserError as e:
        return None, [str(e)]
    known = set(_section_classes()) - {"probe.routes"}
    for k, v in doc.items():
        if k not in known:
            errors.append(f"the config has an unknown section [{k}] (known: {', '.join(sorted(known))})")
        elif not isinstance(v, dict):
            errors.append(f"{k} must be a table ([{k}]), not a single value")
    if errors:
        return None, errors
    node_tab = dict(doc.get("node", {}))
    secrets: dict[str, str] = {}
    sf = node_tab.pop("secrets_file", None)
    if sf is not None:
        if not isinstance(sf, str):
            errors.append("[node] secrets_file must be a string")
        else:
            try:
                secrets = read_secrets(Path(sf))
            except UserError as e:
                errors.append(str(e))
    theirs = {k: v for k, v in doc.items() if k not in _MINE}
    theirs["node"] = node_tab
    if "url" in theirs.get("mqtt", {}):
        try:
            theirs["mqtt"] = _broker_url(dict(theirs["mqtt"]))
        except ValueError as e:
            errors.append(str(e))
            theirs["mqtt"] = {k: v for k, v in theirs["mqtt"].items() if k != "url"}
    sections = None
    try:
        from .node_config import sections_from_mapping

        sections = sections_from_mapping(theirs, secrets, require_secrets=require_secrets)
    except ValueError as e:
        errors.append(str(e))
        errors.extend(m for m in _section_errors(theirs) if m not in errors)
    built: dict[str, Any] = {}
    for sec, cls in (("scorer", ScorerSettings), ("postfix", PostfixSettings), ("maildir", MaildirSettings),
                     ("mime", MimeLimits), ("journal", JournalSettings)):
        try:
            built[sec] = _build_mine(cls, doc.get(sec, {}), f"[{sec}]")
        except ValueError as e:
            msg = str(e)
            errors.append(msg if msg.startswith("[") else f"[{sec}] {msg}")
    if errors or sections is None:
        return None, errors
    state = Path(sections.node.state_dir)
    pf: PostfixSettings = built["postfix"]
    if pf.log and not pf.state_file:
        pf.state_file = str(state / "postfix.pos")
    md: MaildirSettings = built["maildir"]
    if md.path and not md.state_file:
        md.state_file = str(state / "maildir.json")
    jn: JournalSettings = built["journal"]
    if jn.enabled and not jn.state_file:
        jn.state_file = str(state / "journal.cursor")
    return NodeConfig(p, sections, built["scorer"], pf, md, built["mime"], jn), []


def load_config(path: Path | str, *, require_secrets: bool = True) -> NodeConfig:
    """Load and validate a config file; :class:`UserError` with the first problem otherwise."""
    cfg, errors = check_config(path, require_secrets=require_secrets)
    if cfg is None:
        more = f" (and {len(errors) - 1} more problems: run mailpulse node check-config {path})" if len(errors) > 1 else ""
        raise UserError(f"config {path}: {errors[0]}{more}")
    return cfg


__all__ = ["BACKENDS", "KEY_DOCS", "MaildirSettings", "NodeConfig", "PostfixSettings", "ScorerSettings",
           "check_config", "load_config", "markdown_table", "read_secrets", "schema"]
