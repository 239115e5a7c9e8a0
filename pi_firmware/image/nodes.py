"""The nodes an image is written for: the node config, its secrets and the image's own settings
(host name, SSH keys, Wi-Fi), from a template and per-node values (``--set``, or a CSV row).

The node config is validated by the one node config type, :class:`mailpulse.config.node.NodeConfig`,
exactly as ``mailpulse node check-config`` validates it, with the secrets that go onto the card;
only the checks of files on the Pi (model file, CA file, Maildir...) are left to the node, which is
where those files are.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from mailpulse.config.base import SecretSource, flatten, read_toml, section_model
from mailpulse.config.node import NodeConfig, validate_node
from mailpulse.errors import UserError

from .wheels import need_image_extra

__all__ = ["BUNDLE_KEYS", "CONFIG_ALIASES", "DEFAULT_ADMIN_USER", "IMAGE_FIELDS", "PI_CONFIG", "PI_SECRETS", "NodeSpec",
           "Wifi", "bundle_files", "dump_toml", "make_node", "read_nodes_csv", "read_secrets_file", "read_text",
           "validate_node_config", "wpa_psk"]

#: where the node config and its secrets land on the Pi
PI_CONFIG = "/etc/mailpulse/node.toml"
PI_SECRETS = "/etc/mailpulse/secrets.toml"
DEFAULT_ADMIN_USER = "pi"
#: CSV columns / keyword overrides that are shorthands for keys of the node config (TOML path)
CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "node_id": ("node", "id"),
    "site": ("node", "site"),
    "broker_username": ("mqtt", "username"),
    "backend": ("scorer", "backend"),
}
#: CSV columns that configure the image rather than the node config
IMAGE_FIELDS = ("hostname", "ssh_key", "wifi_ssid", "wifi_psk", "wifi_country", "admin_user")
#: how the secrets that go onto the card are named in problems
SECRETS_ON_CARD = "the secrets file for the card (--secrets, broker_password, secret.<key>)"

_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SSH_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) "
                         r"[A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def dump_toml(data: Mapping[str, Any]) -> str:
    """A TOML document (tomli-w) from parsed TOML data: the inverse of :func:`tomllib.loads`."""
    need_image_extra()
    import tomli_w

    return tomli_w.dumps(data)


@dataclasses.dataclass(frozen=True)
class Wifi:
    """Wi-Fi credentials: SSID (1-32 bytes), WPA2 passphrase (8-63 characters or 64 hex digits),
    ISO 3166 country code (the radio's regulatory domain)."""

    ssid: str
    psk: str
    country: str


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """Everything one node's image needs.

    Attributes
    ----------
    node_id, site, backend : str
        From the node config (``[node] id``, ``[node] site``, ``[scorer] backend``).
    hostname : str
        RFC 1123 host name; defaults to ``mailpulse-<node id>``.
    config_text : str
        The node config as it lands in ``/etc/mailpulse/node.toml`` (no secrets: when there are
        any, its ``[node] secrets_file`` points at ``/etc/mailpulse/secrets.toml``).
    secrets : dict
        Flattened secrets (``mqtt_password``, ``probe.<route>.smtp_password``...), written to the
        secrets file; empty when the node takes its passwords from elsewhere.
    ssh_keys : tuple of str
        Public keys of the administrator account (``admin_user``); none means no SSH.
    wifi : Wifi or None
    files : dict
        Further files for ``/etc/mailpulse/`` by name (the broker's CA, the node's client
        certificate and key from ``collector add-node``), installed 0600 for the service user.
    """

    node_id: str
    site: str
    backend: str
    hostname: str
    config_text: str
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssh_keys: tuple[str, ...] = ()
    wifi: Wifi | None = None
    admin_user: str = DEFAULT_ADMIN_USER
    files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)

    def secrets_text(self) -> str:
        """The secrets file (TOML, dotted keys nested as tables)."""
        nested: dict[str, Any] = {}
        for k, v in self.secrets.items():
            _set(nested, tuple(k.split(".")), v, "secrets")
        return dump_toml(nested) if nested else ""


