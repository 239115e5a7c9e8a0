"""Per-node Raspberry Pi OS SD-card images that boot straight into the node firmware.

``flash_image`` copies a stock Raspberry Pi OS image (``.img`` or ``.img.xz``, checked against an
expected sha256), keeps the copy sparse, and writes into its FAT boot partition only - with mtools
at the partition offset read by ``sfdisk --json``, so nothing is mounted and no root is needed:

- the wheels (the project's own and its dependencies for the Pi), the node config, the systemd
  unit, a first-boot installer (``mailpulse/setup.sh``) and a manifest (``mailpulse/manifest.json``,
  no secrets) that ``inspect_image`` reads back;
- the first-boot hook: a cloud-init NoCloud seed (``user-data``, ``meta-data`` with a unique
  instance id, ``network-config`` when Wi-Fi is given, ``ds=nocloud;i=<id>`` in ``cmdline.txt``) on
  Trixie-based images, or ``firstrun.sh`` with the ``systemd.run=`` arguments on Bookworm-based ones;
- ``dtparam=spi=on`` in ``config.txt`` when the node's scorer backend is ``ice40``.

Every output is written under a temporary name and renamed when complete; any failure removes it.
Bad input (missing partitions, a full FAT partition, a bad config, a checksum mismatch, a risky
device) raises :class:`mailpulse.errors.UserError` with one sentence.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import importlib
import inspect
import io
import json
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.parser import Parser
from pathlib import Path
from typing import Any, Literal

from mailpulse import __version__
from mailpulse.errors import UserError

InitKind = Literal["cloudinit", "firstrun"]
INIT_CHOICES = ("auto", "cloudinit", "firstrun")

FIRSTBOOT_DIR = Path(__file__).resolve().parent / "firstboot"
DEFAULT_UNIT = Path(__file__).resolve().parent / "mailpulse-node.service"
#: where the files of the node live on the FAT partition
FAT_DIR = "mailpulse"
#: a device larger than this is probably not an SD card (refused without ``force``)
MAX_SD_BYTES = 256 * 1024**3
DEFAULT_ADMIN_USER = "pi"
DEFAULT_SERVICE_USER = "mailpulse"
DEFAULT_VENV = "/opt/mailpulse/venv"
#: the extra of the project wheel that the node installs
NODE_EXTRA = "node"
#: Python of the stock images, when the root file system does not tell
PYTHON_BY_INIT: dict[str, str] = {"firstrun": "3.11", "cloudinit": "3.13"}
#: the pip platform tags ``--download-deps`` asks for, per CPU architecture
PIP_PLATFORMS: dict[str, tuple[str, ...]] = {
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64", "linux_aarch64"),
    "armv7l": ("manylinux2014_armv7l", "manylinux_2_31_armv7l", "linux_armv7l"),
}
#: the kernel arguments of the Bookworm first-boot mechanism (as the Raspberry Pi Imager writes them)
FIRSTRUN_ARGS = "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"

_BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(_BLOCK)
_FAT_TYPES = {"b", "c", "e", "6", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"}
_LINUX_TYPES = {"83", "0fc63daf-8483-4772-8e79-3d69d8477de4", "b921b045-1df0-41c3-af44-4c6f280d3fae"}
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SSH_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

#: CSV columns / keyword overrides that are shorthands for keys of the node config (TOML path)
CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "node_id": ("node", "id"),
    "site": ("node", "site"),
    "broker_username": ("mqtt", "username"),
    "backend": ("scorer", "backend"),
}
#: CSV columns that configure the image rather than the node config
IMAGE_FIELDS = ("hostname", "ssh_key", "wifi_ssid", "wifi_psk", "wifi_country", "admin_user")
_BACKENDS = ("model", "sim", "pynq", "ice40")


# --------------------------------------------------------------------------------------------
# the node: config + provisioning settings
# --------------------------------------------------------------------------------------------


#: where the node config and its secrets land on the Pi
PI_CONFIG = "/etc/mailpulse/node.toml"
PI_SECRETS = "/etc/mailpulse/secrets.toml"


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


def _coerce(old: Any, value: str, key: str, source: str) -> Any:
    """A CSV cell is text: give it the type the template has at that key (int, float, bool)."""
    try:
        if isinstance(old, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if isinstance(old, int):
            return int(value)
        if isinstance(old, float):
            return float(value)
    except ValueError:
        raise UserError(f"{source}: {key} must be a {type(old).__name__} like the template's, not {value!r}") from None
    return value


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for c in value:
        if c in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write a parsed TOML document back (tables, arrays of tables, scalars, arrays).

    The inverse of :func:`tomllib.loads` for the value types TOML has (comments are not kept).
    """
    out: list[str] = []

    def table(d: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        subs: list[tuple[str, Any]] = []
        for k, v in d.items():
            if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
                subs.append((k, v))
            else:
                out.append(f"{_toml_key(k)} = {_toml_scalar(v)}")
        for k, v in subs:
            path = (*prefix, k)
            name = ".".join(_toml_key(p) for p in path)
            if isinstance(v, dict):
                out.append(f"\n[{name}]")
                table(v, path)
            else:
                for item in v:
                    out.append(f"\n[[{name}]]")
                    table(item, path)

    table(data, ())
    return "\n".join(out).lstrip("\n") + "\n"


#: messages of the firmware's checks that are about paths on the Pi, not on this PC (see
#: validate_node_config): dropped until ``check_config`` can skip them itself
_PI_PATH_ERRORS = re.compile(r"does not exist|is not a Maildir")


def validate_node_config(text: str, source: str, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse and validate a node config (TOML text) and its secrets; return the parsed document.

    First the fields the image itself needs: ``[node] id`` and ``site`` (1-64 letters, digits,
    ``_``, ``-``), ``[mqtt] host`` (non-empty), ``[mqtt] port`` (1-65535), ``[scorer] backend``,
    and no password in the file.  Then the node firmware's own validation,
    :func:`mailpulse.pi_firmware.config.check_config` on a temporary copy (with the secrets in a 0600 file,
    ``require_secrets=False``); its checks of local paths are about the Pi, so they are skipped.

    Raises
    ------
    UserError
        One sentence naming the file, the key and the reason.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None
    for path in (("node", "id"), ("node", "site")):
        v = _get(data, path)
        if not isinstance(v, str) or not _ID_RE.match(v):
            raise UserError(f"{source}: {'.'.join(path)} must be 1-64 letters, digits, '_' or '-', not {v!r}")
    host = _get(data, ("mqtt", "host"))
    if not isinstance(host, str) or not host.strip():
        raise UserError(f"{source}: mqtt.host (the broker) must be a non-empty host name, not {host!r}")
    port = _get(data, ("mqtt", "port"))
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise UserError(f"{source}: mqtt.port must be a TCP port 1-65535, not {port!r}")
    if _get(data, ("mqtt", "password")) is not None:
        raise UserError(f"{source}: mqtt.password must not be in the node config: give it as broker_password "
                        "(CSV column), in the broker URL, or in --secrets FILE")
    backend = _get(data, ("scorer", "backend"))
    if backend is not None and backend not in _BACKENDS:
        raise UserError(f"{source}: scorer.backend must be one of {', '.join(_BACKENDS)}, not {backend!r}")
    _firmware_check(data, source, secrets or {})
    return data


def firmware_check_available() -> bool:
    """Whether the node firmware's own config check can run here (it needs the ``node`` extra)."""
    try:
        return callable(getattr(importlib.import_module("mailpulse.pi_firmware.config"), "check_config", None))
    except ImportError:
        return False


def _firmware_check(data: Mapping[str, Any], source: str, secrets: Mapping[str, str]) -> None:
    if not firmware_check_available():
        return  # e.g. Pillow missing on this PC: the checks above are all there is (the manifest says so)
    check = importlib.import_module("mailpulse.pi_firmware.config").check_config
    doc = json.loads(json.dumps(data, default=str))
    doc.get("node", {}).pop("secrets_file", None)
    with tempfile.TemporaryDirectory(prefix="mailpulse-check-") as d:
        if secrets:
            sf = Path(d) / "secrets.toml"
            sf.touch(mode=0o600)
            sf.write_text(NodeSpec("x", "x", "x", "x", "", secrets).secrets_text())
            doc.setdefault("node", {})["secrets_file"] = str(sf)
        cf = Path(d) / "node.toml"
        cf.write_text(dump_toml(doc))
        kwargs: dict[str, Any] = {"require_secrets": False}
        params = inspect.signature(check).parameters
        if "check_paths" in params:
            kwargs["check_paths"] = False
        _, errors = check(cf, **kwargs)
    if "check_paths" not in params:
        errors = [e for e in errors if not _PI_PATH_ERRORS.search(e)]
    if errors:
        more = f" (and {len(errors) - 1} more: run mailpulse node check-config)" if len(errors) > 1 else ""
        raise UserError(f"{source}: {errors[0]}{more}")


def _apply_broker_url(data: dict[str, Any], secrets: dict[str, str], url: str, source: str) -> None:
    m = re.fullmatch(r"(mqtts?)://(?:([^:@/]+)(?::([^@/]*))?@)?(\[[^\]]+\]|[^:/@]+)(?::(\d+))?/?", url.strip())
    if not m:
        raise UserError(f"{source}: broker_url must look like mqtt://host:1883 or mqtts://user:pass@host:8883, not {url!r}")
    scheme, user, password, host, port = m.groups()
    _set(data, ("mqtt", "host"), host.strip("[]"), source)
    _set(data, ("mqtt", "port"), int(port) if port else (8883 if scheme == "mqtts" else 1883), source)
    if scheme == "mqtts":
        _set(data, ("mqtt", "tls"), True, source)
    if user:
        _set(data, ("mqtt", "username"), user, source)
    if password:
        secrets["mqtt_password"] = password


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
        raise UserError(f"{source}: the Wi-Fi passphrase of {ssid!r} must be 8-63 printable ASCII characters or 64 hex digits")
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
    if path is None:
        return {}
    try:
        doc = tomllib.loads(read_text(path, "secrets file"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"the secrets file {path} is not valid TOML: {e}") from None
    out: dict[str, str] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = str(v)

    walk(doc, "")
    return out


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
) -> NodeSpec:
    """Build and validate one node from a node config (TOML text) and per-node values.

    ``overrides`` maps CSV-style column names to text: the shorthands of :data:`CONFIG_ALIASES`,
    ``broker_url`` (``mqtt[s]://[user[:password]@]host[:port]``), ``broker_password``,
    ``secret.<key>`` (a key of the secrets file), dotted config keys (``mqtt.client_id``) and the
    image fields of :data:`IMAGE_FIELDS`.  ``secrets`` is the template of the secrets file.  The
    config is rewritten only when something changes it, otherwise it is used verbatim.
    """
    try:
        data = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None
    sec: dict[str, str] = dict(secrets or {})
    image: dict[str, str] = {}
    changed = False
    for col, raw in (overrides or {}).items():
        col = (col or "").strip()
        value = (raw or "").strip() if col != "ssh_key" else (raw or "")
        if not col or value == "":
            continue
        if col in IMAGE_FIELDS:
            image[col] = value
        elif col == "broker_url":
            _apply_broker_url(data, sec, value, source)
            changed = True
        elif col == "broker_password":
            sec["mqtt_password"] = value
        elif col.startswith("secret."):
            sec[col[len("secret."):]] = value
        else:
            path = CONFIG_ALIASES.get(col) or tuple(col.split("."))
            if not all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in path):
                raise UserError(f"{source}: unknown column {col!r} (use a shorthand like node_id, a dotted config key like mqtt.port, or one of {', '.join(IMAGE_FIELDS)})")
            _set(data, path, _coerce(_get(data, path), value, ".".join(path), source), source)
            changed = True
    if sec and _get(data, ("node", "secrets_file")) != PI_SECRETS:
        _set(data, ("node", "secrets_file"), PI_SECRETS, source)
        changed = True
    text = dump_toml(data) if changed else config_text
    data = validate_node_config(text, source, sec)
    node_id = str(_get(data, ("node", "id")))
    host = hostname or image.get("hostname") or f"mailpulse-{node_id}".lower().replace("_", "-")[:63].rstrip("-")
    if not _HOSTNAME_RE.match(host):
        raise UserError(f"{source}: hostname {host!r} is not a valid host name (a-z, 0-9 and '-', at most 63, no leading or trailing '-')")
    admin = admin_user or image.get("admin_user") or DEFAULT_ADMIN_USER
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", admin):
        raise UserError(f"{source}: admin user {admin!r} is not a valid Linux user name")
    ssid = wifi_ssid or image.get("wifi_ssid")
    wifi = None
    if ssid:
        wifi = _check_wifi(ssid, wifi_psk or image.get("wifi_psk", ""), wifi_country or image.get("wifi_country", ""), source)
    elif wifi_psk or image.get("wifi_psk"):
        raise UserError(f"{source}: a Wi-Fi passphrase is given without an SSID")
    keys = _read_ssh_keys(ssh_keys if ssh_keys else image.get("ssh_key"), source)
    return NodeSpec(
        node_id=node_id,
        site=str(_get(data, ("node", "site"))),
        backend=str(_get(data, ("scorer", "backend")) or "model"),
        hostname=host,
        config_text=text,
        secrets=sec,
        ssh_keys=keys,
        wifi=wifi,
        admin_user=admin,
    )


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
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"the {what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the {what} {path}: {e}") from None


