"""Typed config sections of the node daemon's publishing side: ``[node]``, ``[mqtt]``, ``[spool]``,
``[fleet]``, ``[probe]`` and ``[[probe.routes]]``.

:func:`sections_from_mapping` turns the parsed TOML document into dataclasses, checking every key
and type, and raises ``ValueError`` with one sentence naming the key and the reason.  Secrets
never sit in the TOML: passwords come from the ``secrets`` mapping (the 0600 secrets file) or from
environment variables named in the TOML (``password_env``).  :mod:`mailpulse.pi_firmware.config` embeds
these sections in the node's full config; :func:`load_sections` reads a file on its own.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailpulse import topics as T

from .mqtt import MqttSettings
from .probe import ProbeRoute, ProbeSettings

__all__ = ["FleetSettings", "NodeIdentity", "NodeSections", "SpoolSettings", "load_sections", "sections_from_mapping"]


@dataclass
class NodeIdentity:
    """``[node]``: who this node is and where it keeps state."""

    id: str
    site: str
    state_dir: str = "/var/lib/mailpulse"

    def __post_init__(self) -> None:
        T.check_id(self.id, "node")
        T.check_id(self.site, "site")


@dataclass
class SpoolSettings:
    """``[spool]``: the disk spool (``path`` defaults to ``<state_dir>/spool.db``)."""

    path: str = ""
    max_rows: int = 1_000_000
    synchronous: str = "NORMAL"

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"[spool] max_rows must be at least 1, not {self.max_rows}")
        if self.synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"[spool] synchronous must be NORMAL, FULL or EXTRA, not {self.synchronous!r}")


@dataclass
class FleetSettings:
    """``[fleet]``: status heartbeat and the age after which a silent node is dead."""

    heartbeat_s: float = 10.0
    timeout_s: float = 0.0     # 0 = three heartbeats

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0:
            raise ValueError("[fleet] heartbeat_s must be positive")
        if self.timeout_s and self.timeout_s < self.heartbeat_s:
            raise ValueError("[fleet] timeout_s must be at least one heartbeat_s")
        if not self.timeout_s:
            self.timeout_s = 3.0 * self.heartbeat_s


@dataclass
class NodeSections:
    node: NodeIdentity
    mqtt: MqttSettings
    spool: SpoolSettings
    fleet: FleetSettings
    probe: ProbeSettings
    probe_enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ValueError:
                continue
        raise ValueError(f"{where} has the wrong type ({type(value).__name__})")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, not {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [_check_type(v, inner, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, not {value!r}")
        return value
    return value


_T = typing.TypeVar("_T")


def _build(cls: type[_T], table: Mapping[str, Any], where: str, skip: tuple[str, ...] = (),
           extra: Mapping[str, Any] | None = None) -> _T:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in table.items():
        if k in skip:
            continue
        if k not in fields:
            known = ", ".join(n for n in fields if n not in skip)
            raise ValueError(f"{where} has an unknown key {k!r} (known: {known})")
        kwargs[k] = _check_type(v, hints[k], f"{where} {k}")
    kwargs.update(extra or {})
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{where} is missing the key {missing[0]!r}") from None
        raise ValueError(f"{where}: {e}") from None


def _secret(secrets: Mapping[str, str], key: str, env_name: str | None) -> str | None:
    if key in secrets:
        return secrets[key]
    if env_name:
        if env_name not in os.environ:
            raise ValueError(f"the environment variable {env_name} (for {key}) is not set")
        return os.environ[env_name]
    return None


def sections_from_mapping(doc: Mapping[str, Any], secrets: Mapping[str, str] | None = None,
                          require_secrets: bool = True) -> NodeSections:
    """Typed sections from a parsed node TOML document.

    Parameters
    ----------
    doc : mapping
        The whole TOML document (other sections are ignored here).
    secrets : mapping, optional
        ``mqtt_password``, ``probe.<route>.smtp_password``, ``probe.<route>.imap_password``.
    require_secrets : bool
        False to validate on a machine without the secrets (missing env vars are then tolerated).
    """
    secrets = secrets or {}
    node = _build(NodeIdentity, doc.get("node", {}), "[node]")
    mq = dict(doc.get("mqtt", {}))
    env = mq.pop("password_env", None)
    if "password" in mq:
        raise ValueError("[mqtt] password must not be in the config file: put it in the secrets file "
                         "or name an environment variable with password_env")
    try:
        pw = _secret(secrets, "mqtt_password", env)
    except ValueError:
        if require_secrets:
            raise
        pw = None
    mqtt = _build(MqttSettings, mq, "[mqtt]", extra={"password": pw} if pw is not None else None)
    spool = _build(SpoolSettings, doc.get("spool", {}), "[spool]")
    if not spool.path:
        spool.path = str(Path(node.state_dir) / "spool.db")
    fleet = _build(FleetSettings, doc.get("fleet", {}), "[fleet]")
    ptable = dict(doc.get("probe", {}))
    enabled = ptable.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError("[probe] enabled must be true or false")
    routes = []
    for i, rt in enumerate(ptable.pop("routes", [])):
        name = rt.get("name", f"#{i + 1}") if isinstance(rt, Mapping) else f"#{i + 1}"
        where = f"[[probe.routes]] {name}"
        rt = dict(rt)
        extra: dict[str, Any] = {}
        for kind in ("smtp", "imap"):
            if f"{kind}_password" in rt:
                raise ValueError(f"{where} {kind}_password must not be in the config file: use the secrets file "
                                 f"or {kind}_password_env")
            env_name = rt.pop(f"{kind}_password_env", None)
            try:
                v = _secret(secrets, f"probe.{name}.{kind}_password", env_name)
            except ValueError:
                if require_secrets:
                    raise
                v = None
            if v is not None:
                extra[f"{kind}_password"] = v
        routes.append(_build(ProbeRoute, rt, where, extra=extra))
    probe = _build(ProbeSettings, ptable, "[probe]", extra={"routes": routes})
    return NodeSections(node, mqtt, spool, fleet, probe, probe_enabled=enabled)


def load_sections(path: Path | str, secrets_file: Path | str | None = None) -> NodeSections:
    """Read a node TOML file (and an optional secrets TOML file of ``key = "value"`` lines)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read the config file {p}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"the config file {p} is not valid TOML: {e}") from None
    secrets: dict[str, str] = {}
    sf = secrets_file or doc.get("node", {}).get("secrets_file")
    if isinstance(doc.get("node"), dict):
        doc = dict(doc)
        doc["node"] = {k: v for k, v in doc["node"].items() if k != "secrets_file"}
    if sf:
        sp = Path(sf)
        try:
            mode = sp.stat().st_mode & 0o077
            if mode:
                raise ValueError(f"the secrets file {sp} must not be readable by group or others (chmod 600)")
            flat = tomllib.loads(sp.read_text())
        except OSError as e:
            raise ValueError(f"cannot read the secrets file {sp}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"the secrets file {sp} is not valid TOML: {e}") from None
        secrets = {k: str(v) for k, v in _flatten(flat).items()}
    return sections_from_mapping(doc, secrets)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