def _get(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _set(data: dict[str, Any], path: Sequence[str], value: Any, source: str) -> None:
    cur = data
    for key in path[:-1]:
        nxt = cur.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise UserError(f"{source}: cannot set {'.'.join(path)} because {key} is not a table")
        cur = nxt
    cur[path[-1]] = value


def _key_type(path: Sequence[str]) -> Any:
    """The type the node config declares at a dotted key (None when there is no such key)."""
    model: type[BaseModel] = NodeConfig
    for i, key in enumerate(path):
        field = model.model_fields.get(key)
        if field is None:
            return None
        nested = section_model(field.annotation)
        if i == len(path) - 1:
            return None if nested is not None else field.annotation
        if nested is None or get_origin(field.annotation) is list:
            return None
        model = nested
    return None


def _coerce(path: Sequence[str], value: str, source: str) -> Any:
    """A CSV cell or ``--set`` value is text: give it the type the node config has at that key."""
    tp = _key_type(path)
    tp = next((a for a in get_args(tp) if a is not type(None)), tp) if type(None) in get_args(tp) else tp
    key = ".".join(path)
    try:
        if tp is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
    except ValueError:
        words = {bool: "true or false", int: "an integer", float: "a number"}[tp]
        raise UserError(f"{source}: {key} must be {words}, not {value!r}") from None
    return value


def validate_node_config(text: str, source: str, secrets: Mapping[str, str] | None = None) -> NodeConfig:
    """Validate a node config (TOML text) for a Pi, with the secrets that go onto its card.

    The same verdict as ``mailpulse node check-config`` on the node (:func:`mailpulse.config.node.validate_node`),
    except the checks of the Pi's files and environment.  A config that names a secrets file gets
    one only when there are secrets to write.

    Raises
    ------
    UserError
        One sentence naming the file, the key and the reason.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None
    sec = dict(secrets or {})
    named = _get(doc, ("node", "secrets_file"))
    if named and not sec:
        raise UserError(f"{source}: [node] secrets_file names {named} on the node, but no secrets were given to write "
                        "there (--secrets FILE, a broker_password or secret.<key> column)")
    if sec and not named:
        raise UserError(f"{source}: secrets were given but [node] secrets_file is not set, so the node would not "
                        "read them")
    cfg, errors = validate_node(doc, SecretSource(sec, None, SECRETS_ON_CARD), local=False)
    if cfg is None:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise UserError(f"{source}: {errors[0].rstrip('.')}{more}")
    return cfg


def _apply_broker_url(data: dict[str, Any], secrets: dict[str, str], url: str, source: str) -> None:
    """``mqtt[s]://[user[:password]@]host[:port]``: the broker keys of the config, the password to the secrets."""
    u = urlsplit(url.strip())
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname or port == -1 or u.path not in ("", "/") or u.query:
        raise UserError(f"{source}: broker_url must look like mqtt://host:1883 or mqtts://user:pass@host:8883, "
                        f"not {url!r}")
    mqtt = data.setdefault("mqtt", {})
    if not isinstance(mqtt, dict):
        raise UserError(f"{source}: cannot set the broker because mqtt is not a table")
    mqtt.pop("url", None)   # the row's broker replaces the template's
    tls = u.scheme == "mqtts"
    mqtt.update(host=u.hostname, port=port or (8883 if tls else 1883), tls=tls)
    if u.username:
        mqtt["username"] = unquote(u.username)
    if u.password:
        secrets["mqtt_password"] = unquote(u.password)


def _read_ssh_keys(value: str | Sequence[str] | None, source: str) -> tuple[str, ...]:
    if not value:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    keys: list[str] = []
    for item in items:
        p = Path(item).expanduser()
        text = item
        if "\n" not in item and not _SSH_KEY_RE.match(item.strip()):
            if not p.is_file():
                raise UserError(f"{source}: the SSH key {item!r} is neither a public key line nor a readable file")
            text = p.read_text()
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _SSH_KEY_RE.match(line):
                raise UserError(f"{source}: {line[:40]!r}... is not an SSH public key (ssh-ed25519 AAAA... comment)")
            keys.append(line)
    return tuple(keys)


def _check_wifi(ssid: str, psk: str, country: str, source: str) -> Wifi:
    if not 0 < len(ssid.encode()) <= 32 or any(c in ssid for c in "\n\r\0"):
        raise UserError(f"{source}: the Wi-Fi SSID must be 1-32 bytes on one line, not {ssid!r}")
    ok_pass = 8 <= len(psk) <= 63 and all(32 <= ord(c) < 127 for c in psk)
    if not ok_pass and not re.fullmatch(r"[0-9a-fA-F]{64}", psk):
        raise UserError(f"{source}: the Wi-Fi passphrase of {ssid!r} must be 8-63 printable ASCII characters or 64 "
                        "hex digits")
    country = country.strip().upper()
    if not _COUNTRY_RE.match(country):
        raise UserError(f"{source}: Wi-Fi needs a two-letter country code (ISO 3166, e.g. GB, DE, US), not {country!r}")
    return Wifi(ssid, psk, country)


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The WPA2 pre-shared key (64 hex digits) of a passphrase: PBKDF2-HMAC-SHA1 over the SSID,
    4096 rounds, as ``wpa_passphrase`` and the Raspberry Pi Imager compute it; a 64-hex key is
    returned as it is."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def read_secrets_file(path: Path | None) -> dict[str, str]:
    """A secrets template (TOML, as the node's secrets file): flattened ``key -> text``."""
    return {} if path is None else flatten(read_toml(path, "secrets file"))


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, str], secrets: dict[str, str],
                     source: str) -> tuple[dict[str, str], bool]:
    """Apply CSV-style columns to the parsed config and the secrets; the image fields and whether
    the config changed."""
    image: dict[str, str] = {}
    changed = False
    for col, raw in overrides.items():
        col = (col or "").strip()
        value = (raw or "").strip() if col != "ssh_key" else (raw or "")
        if not col or value == "":
            continue
        if col in IMAGE_FIELDS:
            image[col] = value
        elif col == "broker_url":
            _apply_broker_url(data, secrets, value, source)
            changed = True
        elif col == "broker_password":
            secrets["mqtt_password"] = value
        elif col.startswith("secret."):
            secrets[col[len("secret."):]] = value
        else:
            path = CONFIG_ALIASES.get(col) or tuple(col.split("."))
            if not all(_KEY_RE.fullmatch(p) for p in path):
                raise UserError(f"{source}: unknown column {col!r} (use a shorthand like node_id, a dotted config key "
                                f"like mqtt.port, or one of {', '.join(IMAGE_FIELDS)})")
            _set(data, path, _coerce(path, value, source), source)
            changed = True
    return image, changed