# --------------------------------------------------------------------------------------------
# partitions and the FAT boot partition (sfdisk + mtools, no mounting)
# --------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, *, env: Mapping[str, str] | None = None, input: bytes | None = None) -> bytes:
    tool = cmd[0]
    if shutil.which(tool) is None:
        raise UserError(f"{tool} is needed to {what} but is not installed (Debian: {_PKG.get(tool, tool)})")
    proc = subprocess.run(list(cmd), capture_output=True, env=dict(env) if env else None, input=input)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise _ToolError(f"{what}: {tool} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc.stdout


class _ToolError(UserError):
    pass


_PKG = {"sfdisk": "fdisk", "mcopy": "mtools", "mdir": "mtools", "mmd": "mtools", "mdel": "mtools", "minfo": "mtools",
        "mtype": "mtools", "mdeltree": "mtools", "debugfs": "e2fsprogs", "bmaptool": "bmap-tools"}


@dataclasses.dataclass(frozen=True)
class Partition:
    """One partition of an image: number (1-based), byte offset and size, type (MBR hex or GPT GUID)."""

    number: int
    start: int
    size: int
    type: str


def read_partitions(image: Path) -> list[Partition]:
    """The partition table of ``image`` as ``sfdisk --json`` reads it (MBR or GPT)."""
    try:
        out = _run(["sfdisk", "--json", str(image)], f"read the partition table of {image}")
    except _ToolError:
        raise UserError(f"{image} has no partition table: it is not a Raspberry Pi OS image") from None
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        m = re.search(r"(\d+)$", p.get("node", ""))
        parts.append(Partition(int(m.group(1)) if m else i, int(p["start"]) * sector, int(p["size"]) * sector, str(p["type"]).lower()))
    return parts


def boot_and_root(image: Path) -> tuple[Partition, Partition]:
    """The FAT boot partition and the Linux root partition after it, as Raspberry Pi OS lays them out.

    Raises
    ------
    UserError
        When the image does not have them, or they reach past the end of the file.
    """
    parts = read_partitions(image)
    size = device_bytes(image)
    boot = next((p for p in parts if p.type in _FAT_TYPES), None)
    root = next((p for p in parts if p.type in _LINUX_TYPES and boot and p.start > boot.start), None)
    found = ", ".join(f"#{p.number} type {p.type}" for p in parts) or "no partitions"
    if boot is None or root is None:
        raise UserError(f"{image} is not a Raspberry Pi OS image: it needs a FAT boot partition followed by a Linux root partition, found {found}")
    for p in (boot, root):
        if p.start + p.size > size:
            raise UserError(f"{image} is truncated: partition #{p.number} ends at byte {p.start + p.size} but the file has {size} bytes")
    return boot, root


def device_bytes(path: Path) -> int:
    """The size of an image file or of a block device (whose ``st_size`` is 0)."""
    with path.open("rb") as f:
        return f.seek(0, os.SEEK_END)


class FatPartition:
    """The FAT file system at a byte offset of an image file, read and written through mtools.

    mtools addresses it as ``image@@offset``; ``MTOOLS_SKIP_CHECK`` and an empty ``MTOOLSRC`` keep
    the user's mtools configuration out of it.  Names are paths from the root (``mailpulse/x``).
    """

    def __init__(self, image: Path, offset: int) -> None:
        self.image = image
        self.spec = f"{image}@@{offset}"
        self.env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull, "LC_ALL": "C"}
        self._check()

    def _m(self, *args: str, what: str, input: bytes | None = None) -> bytes:
        return _run([args[0], "-i", self.spec, *args[1:]], what, env=self.env, input=input)

    def _check(self) -> None:
        try:
            self._m("minfo", "::", what="read the boot partition")
        except _ToolError:
            raise UserError(f"the boot partition of {self.image} is not a FAT file system") from None

    def cluster_bytes(self) -> int:
        out = self._m("minfo", "::", what="read the boot partition").decode()
        sector = int(re.search(r"sector size: (\d+) bytes", out).group(1))  # type: ignore[union-attr]
        cluster = int(re.search(r"cluster size: (\d+) sectors", out).group(1))  # type: ignore[union-attr]
        return sector * cluster

    def free_bytes(self) -> int:
        out = self._m("mdir", "::", what="read the boot partition").decode()
        m = re.search(r"([\d ]+) bytes free", out)
        return int(m.group(1).replace(" ", "")) if m else 0

    def list(self) -> list[str]:
        """All files (not directories) below the root, as paths."""
        out = self._m("mdir", "-b", "-/", "-a", "::", what="list the boot partition").decode()
        names = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("::/") and not line.endswith("/"):
                names.append(line[3:])
        return sorted(names)

    def exists(self, name: str) -> bool:
        return name in self.list()

    def read(self, name: str) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            dst = Path(d) / "f"
            self._m("mcopy", "-n", f"::{name}", str(dst), what=f"read {name} from the boot partition")
            return dst.read_bytes()

    def mkdir(self, name: str) -> None:
        if name not in self.dirs():
            self._m("mmd", f"::{name}", what=f"create {name}/ on the boot partition")

    def dirs(self) -> set[str]:
        out = self._m("mdir", "-b", "-/", "-a", "::", what="list the boot partition").decode()
        return {line.strip()[3:-1] for line in out.splitlines() if line.strip().startswith("::/") and line.strip().endswith("/")}

    def write(self, name: str, data: bytes) -> None:
        """Create or replace a file; a full partition is a :class:`UserError`."""
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "f"
            src.write_bytes(data)
            self.copy_in(src, name)

    def copy_in(self, src: Path, name: str) -> None:
        try:
            self._m("mcopy", "-o", "-m", str(src), f"::{name}", what=f"write {name} to the boot partition")
        except _ToolError as e:
            if "full" in str(e).lower() or "no free" in str(e).lower():
                raise UserError(f"the FAT boot partition of {self.image} is full: {name} does not fit") from None
            raise

    def delete(self, name: str) -> None:
        self._m("mdel", f"::{name}", what=f"delete {name} from the boot partition")


