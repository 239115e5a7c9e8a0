"""What the node's first boot needs: the firmware's systemd unit, what the root file system says
about the OS, the first-boot mechanism (cloud-init or ``firstrun.sh``) and the files it reads."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from mailpulse.errors import UserError

from .fat import FAT_DIR, FatPartition, Partition
from .nodes import NodeSpec, read_text, wpa_psk
from .wheels import NODE_EXTRA

__all__ = ["DEFAULT_SERVICE_USER", "DEFAULT_UNIT", "DEFAULT_VENV", "FIRSTBOOT_DIR", "FIRSTRUN_ARGS", "INIT_CHOICES",
           "InitKind", "RootInfo", "UnitInfo", "detect_init", "edit_cmdline", "enable_spi", "instance_id", "probe_root",
           "read_unit", "render_firstboot"]

InitKind = Literal["cloudinit", "firstrun"]
INIT_CHOICES = ("auto", "cloudinit", "firstrun")
FIRSTBOOT_DIR = Path(__file__).resolve().parents[1] / "firstboot"
DEFAULT_UNIT = Path(__file__).resolve().parents[1] / "mailpulse-node.service"
DEFAULT_SERVICE_USER = "mailpulse"
DEFAULT_VENV = "/opt/mailpulse/venv"
#: the kernel arguments of the Bookworm first-boot mechanism (as the Raspberry Pi Imager writes them)
FIRSTRUN_ARGS = ("systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
                 "systemd.unit=kernel-command-line.target")


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
        raise UserError(f"{path}: {venv!r} is not a place for the node's virtual environment (give a folder like "
                        f"{DEFAULT_VENV})")
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
        "ETC_FILES": q(" ".join(sorted(node.files))),
    }).encode()
    files[f"{FAT_DIR}/node.toml"] = node.config_text.encode()
    for name, data in node.files.items():
        files[f"{FAT_DIR}/{name}"] = data
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