def make_node(
    config_text: str,
    source: str,
    *,
    overrides: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    hostname: str | None = None,
    ssh_keys: str | Sequence[str] | None = None,
    wifi_ssid: str | None = None,
    wifi_psk: str | None = None,
    wifi_country: str | None = None,
    admin_user: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> NodeSpec:
    """Build and validate one node from a node config (TOML text) and per-node values.

    ``overrides`` maps CSV-style column names to text: the shorthands of :data:`CONFIG_ALIASES`,
    ``broker_url`` (``mqtt[s]://[user[:password]@]host[:port]``), ``broker_password``,
    ``secret.<key>`` (a key of the secrets file), dotted config keys (``mqtt.client_id``, given the
    type the node config declares there) and the image fields of :data:`IMAGE_FIELDS`.  ``secrets``
    is the template of the secrets file; ``files`` go to ``/etc/mailpulse/`` (:func:`bundle_files`).
    The config is rewritten only when something changes it, otherwise it is used verbatim (comments
    and all).
    """
    need_image_extra()
    try:
        data = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None
    sec: dict[str, str] = dict(secrets or {})
    image, changed = _apply_overrides(data, overrides or {}, sec, source)
    if sec and _get(data, ("node", "secrets_file")) != PI_SECRETS:
        _set(data, ("node", "secrets_file"), PI_SECRETS, source)
        changed = True
    text = dump_toml(data) if changed else config_text
    cfg = validate_node_config(text, source, sec)
    host = hostname or image.get("hostname") or f"mailpulse-{cfg.node_id}".lower().replace("_", "-")[:63].rstrip("-")
    if not _HOSTNAME_RE.match(host):
        raise UserError(f"{source}: hostname {host!r} is not a valid host name (a-z, 0-9 and '-', at most 63, no "
                        "leading or trailing '-')")
    admin = admin_user or image.get("admin_user") or DEFAULT_ADMIN_USER
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", admin):
        raise UserError(f"{source}: admin user {admin!r} is not a valid Linux user name")
    ssid = wifi_ssid or image.get("wifi_ssid")
    wifi = None
    if ssid:
        wifi = _check_wifi(ssid, wifi_psk or image.get("wifi_psk", ""), wifi_country or image.get("wifi_country", ""),
                           source)
    elif wifi_psk or image.get("wifi_psk"):
        raise UserError(f"{source}: a Wi-Fi passphrase is given without an SSID")
    keys = _read_ssh_keys(ssh_keys if ssh_keys else image.get("ssh_key"), source)
    return NodeSpec(node_id=cfg.node_id, site=cfg.site, backend=cfg.scorer.backend, hostname=host, config_text=text,
                    secrets=sec, ssh_keys=keys, wifi=wifi, admin_user=admin, files=dict(files or {}))


#: The node config keys naming TLS files that a bundle carries.
BUNDLE_KEYS = (("mqtt", "ca_file"), ("mqtt", "cert_file"), ("mqtt", "key_file"))


def bundle_files(bundle: Path, config_text: str, source: str) -> dict[str, bytes]:
    """The TLS files a node bundle (``mailpulse collector add-node``) carries: each file that the
    config's ``[mqtt] ca_file`` / ``cert_file`` / ``key_file`` names in ``/etc/mailpulse/`` is read
    from the bundle folder by its name."""
    try:
        data = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None
    out: dict[str, bytes] = {}
    etc = Path(PI_CONFIG).parent
    for path in BUNDLE_KEYS:
        named = _get(data, path)
        if not isinstance(named, str) or not named:
            continue
        on_pi = Path(named)
        if on_pi.parent != etc:
            raise UserError(f"{source}: [{path[0]}] {path[1]} = {named!r} is not in {etc}/, where the image puts the "
                            "bundle's files (run collector add-node with --node-dir /etc/mailpulse)")
        try:
            out[on_pi.name] = (bundle / on_pi.name).read_bytes()
        except OSError as e:
            raise UserError(f"the bundle {bundle} has no {on_pi.name} ([{path[0]}] {path[1]}): {e.strerror or e}") \
                from None
    return out


def read_nodes_csv(csv_path: Path, config_path: Path, **defaults: Any) -> list[NodeSpec]:
    """One :class:`NodeSpec` per row of a CSV file, each built from the template node config.

    The header names the columns (see :func:`make_node`); ``node_id`` is required.  Every row is
    validated before anything is written; node ids and host names must be unique.
    """
    template = read_text(config_path, "node config")
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except FileNotFoundError:
        raise UserError(f"the node list {csv_path} does not exist") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"the node list {csv_path} is not a UTF-8 CSV file: {e}") from None
    if not rows:
        raise UserError(f"the node list {csv_path} has no rows (a header line, then one line per node)")
    if not header or "node_id" not in header:
        raise UserError(f"the node list {csv_path} needs a node_id column (header: {', '.join(header or [])})")
    nodes: list[NodeSpec] = []
    for i, row in enumerate(rows, start=2):
        if None in row:
            raise UserError(f"{csv_path}:{i}: the row has more cells than the header")
        nodes.append(make_node(template, f"{csv_path}:{i}", overrides=row, **defaults))
    for attr in ("node_id", "hostname"):
        seen: set[str] = set()
        for n in nodes:
            v = getattr(n, attr)
            if v in seen:
                raise UserError(f"the node list {csv_path} has the {attr.replace('_', ' ')} {v!r} twice")
            seen.add(v)
    return nodes


def read_text(path: Path, what: str) -> str:
    """A text file; :class:`UserError` naming ``what`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"the {what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the {what} {path}: {e}") from None