# --------------------------------------------------------------------------------------------
# copying, checksums, decompression (sparse)
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def expected_sha256(value: str | None) -> str | None:
    """An expected checksum given as 64 hex digits or as a ``.sha256`` file (``<hex>  <name>``)."""
    if not value:
        return None
    if _SHA256_RE.match(value.strip()):
        return value.strip().lower()
    p = Path(value)
    if p.is_file():
        first = p.read_text(errors="replace").split()
        if first and _SHA256_RE.match(first[0]):
            return first[0].lower()
        raise UserError(f"the checksum file {p} does not start with a sha256 (64 hex digits)")
    raise UserError(f"--sha256 must be 64 hex digits or a .sha256 file, not {value!r}")


def verify_checksum(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    got = sha256_file(path)
    if got != expected.lower():
        raise UserError(f"{path} does not match its expected sha256: expected {expected.lower()}, got {got} (download it again)")


def _data_extents(f: io.BufferedReader | Any, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the data regions of a file, skipping holes (SEEK_DATA/SEEK_HOLE)."""
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # no SEEK_DATA here: treat the rest as data
                yield pos, size
            return  # ENXIO: only a hole is left
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def _write_sparse(dst: Any, offset: int, data: bytes | memoryview) -> int:
    """Write ``data`` at ``offset`` skipping all-zero 64 KiB blocks; return bytes written."""
    view = memoryview(data)
    written = 0
    i = 0
    n = len(view)
    while i < n:
        blk = view[i : i + _BLOCK]
        if blk != _ZERO_BLOCK[: len(blk)]:
            j = i + len(blk)
            while j < n and view[j : j + _BLOCK] != _ZERO_BLOCK[: len(view[j : j + _BLOCK])]:
                j += _BLOCK
            j = min(j, n)
            dst.seek(offset + i)
            dst.write(view[i:j])
            written += j - i
            i = j
        else:
            i += len(blk)
    return written


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (a new file) keeping it sparse: holes stay holes, zero blocks are
    not written.  Data regions are found with SEEK_DATA/SEEK_HOLE."""
    size = src.stat().st_size
    with src.open("rb") as fi, dst.open("wb") as fo:
        for start, end in _data_extents(fi, size):
            pos = start
            while pos < end:
                fi.seek(pos)
                chunk = fi.read(min(4 << 20, end - pos))
                if not chunk:
                    break
                _write_sparse(fo, pos, chunk)
                pos += len(chunk)
        fo.truncate(size)


def decompress_xz(src: Path, dst: Path) -> None:
    """Decompress an ``.xz`` image into a new sparse file."""
    pos = 0
    try:
        with lzma.open(src, "rb") as fi, dst.open("wb") as fo:
            while chunk := fi.read(4 << 20):
                _write_sparse(fo, pos, chunk)
                pos += len(chunk)
            fo.truncate(pos)
    except (lzma.LZMAError, EOFError) as e:
        raise UserError(f"{src} is not a complete .xz file: {e}") from None


def materialise(base: Path, dst: Path) -> None:
    """Copy (``.img``) or decompress (``.img.xz``) the base image to ``dst``, sparse."""
    if not base.is_file():
        raise UserError(f"the base image {base} does not exist")
    if base.suffix == ".xz":
        decompress_xz(base, dst)
    elif base.suffix in (".zip", ".gz"):
        raise UserError(f"{base}: give the image as .img or .img.xz (unpack {base.suffix} files first)")
    else:
        sparse_copy(base, dst)


def allocated_bytes(path: Path) -> int:
    """Bytes a file really occupies on disk (less than its size when it is sparse)."""
    return path.stat().st_blocks * 512


# --------------------------------------------------------------------------------------------
# wheels
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """What the Pi runs: Python ``major.minor`` and the CPU architecture (``aarch64`` or ``armv7l``)."""

    python: str
    arch: str

    @property
    def cp(self) -> str:
        return "cp" + self.python.replace(".", "")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_tags(filename: str) -> tuple[str, set[str], set[str], set[str]]:
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise UserError(f"{filename} is not a wheel file name (name-version-python-abi-platform.whl)")
    return _norm(parts[0]), set(parts[-3].split(".")), set(parts[-2].split(".")), set(parts[-1].split("."))


def wheel_fits(filename: str, target: Target) -> bool:
    """Whether a wheel installs on the target (pure Python, or built for its CPython and CPU)."""
    _, pys, abis, plats = _wheel_tags(filename)
    if "any" not in plats and not any(p.endswith("_" + target.arch) for p in plats):
        return False
    minor = int(target.python.split(".")[1])
    for py in pys:
        if py in ("py3", "py" + target.python.replace(".", "")) or py == target.cp:
            return True
        m = re.fullmatch(r"cp3(\d+)", py)
        if m and "abi3" in abis and int(m.group(1)) <= minor:
            return True
    return False


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def python_allowed(spec: str, version: str) -> bool:
    """Evaluate a ``Requires-Python`` specifier (``>=3.11,<3.13``) for ``major.minor``."""
    v = _version_tuple(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|~=|<|>)\s*([\d.*]+)", clause)
        if not m:
            continue
        op, ver = m.groups()
        w = _version_tuple(ver.replace("*", "0"))
        n = max(len(w), 2)
        a, b = (v + (0,) * 3)[:n], (w + (0,) * 3)[:n]
        ok = {">=": a >= b, "<=": a <= b, "<": a < b, ">": a > b, "==": a == b or (ver.endswith("*") and a[:len(w) - 1] == b[:len(w) - 1]),
              "!=": a != b, "~=": a >= b}[op]
        if not ok:
            return False
    return True


def project_requirements(wheel: Path) -> tuple[str, list[str]]:
    """``Requires-Python`` and the distributions the node needs (the base and ``node`` extra)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(z.read(meta_name).decode())
    except (zipfile.BadZipFile, StopIteration, OSError) as e:
        raise UserError(f"{wheel} is not a valid wheel: {e}") from None
    needed = []
    for req in meta.get_all("Requires-Dist") or []:
        name_part, _, marker = req.partition(";")
        if marker and not re.search(r"extra\s*==\s*['\"]" + NODE_EXTRA + "['\"]", marker):
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name_part)
        if m:
            needed.append(_norm(m.group(1)))
    return meta.get("Requires-Python", ""), needed


def check_wheels(wheels: Sequence[Path], target: Target) -> Path:
    """Check that the wheels install offline on the target; return the project wheel.

    Raises
    ------
    UserError
        No (or two) ``mailpulse`` wheels, a Python the project does not support, or a dependency
        with no wheel for the target's Python and CPU.
    """
    project = [w for w in wheels if _norm(w.name.split("-")[0]) == "mailpulse"]
    if len(project) != 1:
        raise UserError(f"expected exactly one mailpulse-*.whl among the wheels, found {len(project)}")
    requires_python, needed = project_requirements(project[0])
    if requires_python and not python_allowed(requires_python, target.python):
        raise UserError(f"{project[0].name} requires Python {requires_python} but the image runs Python {target.python} (set --pi-python if the image was detected wrongly)")
    by_name: dict[str, list[str]] = {}
    for w in wheels:
        by_name.setdefault(_wheel_tags(w.name)[0], []).append(w.name)
    missing = [n for n in needed if not any(wheel_fits(f, target) for f in by_name.get(n, []))]
    if missing:
        raise UserError(
            f"no wheel of {', '.join(missing)} for the Pi (CPython {target.python}, {target.arch}) among the wheels: "
            "add them with --wheels DIR or fetch them with --download-deps")
    return project[0]


def build_project_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build the project's wheel (``pip wheel --no-deps``) from its source tree into ``dest``."""
    src = source or Path(__file__).resolve().parent.parent
    if not (src / "pyproject.toml").is_file():
        raise UserError(f"cannot build the project wheel: {src} is not the mailpulse source tree (give the wheels with --wheels DIR)")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(src)],
                          capture_output=True, text=True)
    built = sorted(dest.glob("mailpulse-*.whl"))
    if proc.returncode != 0 or not built:
        raise UserError(f"building the project wheel failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return built[-1]


def download_deps(dest: Path, requirements: Sequence[str], target: Target) -> list[Path]:
    """Fetch the dependency wheels for the Pi from PyPI (``pip download --only-binary=:all:``)."""
    plats = PIP_PLATFORMS.get(target.arch)
    if not plats:
        raise UserError(f"--download-deps knows no pip platform for {target.arch}")
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", target.python, "--abi", target.cp, "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in plats:
        cmd += ["--platform", p]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"pip could not download wheels of {', '.join(requirements)} for CPython {target.python} {target.arch}: {last[0]}")
    return sorted(set(dest.glob("*.whl")) - before)


