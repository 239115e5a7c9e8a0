"""What every mailpulse config shares: the section base class, common field types, the broker
section, reading TOML files and secrets.

A config is a tree of :class:`Section` models (pydantic 2): unknown keys are errors
(``extra="forbid"``), types are strict (``port = "8883"`` is an error, not a silent conversion),
every key has a description (the docs table is rendered from them, :mod:`mailpulse.config.docs`).
Cross-field rules are ``model_validator`` methods whose message a person understands.

Validation runs with a *context* (a dict passed to ``model_validate``):

* ``from_file``: the data comes from a config file, so secret fields (passwords) are refused;
  code that builds a section directly may still pass them;
* ``local``: the config is for *this* machine, so files it names must exist here (a config
  checked on a PC for a Raspberry Pi, as ``image flash`` does, skips these checks).

A field validator's message is what follows "<key> <value>" in the problem's sentence
(:mod:`mailpulse.config.validation`); a model validator's message starts with the key it is about.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.fields import FieldInfo

from mailpulse import topics as T
from mailpulse.errors import UserError
from mailpulse.hdl.params import PARAMETER_SETS, get_params

__all__ = ["Address", "BrokerSettings", "FileHere", "Host", "Id", "ParamsName", "Port", "RelaySettings", "SecretSource",
           "Section",
           "env_source", "flatten", "in_context", "is_secret", "local_context", "read_secrets", "read_toml",
           "secret_field", "section_model"]

# --------------------------------------------------------------------------------------------
# the section base class and secret fields
# --------------------------------------------------------------------------------------------


def in_context(info: ValidationInfo, key: str) -> bool:
    """Whether the validation context has ``key`` set (see the module docstring)."""
    return bool(isinstance(info.context, Mapping) and info.context.get(key))


def local_context(*, local: bool) -> dict[str, bool]:
    """The validation context of a config file (``local``: check the files it names on this machine)."""
    return {"from_file": True, "local": local}


def secret_field(description: str, default: str | None = None) -> Any:
    """A secret (a password): set by the loader from the secrets file or the environment, never
    read from the config file, never shown in errors, repr or the docs table."""
    return Field(default, description=description, exclude=True, repr=False, json_schema_extra={"secret": True})


def is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds directly, or as a list item."""
    for tp in (annotation, *get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


class Section(BaseModel):
    """One table of a config file: unknown keys are errors, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets_in_files(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, Mapping) and in_context(info, "from_file"):
            for name in data:
                field = cls.model_fields.get(name)
                if field is not None and is_secret(field):
                    raise ValueError(f"{name} must not be in the config file: put it in the secrets file or name an "
                                     f"environment variable with {name}_env")
        return data


# --------------------------------------------------------------------------------------------
# field types (each validator's message is what follows "<key> <value>" in the sentence)
# --------------------------------------------------------------------------------------------


def _tcp_port(v: int) -> int:
    if not 0 < v < 65536:
        raise ValueError("is not a TCP port (1-65535)")
    return v


def _port_or_default(v: int) -> int:
    return v if v == 0 else _tcp_port(v)


def _host(v: str) -> str:
    if not v.strip() or any(c.isspace() for c in v) or "/" in v:
        raise ValueError("is not a host name or address")
    return v


def _address(v: str) -> str:
    local, at_sign, domain = v.rpartition("@")
    if not at_sign or not local or not domain or any(c.isspace() for c in v):
        raise ValueError("is not an e-mail address (user@domain)")
    return v


def _file_here(v: str, info: ValidationInfo) -> str:
    if v and in_context(info, "local") and not Path(v).is_file():
        raise ValueError("does not exist")
    return v


#: A TCP port, 1-65535.
Port = Annotated[int, AfterValidator(_tcp_port)]
#: A host name or address (not empty, no spaces).
Host = Annotated[str, AfterValidator(_host)]
#: An e-mail address (``user@domain``).
Address = Annotated[str, AfterValidator(_address)]
#: A file on the machine the config is for (checked when validating for this machine).
FileHere = Annotated[str, AfterValidator(_file_here)]


def _id(v: str) -> str:
    try:
        T.check_id(v, "")
    except ValueError:
        raise ValueError(f"must be {T.ID_RULE}") from None
    return v


def _params(v: str) -> str:
    try:
        get_params(v)
    except ValueError:
        raise ValueError(f"is not a core parameter set ({', '.join(PARAMETER_SETS)}, or <set>-r<R> with R route "
                         "intervals, e.g. small-r4)") from None
    return v


#: A site or node id (:func:`mailpulse.topics.check_id`).
Id = Annotated[str, AfterValidator(_id)]
#: The name of a core parameter set (:data:`mailpulse.hdl.params.PARAMETER_SETS`, or ``<set>-r<R>``:
#: :func:`mailpulse.hdl.params.get_params`).
ParamsName = Annotated[str, AfterValidator(_params)]


# --------------------------------------------------------------------------------------------
# the broker (node and collector)
# --------------------------------------------------------------------------------------------


class BrokerSettings(Section):
    """``[mqtt]``: how a node or the collector reaches the MQTT broker.

    TLS is the default (``mailpulse collector init`` writes a broker that has no other listener);
    plaintext needs ``tls = false`` or an ``mqtt://`` url, said explicitly.
    """

    url: str = Field("", description="Broker as a URL, `mqtts://host:port` (TLS) or `mqtt://host:port` (plaintext); "
                                     "sets `host`, `port` and `tls`, which must then not be given.")
    host: Host = Field("127.0.0.1", description="Broker host name or address (it must be in the broker "
                                                "certificate's names: the host name is checked).")
    port: Annotated[int, AfterValidator(_port_or_default)] = Field(0, description="Broker TCP port (0: 8883 with "
                                                                                  "TLS, 1883 without).")
    tls: bool = Field(True, description="Connect with TLS (the default). `false` sends the password and every event "
                                        "in clear: only on a network you trust, and the broker needs a plaintext "
                                        "listener (`collector init --plaintext-port`).")
    ca_file: FileHere | None = Field(None, description="CA certificate file that verifies the broker (system CAs "
                                                       "when absent); `collector init` makes one.")
    cert_file: FileHere | None = Field(None, description="Client certificate (PEM); the broker that `collector init` "
                                                         "writes requires one signed by its CA.")
    key_file: FileHere | None = Field(None, description="Private key of the client certificate (PEM, mode 0600).")
    username: str | None = Field(None, description="Broker user name (the password comes from `password_env` or the "
                                                   "secrets file).")
    password: str | None = secret_field("The broker password (from the secrets file or `password_env`).")
    password_env: str = Field("", description="Environment variable holding the broker password.")
    client_id: str = Field("", description="MQTT client id; the broker's persistent session is tied to it.")
    keepalive_s: int = Field(30, ge=1, description="MQTT keepalive; the broker sends the will after 1.5 times this.")
    session_expiry_s: int = Field(86400, ge=0, description="How long the broker keeps the session while the client "
                                                            "is away.")

    @model_validator(mode="after")
    def _apply_url(self) -> BrokerSettings:
        if not self.url:
            return self
        clash = [k for k in ("host", "port", "tls") if k in self.model_fields_set]
        if clash:
            raise ValueError(f"url and {', '.join(clash)} are both given: use one or the other")
        u = urlsplit(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname or u.path not in ("", "/") or u.query:
            raise ValueError(f"url {self.url!r} must look like mqtts://host:port or mqtt://host:port")
        if u.username or u.password:
            raise ValueError("url must not carry credentials: use username and the secrets file")
        try:
            port = u.port
        except ValueError:
            raise ValueError(f"url {self.url!r} has a bad port") from None
        self.tls = u.scheme == "mqtts"
        self.host, self.port = u.hostname, port or 0
        return self

    @model_validator(mode="after")
    def _default_port(self) -> BrokerSettings:
        if not self.port:
            self.port = 8883 if self.tls else 1883
        return self

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> BrokerSettings:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is given without cert_file: the key belongs to a client certificate")
        if self.cert_file and not self.key_file:
            raise ValueError("cert_file is given without key_file: a client certificate needs its private key")
        for name in ("ca_file", "cert_file"):
            if getattr(self, name) and not self.tls:
                raise ValueError(f"{name} is given but tls is false: the broker would be reached without TLS "
                                 "(set tls = true or use an mqtts:// url)")
        return self


# --------------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------------


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; :class:`UserError` naming the file when it cannot be read or parsed."""
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


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested tables as dotted keys: ``{"probe": {"r": {"x": 1}}}`` -> ``{"probe.r.x": "1"}``."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def read_secrets(path: Path) -> dict[str, str]:
    """A secrets file (TOML, flattened to dotted keys), refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"the secrets file {path} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read the secrets file {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise UserError(f"the secrets file {path} is readable by group or others (mode {mode & 0o777:o}); "
                        f"run chmod 600 {path}")
    return flatten(read_toml(path, "secrets file"))


@dataclass(frozen=True)
class SecretSource:
    """The secrets a checker can see: the keys of the secrets file and the environment.

    ``None`` means "not known here" (a config checked on another machine, or ``--no-secrets``):
    the secrets then are neither required nor resolved.
    """

    values: Mapping[str, str] | None = None
    env: Mapping[str, str] | None = None
    origin: str = "the secrets file"

    def get(self, key: str, env_name: str, where: str, env_key: str, *, needed: bool, out: list[str]) -> str | None:
        """The secret ``key`` (a key of the secrets file) or the variable ``env_name``; a problem
        sentence appended to ``out`` when it is missing and known to be missing."""
        if self.values is not None and key in self.values:
            return self.values[key]
        if env_name:
            if self.env is None:
                return None
            if env_name not in self.env:
                out.append(f"{where} {env_key} names the environment variable {env_name}, which is not set.")
                return None
            return self.env[env_name]
        if needed and self.values is not None:
            out.append(f"{self.origin} has no {key}, which {where} needs (or name an environment variable with "
                       f"{env_key}).")
        return None


def env_source(values: Mapping[str, str] | None, origin: str) -> SecretSource:
    """Secrets of this machine: ``values`` (the secrets file's keys) and the process environment."""
    return SecretSource(values, dict(os.environ), origin)


_RELAY_ADDR = r"^[A-Za-z0-9._:\[\]-]{1,255}$"
_RELAY_NAME = r"^[A-Za-z0-9._-]{1,64}$"
RelayAddress = Annotated[str, Field(pattern=_RELAY_ADDR)]
RelayName = Annotated[str, Field(pattern=_RELAY_NAME)]


class RelaySettings(Section):
    """``[relays]``: names of the relays, shown instead of addresses in metrics, alerts and the dashboard,
    and the routes of the latency intervals (:mod:`mailpulse.routes`; a node and its collector give the same map)."""

    names: dict[RelayAddress, RelayName] = Field(
        default_factory=dict, max_length=10000,
        description="Address to name, e.g. `{ \"127.0.0.1:47627\" = \"relay2\", \"mx.example.net\" = \"mx\" }`. "
                    "An address is `host:port`, `ip:port`, `host` or `ip` (`[v6]:port` for IPv6); Postfix's "
                    "`host[ip]:port` matches any of them, most specific first. Unnamed relays show as `host:port`.")