# --------------------------------------------------------------------------------------------
# the unit, the root file system, the first-boot files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitInfo:
    """What the first boot needs to know about the node firmware's systemd unit.

    Attributes
    ----------
    user : str
        ``User=`` (the service user that owns the config).
    venv : str
        The virtual environment the wheels go into.
    links : tuple of str
        ``mailpulse`` executables the unit runs from outside the venv (``/usr/local/bin/mailpulse``):
        the first boot links them to the venv's.
    """

    path: Path
    name: str
    user: str
    venv: str
    links: tuple[str, ...] = ()


_SYSTEM_PREFIXES = ("", "/usr", "/usr/local")


def read_unit(path: Path | None = None, venv: str | None = None) -> UnitInfo:
    """Read the unit's ``User=`` and the ``mailpulse`` executables of its ``Exec*=`` lines.

    The venv is ``venv`` when given; else ``<prefix>`` when the unit runs
    ``<prefix>/bin/mailpulse`` from a non-system prefix (``/opt/mailpulse/venv``); else
    :data:`DEFAULT_VENV`.  System paths (``/usr/local/bin/mailpulse``) become links to the venv.
    """
    path = path or DEFAULT_UNIT
    text = read_text(path, "node firmware's systemd unit")
    user = re.search(r"^\s*User\s*=\s*(\S+)", text, re.M)
    exes = re.findall(r"^\s*Exec(?:Start|StartPre|StartPost|Reload|Stop|StopPost)\s*=\s*[-@:+!]*(\S+)", text, re.M)
    ours = list(dict.fromkeys(e for e in exes if e.startswith("/") and e.rsplit("/", 1)[-1] == "mailpulse"))
    if venv is None:
        venv = DEFAULT_VENV
        for e in ours:
            prefix = e.rsplit("/bin/", 1)[0] if "/bin/" in e else ""
            if e.endswith("/bin/mailpulse") and prefix not in _SYSTEM_PREFIXES:
                venv = prefix
                break
    if not re.fullmatch(r"/[A-Za-z0-9_./-]+", venv) or venv.rstrip("/") in (*_SYSTEM_PREFIXES, "/opt"):
        raise UserError(f"{path}: {venv!r} is not a place for the node's virtual environment (give a folder like {DEFAULT_VENV})")
    links = tuple(e for e in ours if not e.startswith(venv.rstrip("/") + "/"))
    for e in links:
        if not re.fullmatch(r"/[A-Za-z0-9_./-]+", e):
            raise UserError(f"{path}: the executable path {e!r} has characters the first boot will not handle")
    return UnitInfo(path, path.name, user.group(1) if user else DEFAULT_SERVICE_USER, venv, links)


@dataclasses.dataclass(frozen=True)
class RootInfo:
    """What the root file system says about the OS (``None`` when it cannot tell)."""

    codename: str | None
    python: str | None
    arch: str | None


def probe_root(image: Path, root: Partition) -> RootInfo:
    """Read ``/etc/os-release`` and ``/usr/lib`` of the ext4 root with ``debugfs`` (read-only,
    no mounting) to learn the Debian release, the Python version and the CPU architecture."""
    if shutil.which("debugfs") is None:
        return RootInfo(None, None, None)
    dev = f"{image}?offset={root.start}"

    def dbg(cmd: str) -> str:
        p = subprocess.run(["debugfs", "-R", cmd, dev], capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else ""

    osr = dbg("cat /etc/os-release")
    codename = re.search(r"^VERSION_CODENAME=\"?(\w+)", osr, re.M)
    libs = dbg("ls -p /usr/lib")
    pys = sorted((int(m) for m in re.findall(r"/python3\.(\d+)/", libs)), reverse=True)
    arch = "aarch64" if "/aarch64-linux-gnu/" in libs else "armv7l" if "/arm-linux-gnueabihf/" in libs else None
    return RootInfo(codename.group(1) if codename else None, f"3.{pys[0]}" if pys else None, arch)


def detect_init(fat: FatPartition, requested: str = "auto", codename: str | None = None) -> InitKind:
    """The first-boot mechanism: cloud-init when the boot partition carries a NoCloud seed
    (``user-data``/``meta-data``, as Trixie-based images do) or the root file system is newer than
    Bookworm; ``firstrun.sh`` for Bookworm (and older, or unknown) images."""
    if requested == "cloudinit" or requested == "firstrun":
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise UserError(f"--init must be one of {', '.join(INIT_CHOICES)}, not {requested!r}")
    if {"user-data", "meta-data"} & set(fat.list()):
        return "cloudinit"
    if codename and codename not in ("buster", "bullseye", "bookworm"):
        return "cloudinit"
    return "firstrun"


def _template(name: str, values: Mapping[str, str]) -> str:
    text = (FIRSTBOOT_DIR / name).read_text()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise RuntimeError(f"template {name}: unfilled {left}")
    return text


def _yq(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def instance_id(node: NodeSpec) -> str:
    return f"mailpulse-{node.node_id}-{uuid.uuid4().hex[:12]}"


def render_firstboot(node: NodeSpec, init: InitKind, unit: UnitInfo, iid: str) -> dict[str, bytes]:
    """The files the node's first boot needs, by path on the FAT partition (without wheels)."""
    files: dict[str, bytes] = {}
    q = shlex.quote
    files[f"{FAT_DIR}/setup.sh"] = _template("setup.sh", {
        "SERVICE_USER": q(unit.user), "SERVICE_HOME": q(f"/var/lib/{unit.user}"), "VENV": q(unit.venv),
        "UNIT_NAME": q(unit.name), "BACKEND": q(node.backend), "REQUIREMENT": q(f"mailpulse[{NODE_EXTRA}]"),
        "LINKS": q(" ".join(unit.links)),
    }).encode()
    files[f"{FAT_DIR}/node.toml"] = node.config_text.encode()
    if node.secrets:
        files[f"{FAT_DIR}/secrets.toml"] = node.secrets_text().encode()
    files[f"{FAT_DIR}/{unit.name}"] = unit.path.read_bytes()
    if init == "cloudinit":
        files["user-data"] = _template("user-data", {
            "NODE_ID": node.node_id, "HOSTNAME": _yq(node.hostname), "ADMIN_USER": _yq(node.admin_user),
            "SSH_KEYS": "[" + ", ".join(_yq(k) for k in node.ssh_keys) + "]",
            "SSH_ENABLE": "  - [systemctl, enable, --now, ssh]\n" if node.ssh_keys else "",
        }).encode()
        files["meta-data"] = f"instance-id: {iid}\nlocal-hostname: {node.hostname}\n".encode()
        if node.wifi:
            files["network-config"] = _template("network-config", {
                "NODE_ID": node.node_id, "WIFI_COUNTRY": _yq(node.wifi.country), "WIFI_SSID": _yq(node.wifi.ssid),
                "WIFI_PSK": _yq(node.wifi.psk)}).encode()
    else:
        w = node.wifi
        files["firstrun.sh"] = _template("firstrun.sh", {
            "HOSTNAME": q(node.hostname), "ADMIN_USER": q(node.admin_user), "SSH_KEYS": q("\n".join(node.ssh_keys)),
            "WIFI_SSID": q(w.ssid if w else ""), "WIFI_PSK": q(wpa_psk(w.ssid, w.psk) if w else ""),
            "WIFI_COUNTRY": q(w.country if w else ""),
        }).encode()
    return files


def edit_cmdline(cmdline: str, init: InitKind, iid: str) -> str:
    """Add the first-boot kernel arguments (one line, replacing earlier ones)."""
    args = [a for a in cmdline.split() if not a.startswith(("ds=", "systemd.run", "systemd.unit="))]
    if init == "cloudinit":
        args.append(f"ds=nocloud;i={iid}")
    else:
        args += FIRSTRUN_ARGS.split()
    return " ".join(args) + "\n"


def enable_spi(config_txt: str) -> str:
    """``dtparam=spi=on`` for every board: uncomment it in the leading section, else append it
    under ``[all]``; unchanged when it is already on there."""
    lines = config_txt.splitlines()
    section_all = True
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("["):
            section_all = s == "[all]"
        if section_all and s.replace(" ", "") == "dtparam=spi=on":
            return config_txt
        if section_all and i < _first_section(lines) and re.fullmatch(r"#\s*dtparam=spi=on", s):
            lines[i] = "dtparam=spi=on"
            return "\n".join(lines) + "\n"
    return config_txt.rstrip("\n") + "\n\n[all]\n# mailpulse: the iCE40 scorer is on SPI0\ndtparam=spi=on\n"


def _first_section(lines: Sequence[str]) -> int:
    return next((i for i, line in enumerate(lines) if line.strip().startswith("[")), len(lines))


# --------------------------------------------------------------------------------------------
# writing one image
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlashResult:
    """What was written: the image, its node, the first-boot mechanism, the files on the FAT."""

    image: Path
    node_id: str
    init: InitKind
    instance_id: str
    files: tuple[str, ...]
    target: Target


def customise(image: Path, node: NodeSpec, wheels: Sequence[Path] | Wheels, *, init: str = "auto",
              unit: UnitInfo | None = None, pi_python: str | None = None, pi_arch: str | None = None) -> FlashResult:
    """Write one node's first-boot files into the FAT boot partition of ``image`` (in place).

    The free space is checked before anything is written; a full partition is a UserError.
    """
    unit = unit or read_unit()
    boot, root = boot_and_root(image)
    fat = FatPartition(image, boot.start)
    existing = set(fat.list())
    for required in ("cmdline.txt", "config.txt"):
        if required not in existing:
            raise UserError(f"the boot partition of {image} has no {required}: it is not a Raspberry Pi OS boot partition")
    if f"{FAT_DIR}/manifest.json" in existing:
        try:
            other = json.loads(fat.read(f"{FAT_DIR}/manifest.json")).get("node_id", "?")
        except json.JSONDecodeError:
            other = "?"
        raise UserError(f"the base image was already written by mailpulse for node {other} (and may hold its secrets): start from the stock Raspberry Pi OS image")
    rinfo = probe_root(image, root)
    kind = detect_init(fat, init, rinfo.codename)
    target = Target(pi_python or rinfo.python or PYTHON_BY_INIT[kind], pi_arch or rinfo.arch or "aarch64")
    wheels = wheels.resolve(target) if isinstance(wheels, Wheels) else list(wheels)
    check_wheels(wheels, target)
    iid = instance_id(node)
    files = render_firstboot(node, kind, unit, iid)
    cmdline = edit_cmdline(fat.read("cmdline.txt").decode(errors="replace"), kind, iid)
    files["cmdline.txt"] = cmdline.encode()
    if node.backend == "ice40":
        files["config.txt"] = enable_spi(fat.read("config.txt").decode(errors="replace")).encode()
    wheel_names = sorted(w.name for w in wheels)
    manifest = {
        "mailpulse_image": 1, "node_id": node.node_id, "site": node.site, "hostname": node.hostname,
        "backend": node.backend, "init": kind, "instance_id": iid, "admin_user": node.admin_user,
        "config_checked_by": "mailpulse.pi_firmware.config.check_config" if firmware_check_available() else "image checks only",
        "ssh_keys": len(node.ssh_keys), "secrets": sorted(node.secrets), "wifi_ssid": node.wifi.ssid if node.wifi else None,
        "wifi_country": node.wifi.country if node.wifi else None, "service_user": unit.user, "venv": unit.venv,
        "unit": unit.name, "links": list(unit.links), "target_python": target.python, "target_arch": target.arch, "wheels": wheel_names,
        "written_by": f"mailpulse {__version__}", "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
    }
    files[f"{FAT_DIR}/manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    cluster = fat.cluster_bytes()
    need = sum(-(-len(v) // cluster) * cluster for k, v in files.items() if k not in existing)
    need += sum(-(-w.stat().st_size // cluster) * cluster for w in wheels) + 4 * cluster
    free = fat.free_bytes()
    if need > free:
        raise UserError(f"the FAT boot partition of {image} is too full: the node files need {need // 1024} KiB but only {free // 1024} KiB are free")
    fat.mkdir(FAT_DIR)
    fat.mkdir(f"{FAT_DIR}/wheels")
    for w in wheels:
        fat.copy_in(w, f"{FAT_DIR}/wheels/{w.name}")
    for name, data in files.items():
        fat.write(name, data)
    return FlashResult(image, node.node_id, kind, iid, tuple(sorted([*files, *(f"{FAT_DIR}/wheels/{w.name}" for w in wheels)])), target)


def _temp_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.part-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def _atomic_build(out: Path, build: Callable[[Path], FlashResult]) -> FlashResult:
    if not out.parent.is_dir():
        raise UserError(f"the output folder {out.parent} does not exist")
    tmp = _temp_path(out)
    try:
        result = build(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dataclasses.replace(result, image=out)


@dataclasses.dataclass
class Wheels:
    """The wheels to put on the cards: given (``--wheels DIR``) and/or the project wheel built from
    source; with ``download``, the dependencies missing for a target are fetched from PyPI the first
    time that target (Python, CPU) is seen, so a batch downloads once."""

    paths: list[Path]
    download: bool = False
    workdir: tempfile.TemporaryDirectory[str] | None = None
    _fetched: dict[Target, list[Path]] = dataclasses.field(default_factory=dict)

    def resolve(self, target: Target) -> list[Path]:
        if not self.download:
            return list(self.paths)
        if target not in self._fetched:
            project = [p for p in self.paths if _norm(p.name.split("-")[0]) == "mailpulse"]
            if len(project) != 1:
                return list(self.paths)  # check_wheels names the problem
            _, needed = project_requirements(project[0])
            have = {_wheel_tags(p.name)[0] for p in self.paths if wheel_fits(p.name, target)}
            todo = [n for n in needed if n not in have]
            got: list[Path] = []
            if todo:
                assert self.workdir is not None
                dest = Path(self.workdir.name) / f"{target.cp}-{target.arch}"
                dest.mkdir(exist_ok=True)
                got = download_deps(dest, todo, target)
            self._fetched[target] = got
        return [*self.paths, *self._fetched[target]]

    def cleanup(self) -> None:
        if self.workdir is not None:
            self.workdir.cleanup()


def gather_wheels(wheels_dir: Path | None, *, download: bool = False, project_source: Path | None = None) -> Wheels:
    """The given wheels (``--wheels DIR``), plus the project wheel built from source when the
    directory has none; ``download`` fetches missing dependencies per target (see :class:`Wheels`)."""
    paths: list[Path] = []
    if wheels_dir is not None:
        if not wheels_dir.is_dir():
            raise UserError(f"the wheels folder {wheels_dir} does not exist")
        paths = sorted(wheels_dir.glob("*.whl"))
    work = tempfile.TemporaryDirectory(prefix="mailpulse-wheels-")
    try:
        if not any(_norm(p.name.split("-")[0]) == "mailpulse" for p in paths):
            paths.append(build_project_wheel(Path(work.name), project_source))
    except BaseException:
        work.cleanup()
        raise
    return Wheels(paths, download, work)


def flash_image(base: Path, out: Path, node: NodeSpec, wheels: Sequence[Path] | Wheels, *, sha256: str | None = None,
                init: str = "auto", unit: UnitInfo | None = None, pi_python: str | None = None,
                pi_arch: str | None = None) -> FlashResult:
    """Write one node's image to the file ``out`` from the base image (``.img`` or ``.img.xz``).

    Checks the base's sha256 first (when given); writes ``out`` under a temporary name and renames
    it when complete, so a failure leaves nothing behind.
    """
    unit = unit or read_unit()
    verify_checksum(base, sha256)

    def build(tmp: Path) -> FlashResult:
        materialise(base, tmp)
        return customise(tmp, node, wheels, init=init, unit=unit, pi_python=pi_python, pi_arch=pi_arch)

    return _atomic_build(out, build)


def flash_batch(base: Path, nodes: Sequence[NodeSpec], out_dir: Path, wheels: Sequence[Path] | Wheels, *,
                sha256: str | None = None, init: str = "auto", unit: UnitInfo | None = None,
                pi_python: str | None = None, pi_arch: str | None = None,
                progress: Callable[[int, int, str], None] | None = None) -> list[FlashResult]:
    """One image per node, ``<out_dir>/<node id>.img``, from one base image.

    The base is checked and unpacked once (sparse), then copied sparsely for each node.  Images
    that were completed stay; the one being written when something fails is removed.
    """
    unit = unit or read_unit()
    if not out_dir.is_dir():
        raise UserError(f"the output folder {out_dir} does not exist")
    verify_checksum(base, sha256)
    results: list[FlashResult] = []
    with tempfile.TemporaryDirectory(prefix=".mailpulse-base-", dir=out_dir) as d:
        plain = Path(d) / "base.img"
        materialise(base, plain)
        boot_and_root(plain)
        for i, node in enumerate(nodes):
            if progress:
                progress(i, len(nodes), node.node_id)

            def build(tmp: Path, node: NodeSpec = node) -> FlashResult:
                sparse_copy(plain, tmp)
                return customise(tmp, node, wheels, init=init, unit=unit, pi_python=pi_python, pi_arch=pi_arch)

            results.append(_atomic_build(out_dir / f"{node.node_id}.img", build))
        if progress:
            progress(len(nodes), len(nodes), "")
    return results


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------


def inspect_image(image: Path) -> dict[str, Any]:
    """What is on the boot partition of an image (or a card) and which node it is for."""
    if not image.exists():
        raise UserError(f"the image {image} does not exist")
    if image.suffix == ".xz":
        raise UserError(f"{image} is compressed: inspect the .img (or the card) instead")
    boot, root = boot_and_root(image)
    fat = FatPartition(image, boot.start)
    files = fat.list()
    info: dict[str, Any] = {
        "image": str(image),
        "partitions": [dataclasses.asdict(p) for p in read_partitions(image)],
        "boot_files": files,
        "boot_free_bytes": fat.free_bytes(),
        "cmdline": fat.read("cmdline.txt").decode(errors="replace").strip() if "cmdline.txt" in files else None,
        "spi_enabled": "config.txt" in files and enable_spi(t := fat.read("config.txt").decode(errors="replace")) == t,
        "init": "cloudinit" if {"user-data", "meta-data"} & set(files) else "firstrun" if "firstrun.sh" in files else None,
        "os": dataclasses.asdict(probe_root(image, root)),
    }
    manifest = None
    if f"{FAT_DIR}/manifest.json" in files:
        try:
            manifest = json.loads(fat.read(f"{FAT_DIR}/manifest.json"))
        except json.JSONDecodeError:
            manifest = None
    info["node"] = manifest
    if manifest is None:
        info["state"] = "stock image (not written by mailpulse)"
    elif f"{FAT_DIR}/INSTALLED" in files:
        info["state"] = "installed (first boot done)"
    elif f"{FAT_DIR}/FAILED.log" in files:
        info["state"] = "first boot FAILED (see mailpulse/FAILED.log)"
    else:
        info["state"] = "ready for first boot"
    info["secrets_on_fat"] = sorted(f for f in files if f in (f"{FAT_DIR}/secrets.toml", "network-config", "firstrun.sh"))
    info["config_on_fat"] = f"{FAT_DIR}/node.toml" in files
    return info


def format_inspect(info: Mapping[str, Any]) -> str:
    """``inspect_image``'s answer as text for people."""
    lines = [f"image: {info['image']}"]
    for p in info["partitions"]:
        lines.append(f"  partition {p['number']}: type {p['type']}, {p['size'] // 2**20} MiB at byte {p['start']}")
    osinfo = info["os"]
    lines.append(f"os: {osinfo['codename'] or '?'}, python {osinfo['python'] or '?'}, {osinfo['arch'] or '?'}")
    lines.append(f"first boot: {info['init'] or 'none configured'}; state: {info['state']}")
    node = info["node"]
    if node:
        lines.append(f"node: {node['node_id']} (site {node['site']}), hostname {node['hostname']}, backend {node['backend']}")
        lines.append(f"  admin {node['admin_user']} with {node['ssh_keys']} SSH key(s); Wi-Fi: {node['wifi_ssid'] or 'none'}"
                     + (f" ({node['wifi_country']})" if node["wifi_country"] else ""))
        lines.append(f"  instance {node['instance_id']}, written {node['written_at']} by {node['written_by']}")
        lines.append(f"  config checked by: {node.get('config_checked_by', '?')}; secrets: {', '.join(node.get('secrets', [])) or 'none'}")
        lines.append(f"  wheels ({node['target_python']}/{node['target_arch']}): {', '.join(node['wheels'])}")
    lines.append(f"cmdline.txt: {info['cmdline']}")
    lines.append(f"SPI: {'on' if info['spi_enabled'] else 'off'}; secrets still on FAT: {', '.join(info['secrets_on_fat']) or 'none'}")
    lines.append(f"boot partition: {len(info['boot_files'])} files, {info['boot_free_bytes'] // 1024} KiB free")
    lines += [f"  {f}" for f in info["boot_files"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """A write target: a whole block device, or a regular file standing in for one."""

    path: Path
    size: int
    is_block: bool
    devnums: frozenset[str]  # "major:minor" of the disk and its partitions
    description: str


def _sysfs_read(p: Path) -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return ""


def describe_device(dev: Path, sysfs: Path = Path("/sys")) -> DeviceInfo:
    """Size, device numbers (disk and partitions) and model of ``dev``."""
    try:
        st = dev.stat()
    except FileNotFoundError:
        raise UserError(f"the device {dev} does not exist") from None
    if stat.S_ISREG(st.st_mode):
        return DeviceInfo(dev, st.st_size, False, frozenset(), f"regular file, {st.st_size // 2**20} MiB")
    if not stat.S_ISBLK(st.st_mode):
        raise UserError(f"{dev} is neither a block device nor a regular file")
    name = Path(os.path.realpath(dev)).name
    return disk_info_from_sysfs(dev, name, sysfs)


def disk_info_from_sysfs(dev: Path, name: str, sysfs: Path = Path("/sys")) -> DeviceInfo:
    base = sysfs / "class" / "block" / name
    if (base / "partition").exists():
        raise UserError(f"{dev} is a partition: give the whole card (e.g. /dev/sdX, /dev/mmcblk0)")
    size = int(_sysfs_read(base / "size") or 0) * 512
    nums = {_sysfs_read(base / "dev")}
    for child in base.iterdir() if base.is_dir() else []:
        if child.name.startswith(name) and (child / "dev").exists():
            nums.add(_sysfs_read(child / "dev"))
    model = " ".join(filter(None, (_sysfs_read(base / "device" / "vendor"), _sysfs_read(base / "device" / "model"))))
    removable = _sysfs_read(base / "removable") == "1"
    desc = f"{model or 'unknown model'}, {size / 1e9:.1f} GB{', removable' if removable else ''}"
    return DeviceInfo(dev, size, True, frozenset(n for n in nums if n), desc)


def _parents(devnum: str, sysfs: Path, seen: set[str] | None = None) -> set[str]:
    """A device number and those of the devices below it (dm/md slaves, a partition's disk)."""
    seen = seen if seen is not None else set()
    if devnum in seen:
        return seen
    seen.add(devnum)
    node = sysfs / "dev" / "block" / devnum
    try:
        real = node.resolve(strict=True)
    except OSError:
        return seen
    if (real / "partition").exists() and (real.parent / "dev").exists():
        _parents(_sysfs_read(real.parent / "dev"), sysfs, seen)
    for slave in (real / "slaves").iterdir() if (real / "slaves").is_dir() else []:
        _parents(_sysfs_read(slave / "dev"), sysfs, seen)
    return seen


def check_device(dev: Path, *, force: bool = False, max_bytes: int = MAX_SD_BYTES, sysfs: Path = Path("/sys"),
                 mountinfo: Path = Path("/proc/self/mountinfo"), swaps: Path = Path("/proc/swaps")) -> DeviceInfo:
    """Refuse to write a device that is mounted or in use as swap, holds the running system, or is
    bigger than an SD card (``max_bytes``; only this one is overridden by ``force``).

    A regular file standing in for a device is refused when a loop device uses it.
    """
    return assess_device(describe_device(dev, sysfs), force=force, max_bytes=max_bytes, sysfs=sysfs,
                         mountinfo=mountinfo, swaps=swaps)


def assess_device(info: DeviceInfo, *, force: bool = False, max_bytes: int = MAX_SD_BYTES, sysfs: Path = Path("/sys"),
                  mountinfo: Path = Path("/proc/self/mountinfo"), swaps: Path = Path("/proc/swaps")) -> DeviceInfo:
    """The checks of :func:`check_device` on a described device (sysfs and /proc paths injectable)."""
    dev = info.path
    mounts = _sysfs_read(mountinfo).splitlines()
    mounted: dict[str, list[str]] = {}
    for line in mounts:
        f = line.split()
        if len(f) > 4:
            mounted.setdefault(f[2], []).append(f[4].replace("\\040", " "))
    if info.is_block:
        system: set[str] = set()
        for num, points in mounted.items():
            if any(p in ("/", "/boot", "/boot/firmware", "/usr", "/var", "/home") for p in points):
                system |= _parents(num, sysfs)
        if info.devnums & system:
            raise UserError(f"{dev} holds the running system (it is mounted at /): refusing to overwrite it")
        busy = sorted({p for n in info.devnums & set(mounted) for p in mounted[n]})
        if busy:
            raise UserError(f"{dev} is mounted at {', '.join(busy)}: unmount it first")
        for line in _sysfs_read(swaps).splitlines()[1:]:
            name = line.split()[0] if line.split() else ""
            try:
                st = os.stat(name)
            except OSError:
                continue
            if f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" in info.devnums:
                raise UserError(f"{dev} is in use as swap ({name}): swapoff it first")
    else:
        real = os.path.realpath(dev)
        for bf in (sysfs / "block").glob("loop*/loop/backing_file"):
            if os.path.realpath(_sysfs_read(bf)) == real:
                raise UserError(f"{dev} is attached to {bf.parent.parent.name}: detach it (losetup -d) first")
    if info.size > max_bytes and not force:
        raise UserError(f"{dev} has {info.size / 1e9:.0f} GB, more than an SD card ({max_bytes / 1e9:.0f} GB): "
                        "check the device name, and pass --force if it really is the card")
    return info


def write_to_device(image: Path, dev: Path, *, yes: bool = False, force: bool = False,
                    confirm: Callable[[str], bool] | None = None, use_bmaptool: bool | None = None,
                    **checks: Any) -> str:
    """Write a finished image to a card (or a file standing in for one): bmaptool when available
    (only the mapped blocks), else a sparse-aware copy; asks ``confirm`` unless ``yes``.

    Returns the writer used (``"bmaptool"`` or ``"python"``).
    """
    info = check_device(dev, force=force, **checks)
    if info.size and info.is_block and info.size < image.stat().st_size:
        raise UserError(f"{dev} ({info.size // 2**20} MiB) is smaller than the image ({image.stat().st_size // 2**20} MiB)")
    if not yes:
        question = f"Overwrite everything on {dev} ({info.description})? Type 'yes' to continue: "
        if confirm is None or not confirm(question):
            raise UserError(f"not writing {dev}: not confirmed (pass --yes to skip the question)")
    bmap = shutil.which("bmaptool") is not None if use_bmaptool is None else use_bmaptool
    if bmap:
        with tempfile.TemporaryDirectory(prefix="mailpulse-bmap-") as d:
            bm = Path(d) / "image.bmap"
            _run(["bmaptool", "create", "-o", str(bm), str(image)], f"map the blocks of {image}")
            _run(["bmaptool", "copy", "--bmap", str(bm), str(image), str(dev)], f"write {dev}")
        return "bmaptool"
    size = image.stat().st_size
    with image.open("rb") as fi, dev.open("r+b") as fo:
        for start, end in _data_extents(fi, size):
            pos = start
            while pos < end:
                fi.seek(pos)
                chunk = fi.read(min(4 << 20, end - pos))
                fo.seek(pos)
                fo.write(chunk)
                pos += len(chunk)
        if not info.is_block:
            fo.truncate(size)
        fo.flush()
        os.fsync(fo.fileno())
    return "python"
