"""``mailpulse image flash`` / ``inspect`` on synthetic Raspberry Pi OS images, without hardware,
root or mounting.

The images are shaped like the real ones: an MBR made by sfdisk, a FAT32 ``bootfs`` made with
``mkfs.fat --offset`` holding ``cmdline.txt``/``config.txt`` (and a NoCloud seed for the Trixie
shape), an ext4 root made with ``mke2fs -d`` whose ``/etc/os-release`` and ``/usr/lib`` say which
Debian, Python and CPU it is.  Everything written is read back with mtools and checked with the
tools that will consume it: fsck.fat, e2fsck, cloud-init's schema check, netplan, systemd-analyze.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from mailpulse.collector.provision import init_deployment
from mailpulse.pi_firmware import image as img
from packaging.utils import parse_wheel_filename

from mailpulse.cli import main as mailpulse_main
from mailpulse.errors import UserError

# No xdist group: the tests share nothing but the base images and the project wheel, which the
# first worker builds under a lock (see _shared); they can run on both workers.

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BOOT_START = 8192  # sectors, as Raspberry Pi OS
TOOLS = ("sfdisk", "mkfs.fat", "fsck.fat", "mke2fs", "e2fsck", "debugfs", "mcopy", "mdir", "minfo", "mmd", "mtype")
_missing = [t for t in TOOLS if shutil.which(t) is None]
if _missing:
    pytest.skip(f"image tests need {', '.join(_missing)} (Debian: mtools dosfstools fdisk e2fsprogs)",
                allow_module_level=True)

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0c2VzdGtleWZvcm1haWxwdWxzZWltYWdldGVzdHM admin@laptop"
CONFIG = """\
# node config template (comments survive when nothing overrides)
[node]
id = "relay-a"
site = "lon1"

[mqtt]
host = "broker.example.net"
port = 8883
username = "node"
tls = true

[scorer]
backend = "ice40"
model = "/var/lib/mailpulse/model.json"

[[probe.routes]]
name = "via-relay1"
smtp_host = "relay1.example.net"
smtp_port = 25
mail_from = "probe@lon1.example.net"
rcpt_to = "probe-sink@example.net"
imap_host = "imap.example.net"
imap_port = 993
imap_username = "probe-sink"
imap_security = "tls"
"""
SECRETS = {"mqtt_password": "s3cr3t-broker-pass", "probe.via-relay1.imap_password": "imap-pass"}
CONFIG_TXT = """\
# For more options and information see
# http://rptl.io/configtxt
# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on
auto_initramfs=1
dtoverlay=vc4-kms-v3d
arm_64bit=1

[cm4]
otg_mode=1

[all]
"""
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=3bd5e7cb-02 rootfstype=ext4 fsck.repair=yes "
           "rootwait quiet splash\n")
STOCK_USER_DATA = "#cloud-config\n# stock seed: Raspberry Pi OS Trixie\nmanage_resolv_conf: false\n"
STOCK_META_DATA = "instance-id: rpios-image\n"


# ---------------------------------------------------------------------------------------------
# building synthetic images
# ---------------------------------------------------------------------------------------------


def _run(*cmd: str | Path, input: str | None = None,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=input, env=env)
    assert p.returncode == 0, f"{cmd}: {p.stderr}{p.stdout}"
    return p


def build_pi_image(path: Path, release: str, *, boot_mib: int = 64, root_mib: int = 16, boot_filler: int = 0) -> Path:
    """A sparse image shaped like Raspberry Pi OS ``release`` (bookworm: firstrun, trixie: cloud-init)."""
    work = path.parent / f"{path.name}.d"
    work.mkdir()
    boot_sectors = boot_mib * MIB // 512
    root_start = BOOT_START + boot_sectors
    root_sectors = root_mib * MIB // 512
    with path.open("wb") as f:
        f.truncate((root_start + root_sectors) * 512)
    _run("sfdisk", "-q", path, input=f"label: dos\nstart={BOOT_START}, size={boot_sectors}, type=c\n"
                                     f"start={root_start}, size={root_sectors}, type=83\n")
    _run("mkfs.fat", "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START), path, str(boot_sectors // 2))
    boot = work / "boot"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "config.txt").write_text(CONFIG_TXT)
    (boot / "kernel8.img").write_bytes(os.urandom(300_000))
    (boot / "bcm2712-rpi-5-b.dtb").write_bytes(os.urandom(70_000))
    if release == "trixie":
        (boot / "user-data").write_text(STOCK_USER_DATA)
        (boot / "meta-data").write_text(STOCK_META_DATA)
    if boot_filler:
        (boot / "filler.bin").write_bytes(b"\x5a" * boot_filler)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
    for item in sorted(boot.iterdir()):
        _run("mcopy", "-i", f"{path}@@{BOOT_START * 512}", item, f"::{item.name}", env=env)
    root = work / "root"
    python = {"bookworm": "3.11", "trixie": "3.13"}[release]
    for d in ("etc", f"usr/lib/python{python}", "usr/lib/aarch64-linux-gnu", "usr/bin", "boot/firmware", "home"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text(
        f'PRETTY_NAME="Debian GNU/Linux ({release})"\nID=debian\nVERSION_CODENAME={release}\n')
    (root / "etc/hostname").write_text("raspberrypi\n")
    _run("mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", root, "-E", f"offset={root_start * 512}",
         path, f"{root_sectors // 2}k")
    shutil.rmtree(work)
    return path


def fake_wheel(folder: Path, filename: str) -> Path:
    """A valid, installable (tiny) wheel with the given file name."""
    name, version = filename.split("-")[:2]
    p = folder / filename
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: mailpulse-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(f"{k},,\n" for k in files) + f"{name}-{version}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(p, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return p


def dep_wheels(folder: Path, cp: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        fake_wheel(folder, f"numpy-2.1.3-{cp}-{cp}-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"),
        fake_wheel(folder, f"pillow-11.0.0-{cp}-{cp}-manylinux_2_28_aarch64.whl"),
        fake_wheel(folder, "paho_mqtt-2.1.0-py3-none-any.whl"),
        fake_wheel(folder, "pydantic-2.11.0-py3-none-any.whl"),
    ]


class Fat:
    """Read-back helper: mtools at the boot partition's offset (independent of the library)."""

    def __init__(self, image: Path) -> None:
        table = json.loads(_run("sfdisk", "--json", image).stdout)["partitiontable"]
        self.image = image
        self.offset = table["partitions"][0]["start"] * 512
        self.size = table["partitions"][0]["size"] * 512
        self.root_offset = table["partitions"][1]["start"] * 512
        self.env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}

    def read(self, name: str) -> bytes:
        return subprocess.run(["mtype", "-i", f"{self.image}@@{self.offset}", f"::{name}"], capture_output=True,
                              env=self.env, check=True).stdout

    def text(self, name: str) -> str:
        return self.read(name).decode()

    def names(self) -> set[str]:
        out = _run("mdir", "-b", "-/", "-a", "-i", f"{self.image}@@{self.offset}", "::", env=self.env).stdout
        return {ln.strip()[3:] for ln in out.splitlines()
                if ln.strip().startswith("::/") and not ln.strip().endswith("/")}

    def extract(self, dst: Path) -> Path:
        with self.image.open("rb") as fi, dst.open("wb") as fo:
            fi.seek(self.offset)
            fo.write(fi.read(self.size))
        return dst


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder shared by the xdist workers of one run, built by the first one (under a lock):
    yields (folder, ready)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / f"image-{name}"
    with (base / f"image-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = (folder / ".done").exists()
        folder.mkdir(exist_ok=True)
        yield folder, ready
        (folder / ".done").touch()


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real project wheel, built once per run from a copy of the source tree (no build/ in the tree)."""
    with _shared(tmp_path_factory, "wheel") as (out, ready):
        if not ready:
            src = out / "src"
            src.mkdir()
            for name in ("pyproject.toml", "README.md"):
                if (ROOT / name).exists():
                    shutil.copy2(ROOT / name, src / name)
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "sim_build", "*.egg-info")
            for pkg in ("mailpulse", "hdl", "sim", "pynq_overlays", "host_bridge", "pi_firmware", "collector"):
                if (ROOT / pkg).is_dir():
                    shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
            (out / "dist").mkdir()
            img.build_project_wheel(out / "dist", src)
            shutil.rmtree(src)
        return next((out / "dist").glob("mailpulse-*.whl"))


@pytest.fixture(scope="session")
def unit_file() -> Path:
    """The node firmware's unit, as the package ships it."""
    return img.DEFAULT_UNIT


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with _shared(tmp_path_factory, "bases") as (d, ready):
        return {r: d / f"{r}.img" if ready else build_pi_image(d / f"{r}.img", r) for r in ("bookworm", "trixie")}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(CONFIG)
    return p


def wheels_for(tmp: Path, project: Path, cp: str) -> list[Path]:
    return [project, *dep_wheels(tmp / f"deps-{cp}", cp)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# checks shared by both first-boot formats
# ---------------------------------------------------------------------------------------------


def _table(image: Path) -> list[tuple[int, int, str]]:
    parts = json.loads(_run("sfdisk", "--json", image).stdout)["partitiontable"]["partitions"]
    return [(p["start"], p["size"], p["type"]) for p in parts]


def check_common(out: Path, base: Path, result: img.FlashResult, wheels: list[Path], node: img.NodeSpec, unit: Path,
                 tmp: Path) -> Fat:
    fat = Fat(out)
    # the partition table and the root file system are untouched, the copy stays sparse
    assert _table(out) == _table(base)
    assert out.stat().st_size == base.stat().st_size
    assert img.allocated_bytes(out) < out.stat().st_size // 4, "the image copy is not sparse"
    with base.open("rb") as a, out.open("rb") as b:
        a.seek(fat.root_offset)
        b.seek(fat.root_offset)
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), "the root partition changed"
    # every written file reads back as written: the manifest lists their sha256
    manifest = json.loads(fat.read("mailpulse/manifest.json"))
    assert manifest["node_id"] == node.node_id and manifest["hostname"] == node.hostname
    assert manifest["config_checked_by"] == "mailpulse.config.node.NodeConfig"
    assert set(result.files) <= fat.names()
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256(fat.read(name)).hexdigest() == digest, name
    for w in wheels:
        assert fat.read(f"mailpulse/wheels/{w.name}") == w.read_bytes()
    assert tomllib.loads(fat.text("mailpulse/node.toml")) == tomllib.loads(node.config_text)
    assert fat.read(f"mailpulse/{unit.name}") == unit.read_bytes()
    # the stock files are still there
    assert fat.read("kernel8.img") == Fat(base).read("kernel8.img")
    # the file systems are consistent
    part = fat.extract(tmp / f"{out.stem}-boot.fat")
    p = subprocess.run(["fsck.fat", "-n", str(part)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run(["e2fsck", "-fn", f"{out}?offset={fat.root_offset}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # the installer is valid shell and installs what the unit runs
    setup = fat.text("mailpulse/setup.sh")
    _run("sh", "-n", "-c", setup)
    assert "--no-index --find-links" in setup and "'mailpulse[node]'" in setup
    info = img.read_unit(unit)
    assert f"SERVICE_USER={info.user}" in setup and f"VENV={info.venv}" in setup
    # SPI: the config asks for the iCE40 backend
    assert re.search(r"^dtparam=spi=on$", fat.text("config.txt"), re.M)
    return fat


def systemd_verify(unit_bytes: bytes, name: str, tmp: Path) -> None:
    """``systemd-analyze verify`` in a scratch root holding the system units and the venv's entry point."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp / "sysroot"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / name).write_bytes(unit_bytes)
    exes = re.findall(r"^Exec\w+=[-@:+!]*(/\S+)", unit_bytes.decode(), re.M)
    assert exes
    for exe in exes:
        target = root / exe.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    p = subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{name}"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


# ---------------------------------------------------------------------------------------------
# the two first-boot formats
# ---------------------------------------------------------------------------------------------


def test_flash_bookworm_firstrun(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                                 tmp_path: Path) -> None:
    wheels = wheels_for(tmp_path, project_wheel, "cp311")
    node = img.make_node(config_file.read_text(), str(config_file), secrets=SECRETS, ssh_keys=[SSH_KEY],
                         wifi_ssid="Pi Lab 'A'", wifi_psk="pa$$ word `x`", wifi_country="gb")
    out = tmp_path / "node.img"
    r = img.flash_image(bases["bookworm"], out, node, wheels, unit=img.read_unit(unit_file))
    assert r.init == "firstrun" and r.target == img.Target("3.11", "aarch64")
    assert leftovers(tmp_path) == []
    fat = check_common(out, bases["bookworm"], r, wheels, node, unit_file, tmp_path)
    names = fat.names()
    assert "user-data" not in names and "meta-data" not in names and "network-config" not in names
    cmdline = fat.text("cmdline.txt")
    assert cmdline.count("\n") == 1 and cmdline.startswith(CMDLINE.strip() + " ")
    assert cmdline.strip().endswith(img.FIRSTRUN_ARGS)
    script = fat.text("firstrun.sh")
    _run("bash", "-n", "-c", script)
    # the values survive shell quoting exactly: evaluate the assignments in bash
    assigns = "\n".join(ln for ln in script.splitlines()
                        if re.match(r"^(NEW_HOSTNAME|ADMIN_USER|SSH_KEYS|WIFI_\w+)=", ln))
    got = _run("bash", "-c", assigns + '\nprintf "%s\\0" "$NEW_HOSTNAME" "$ADMIN_USER" "$SSH_KEYS" '
                                       '"$WIFI_SSID" "$WIFI_PSK" "$WIFI_COUNTRY"').stdout
    psk = hashlib.pbkdf2_hmac("sha1", b"pa$$ word `x`", b"Pi Lab 'A'", 4096, 32).hex()
    assert got.split("\0")[:6] == ["mailpulse-relay-a", "pi", SSH_KEY, "Pi Lab 'A'", psk, "GB"]
    assert "pa$$" not in script, "the Wi-Fi passphrase itself is on the card"
    assert 'sed -i \'s| systemd.run.*||g\' "$BOOT/cmdline.txt"' in script and 'rm -f "$BOOT/firstrun.sh"' in script
    assert "s3cr3t" not in fat.text("mailpulse/manifest.json") and "s3cr3t" not in fat.text("mailpulse/node.toml")
    assert tomllib.loads(fat.text("mailpulse/node.toml"))["node"]["secrets_file"] == "/etc/mailpulse/secrets.toml"
    secrets = tomllib.loads(fat.text("mailpulse/secrets.toml"))
    assert secrets["mqtt_password"] == "s3cr3t-broker-pass"
    assert secrets["probe"]["via-relay1"]["imap_password"] == "imap-pass"
    systemd_verify(fat.read(f"mailpulse/{unit_file.name}"), unit_file.name, tmp_path)

    info = img.inspect_image(out)
    assert info["node"]["node_id"] == "relay-a" and info["init"] == "firstrun"
    assert info["state"] == "ready for first boot"
    assert info["os"] == {"codename": "bookworm", "python": "3.11", "arch": "aarch64"}
    assert info["spi_enabled"] and info["config_on_fat"]
    assert info["secrets_on_fat"] == ["firstrun.sh", "mailpulse/secrets.toml"]
    text = img.format_inspect(info)
    assert "node: relay-a (site lon1)" in text and "pa$$" not in text


SHIMS = {
    # the system tools the installer calls, recording their arguments; `install` drops -o/-g
    # (no root here) after recording them, `python3 -m venv` links pip instead of running ensurepip
    "useradd": 'echo "useradd $*" >>"$SHIM_LOG"; touch "$SHIM_STATE/user"\n',
    "usermod": 'echo "usermod $*" >>"$SHIM_LOG"\n',
    "id": '[ -e "$SHIM_STATE/user" ]\n',
    "getent": "exit 2\n",
    "systemctl": 'echo "systemctl $*" >>"$SHIM_LOG"\n',
    "install": 'echo "install $*" >>"$SHIM_LOG"\nargs=""\n'
               'while [ $# -gt 0 ]; do case "$1" in -o|-g) shift 2;; *) args="$args|$1"; shift;; esac; done\n'
               'IFS="|"; set -- ${args#|}; exec /usr/bin/install "$@"\n',
    "python3": 'if [ "$1 $2" = "-m venv" ]; then "$REAL_PYTHON" -m venv --without-pip "$3" || exit 1\n'
               '  site=$("$3/bin/python" -c "import sysconfig; print(sysconfig.get_paths()[\'purelib\'])")\n'
               '  ln -s "$PIP_DIR" "$site/pip"; exit 0; fi\nexec "$REAL_PYTHON" "$@"\n',
}


def test_first_boot_installer_runs(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                                   tmp_path: Path) -> None:
    """Run the flashed ``mailpulse/setup.sh`` for real in a scratch root: config and secrets land
    0600 for the service user and leave the FAT first, pip installs the wheels offline into the
    venv, the unit is installed and enabled; a failed install leaves FAILED.log and no secrets."""
    import pip

    wheels = [project_wheel, *(fake_wheel(tmp_path, n) for n in ("numpy-2.1.3-py3-none-any.whl",
                                                                  "pillow-11.0.0-py3-none-any.whl",
                                                                  "paho_mqtt-2.1.0-py3-none-any.whl",
                                                                  "pydantic-2.11.0-py3-none-any.whl"))]
    node = img.make_node(config_file.read_text(), "node.toml", secrets=SECRETS)
    out = tmp_path / "n.img"
    img.flash_image(bases["bookworm"], out, node, wheels, unit=img.read_unit(unit_file))
    fat = Fat(out)
    boot = tmp_path / "boot"
    boot.mkdir()
    _run("mcopy", "-s", "-n", "-i", f"{out}@@{fat.offset}", "::mailpulse", boot, env=fat.env)
    shims, state, root = tmp_path / "shims", tmp_path / "state", tmp_path / "root"
    for d in (shims, state, root / "var/log"):
        d.mkdir(parents=True)
    for name, body in SHIMS.items():
        (shims / name).write_text("#!/bin/sh\n" + body)
        (shims / name).chmod(0o755)
    log = tmp_path / "shim.log"
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "MAILPULSE_FIRSTBOOT_ROOT": str(root),
           "SHIM_LOG": str(log), "SHIM_STATE": str(state), "REAL_PYTHON": sys.executable,
           "PIP_DIR": str(Path(pip.__file__).parent)}
    unit = img.read_unit(unit_file)
    # 1. a wheel is missing: the install fails, but the secrets are already off the FAT
    paho = boot / "mailpulse/wheels/paho_mqtt-2.1.0-py3-none-any.whl"
    paho.rename(tmp_path / paho.name)
    p = subprocess.run(["sh", str(boot / "mailpulse/setup.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "pip could not install" in (boot / "mailpulse/FAILED.log").read_text()
    assert not (boot / "mailpulse/node.toml").exists() and not (boot / "mailpulse/secrets.toml").exists()
    for f in ("node.toml", "secrets.toml"):
        st = (root / "etc/mailpulse" / f).stat()
        assert st.st_mode & 0o777 == 0o600
        assert (f"install -m 0600 -o {unit.user} -g {unit.user} {boot}/mailpulse/{f} {root}/etc/mailpulse/{f}"
                in log.read_text())
    assert (root / "etc/mailpulse/node.toml").read_text() == node.config_text
    assert tomllib.loads((root / "etc/mailpulse/secrets.toml").read_text())["mqtt_password"] == "s3cr3t-broker-pass"
    assert (f"useradd --system --home-dir {root}/var/lib/{unit.user} --create-home --shell /usr/sbin/nologin "
            f"{unit.user}") in log.read_text()
    assert "systemctl enable" not in log.read_text() and "systemctl start" not in log.read_text()
    # 2. with the wheel back, the same script finishes (it is idempotent)
    (tmp_path / paho.name).rename(paho)
    p = subprocess.run(["sh", str(boot / "mailpulse/setup.sh"), "--start"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, (root / "var/log/mailpulse-firstboot.log").read_text()
    assert f"systemctl start --no-block {unit.name}" in log.read_text()
    venv_py = root / unit.venv.lstrip("/") / "bin/python"
    listed = _run(venv_py, "-c", "import importlib.metadata as m; "
                                 "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))").stdout
    assert all(n in listed for n in ("'mailpulse'", "'numpy'", "'pillow'", "'paho_mqtt'")), listed
    assert (root / "etc/systemd/system" / unit.name).read_bytes() == unit_file.read_bytes()
    for link in unit.links:  # the unit's own path to the executable leads into the venv
        assert os.readlink(root / link.lstrip("/")) == f"{unit.venv}/bin/mailpulse"
    assert f"systemctl enable {unit.name}" in log.read_text()
    assert sorted(p.name for p in (boot / "mailpulse").iterdir()) == ["INSTALLED", "manifest.json", "setup.sh"]
    assert log.read_text().count("useradd") == 1


def cloud_init_cmd() -> list[str] | None:
    """cloud-init: installed, or Debian's package extracted next to the tests (``dpkg -x``)."""
    if shutil.which("cloud-init"):
        return ["cloud-init"]
    extracted = Path(os.environ.get("MAILPULSE_CLOUD_INIT_ROOT", ROOT / "build" / "cloud-init"))
    if not (extracted / "usr/bin/cloud-init").exists() and shutil.which("apt-get") and shutil.which("dpkg"):
        dl = extracted.parent / "cloud-init-deb"
        dl.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["apt-get", "download", "cloud-init"], cwd=dl, capture_output=True, text=True, timeout=120)
        debs = sorted(dl.glob("cloud-init_*.deb"))
        if p.returncode != 0 or not debs:
            return None
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(extracted)], check=True)
    if not (extracted / "usr/bin/cloud-init").exists():
        return None
    return ["env", f"PYTHONPATH={extracted}/usr/lib/python3/dist-packages", "/usr/bin/python3",
            str(extracted / "usr/bin/cloud-init")]


def test_flash_trixie_cloudinit_from_xz(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                                        tmp_path: Path) -> None:
    xz = tmp_path / "trixie.img.xz"
    with bases["trixie"].open("rb") as fi, lzma.open(xz, "wb", preset=0) as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
    sha = hashlib.sha256(xz.read_bytes()).hexdigest()
    (tmp_path / "trixie.img.xz.sha256").write_text(f"{sha}  trixie.img.xz\n")
    wheels = wheels_for(tmp_path, project_wheel, "cp313")
    node = img.make_node(config_file.read_text(), "node.toml", overrides={"node_id": "edge-7", "backend": "model"},
                         secrets=SECRETS, ssh_keys=[SSH_KEY], wifi_ssid="lab: net #2", wifi_psk="correct horse battery",
                         wifi_country="DE")
    out = tmp_path / "edge-7.img"
    r = img.flash_image(xz, out, node, wheels, sha256=img.expected_sha256(str(tmp_path / "trixie.img.xz.sha256")),
                        unit=img.read_unit(unit_file))
    assert r.init == "cloudinit" and r.target == img.Target("3.13", "aarch64")
    with pytest.raises(AssertionError):  # backend model: no SPI, so check_common's SPI check must fail
        check_common(out, bases["trixie"], r, wheels, node, unit_file, tmp_path)
    fat = Fat(out)
    assert not re.search(r"^dtparam=spi=on$", fat.text("config.txt"), re.M)
    assert fat.text("config.txt") == CONFIG_TXT
    cmdline = fat.text("cmdline.txt")
    assert cmdline.split().count(f"ds=nocloud;i={r.instance_id}") == 1 and "systemd.run" not in cmdline
    meta = fat.text("meta-data")
    assert f"instance-id: {r.instance_id}\n" in meta and "local-hostname: mailpulse-edge-7" in meta
    assert r.instance_id.startswith("mailpulse-edge-7-")
    user_data = fat.text("user-data")
    assert "mailpulse/setup.sh --start" in user_data
    assert user_data.startswith("#cloud-config\n") and SSH_KEY in user_data
    assert "hostname: \"mailpulse-edge-7\"" in user_data
    assert tomllib.loads(fat.text("mailpulse/node.toml"))["node"]["id"] == "edge-7"
    # cloud-init's own schema check
    ci = cloud_init_cmd()
    if ci is None:
        pytest.skip("cloud-init is neither installed nor extractable with apt-get download (Debian package cloud-init)")
    (tmp_path / "user-data").write_bytes(fat.read("user-data"))
    p = subprocess.run([*ci, "schema", "--config-file", str(tmp_path / "user-data")], capture_output=True, text=True)
    if "ModuleNotFoundError" in p.stderr:
        pytest.fail("the unpacked cloud-init needs the Debian packages python3-yaml python3-jsonschema python3-jinja2 "
                    "python3-configobj python3-jsonpatch python3-netifaces python3-oauthlib python3-requests: "
                    f"{p.stderr.splitlines()[-1]}")
    assert p.returncode == 0, p.stdout + p.stderr
    (tmp_path / "broken").write_text(user_data.replace("ssh_pwauth: false", "ssh_pwauth: [1]"))
    p = subprocess.run([*ci, "schema", "--config-file", str(tmp_path / "broken")], capture_output=True, text=True)
    assert p.returncode != 0, "the schema check does not catch errors"
    # netplan accepts the Wi-Fi config
    if shutil.which("netplan") is None:
        pytest.skip("netplan is not installed (Debian package netplan.io)")
    nroot = tmp_path / "netroot"
    (nroot / "etc/netplan").mkdir(parents=True)
    cfg = nroot / "etc/netplan/50-cloud-init.yaml"
    cfg.write_bytes(fat.read("network-config"))
    cfg.chmod(0o600)
    p = subprocess.run(["netplan", "generate", "--root-dir", str(nroot)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    generated = "".join(f.read_text() for f in (nroot / "run").rglob("*") if f.is_file())
    assert "lab: net #2" in generated and "correct horse battery" in generated


def test_project_wheel_ships_the_templates(project_wheel: Path) -> None:
    with zipfile.ZipFile(project_wheel) as z:
        names = set(z.namelist())
    for t in ("setup.sh", "firstrun.sh", "user-data", "network-config"):
        assert f"mailpulse/pi_firmware/firstboot/{t}" in names, (
            f"{t} is not in the wheel: `mailpulse image` would fail when installed")


def test_init_detection_and_override(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                                     tmp_path: Path) -> None:
    bookworm = img.FatPartition(bases["bookworm"], BOOT_START * 512)
    trixie = img.FatPartition(bases["trixie"], BOOT_START * 512)
    assert img.detect_init(trixie) == "cloudinit" and img.detect_init(bookworm) == "firstrun"
    assert img.detect_init(bookworm, "auto", "trixie") == "cloudinit"  # no seed on the FAT, but a newer release
    assert img.detect_init(bookworm, "auto", "bookworm") == "firstrun"
    with pytest.raises(UserError, match="--init must be one of"):
        img.detect_init(bookworm, "systemd")
    # forcing cloud-init on the Bookworm image: a seed appears, no firstrun.sh, Python still read from the root
    node = img.make_node(config_file.read_text(), "node.toml", secrets=SECRETS)
    r = img.flash_image(bases["bookworm"], tmp_path / "ci.img", node, wheels_for(tmp_path, project_wheel, "cp311"),
                        init="cloudinit", unit=img.read_unit(unit_file))
    names = Fat(r.image).names()
    assert r.init == "cloudinit" and r.target.python == "3.11"
    assert {"user-data", "meta-data"} <= names and "firstrun.sh" not in names and "network-config" not in names
    # an image mailpulse already wrote is not a base: it may hold another node's secrets
    _fails(tmp_path, r.image, node, wheels_for(tmp_path, project_wheel, "cp311"), unit_file,
           "already written by mailpulse for node relay-a")


def test_batch_from_csv(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                        tmp_path: Path) -> None:
    rows = [
        {"node_id": "n1", "site": "lon1", "hostname": "", "broker_url": "mqtts://n1:pw1@mq.example.net:8884",
         "broker_password": "", "wifi_ssid": "", "wifi_psk": "", "wifi_country": "", "mqtt.client_id": "c1"},
        {"node_id": "n2", "site": "par2", "hostname": "pi-paris", "broker_url": "", "broker_password": "",
         "wifi_ssid": "Lab", "wifi_psk": "12345678", "wifi_country": "FR", "mqtt.client_id": "c2"},
        {"node_id": "n3", "site": "lon1", "hostname": "", "broker_url": "mqtt://10.0.0.5",
         "broker_password": "pw3", "wifi_ssid": "", "wifi_psk": "", "wifi_country": "", "mqtt.client_id": "c3"},
    ]
    nodes_csv = tmp_path / "nodes.csv"
    with nodes_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    nodes = img.read_nodes_csv(nodes_csv, config_file, secrets=SECRETS, ssh_keys=[SSH_KEY])
    cfg = [tomllib.loads(n.config_text) for n in nodes]
    assert [c["mqtt"]["host"] for c in cfg] == ["mq.example.net", "broker.example.net", "10.0.0.5"]
    assert [c["mqtt"]["port"] for c in cfg] == [8884, 8883, 1883]
    assert [n.secrets["mqtt_password"] for n in nodes] == ["pw1", "s3cr3t-broker-pass", "pw3"]
    assert all(n.secrets["probe.via-relay1.imap_password"] == "imap-pass" for n in nodes)
    assert cfg[0]["mqtt"]["tls"] is True and cfg[0]["mqtt"]["username"] == "n1" and "password" not in cfg[0]["mqtt"]
    assert cfg[1]["probe"]["routes"][0]["smtp_host"] == "relay1.example.net" and cfg[2]["mqtt"]["client_id"] == "c3"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen: list[tuple[int, int, str]] = []
    results = img.flash_batch(bases["bookworm"], nodes, out_dir, wheels_for(tmp_path, project_wheel, "cp311"),
                              unit=img.read_unit(unit_file), progress=lambda i, n, name: seen.append((i, n, name)))
    assert seen == [(0, 3, "n1"), (1, 3, "n2"), (2, 3, "n3"), (3, 3, "")]
    assert sorted(p.name for p in out_dir.iterdir()) == ["n1.img", "n2.img", "n3.img"]
    size = bases["bookworm"].stat().st_size
    for r, n in zip(results, nodes, strict=True):
        assert r.image == out_dir / f"{n.node_id}.img" and r.image.stat().st_size == size
        assert img.allocated_bytes(r.image) < size // 4
        fat = Fat(r.image)
        assert tomllib.loads(fat.text("mailpulse/node.toml")) == tomllib.loads(n.config_text)
        assert tomllib.loads(fat.text("mailpulse/secrets.toml"))["mqtt_password"] == n.secrets["mqtt_password"]
        assert f"NEW_HOSTNAME={n.hostname}" in fat.text("firstrun.sh")
    assert [r.node_id for r in results] == ["n1", "n2", "n3"] and nodes[1].hostname == "pi-paris"
    assert len({r.instance_id for r in results}) == 3


def test_cli_flash_and_inspect(bases: dict[str, Path], project_wheel: Path, unit_file: Path, config_file: Path,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheels = tmp_path / "wheels"
    dep_wheels(wheels, "cp313")
    shutil.copy2(project_wheel, wheels)
    out = tmp_path / "cli.img"
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('mqtt_password = "s3cr3t-broker-pass"\n[probe.via-relay1]\nimap_password = "imap-pass"\n')
    argv = ["image", "flash", str(bases["trixie"]), "--config", str(config_file), "--out", str(out),
            "--wheels", str(wheels), "--unit", str(unit_file), "--ssh-key", SSH_KEY, "--set", "node_id=cli-1",
            "--hostname", "cli-node", "--secrets", str(secrets)]
    assert mailpulse_main(argv) == 0
    assert Fat(out).text("meta-data").endswith("local-hostname: cli-node\n")
    capsys.readouterr()
    assert mailpulse_main(["image", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "node: cli-1 (site lon1), hostname cli-node, backend ice40" in text and "first boot: cloudinit" in text
    assert mailpulse_main(["image", "inspect", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["node"]["node_id"] == "cli-1"
    # a bad input: one sentence, exit status 2, no traceback, no output
    assert mailpulse_main([*argv[:6], str(tmp_path / "x.img"), *argv[7:], "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailpulse: error: ") and "sha256" in err and "Traceback" not in err
    assert not (tmp_path / "x.img").exists() and leftovers(tmp_path) == []
    # the stand-in device: a regular file, written with bmaptool (or the fallback), --yes skips the question
    dev = tmp_path / "card.bin"
    dev.write_bytes(b"\xff" * MIB)
    assert mailpulse_main([*argv[:5], "--device", str(dev), *argv[7:], "--yes"]) == 0
    assert Fat(dev).text("meta-data").endswith("local-hostname: cli-node\n")


# ---------------------------------------------------------------------------------------------
# bad inputs: a clear error, nothing left behind
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_node(config_file: Path) -> img.NodeSpec:
    return img.make_node(config_file.read_text(), "node.toml", secrets=SECRETS)


def _fails(tmp_path: Path, base: Path, node: img.NodeSpec, wheels: list[Path], unit: Path, match: str,
           sha256: str | None = None) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(UserError, match=match):
        img.flash_image(base, out_dir / "node.img", node, wheels, unit=img.read_unit(unit), sha256=sha256)
    assert list(out_dir.iterdir()) == [], "a failed flash left files behind"


def test_refuses_images_without_the_partitions(tmp_path: Path, project_wheel: Path, unit_file: Path,
                                               one_node: img.NodeSpec) -> None:
    wheels = wheels_for(tmp_path, project_wheel, "cp311")
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(2 * MIB))
    _fails(tmp_path, blank, one_node, wheels, unit_file, "no partition table")
    only_fat = tmp_path / "onlyfat.img"
    with only_fat.open("wb") as f:
        f.truncate(40 * MIB)
    _run("sfdisk", "-q", only_fat, input="label: dos\nstart=8192, type=c\n")
    _run("mkfs.fat", "-F", "32", "--offset", "8192", only_fat)
    _fails(tmp_path, only_fat, one_node, wheels, unit_file,
           r"needs a FAT boot partition followed by a Linux root partition, found #1 type c")
    not_fat = tmp_path / "notfat.img"
    with not_fat.open("wb") as f:
        f.truncate(40 * MIB)
    _run("sfdisk", "-q", not_fat, input="label: dos\nstart=8192, size=40960, type=c\nstart=49152, type=83\n")
    _fails(tmp_path, not_fat, one_node, wheels, unit_file, "is not a FAT file system")
    _fails(tmp_path, tmp_path / "missing.img", one_node, wheels, unit_file, "does not exist")
    truncated = tmp_path / "trunc.img"
    with truncated.open("wb") as f:
        f.truncate(300 * MIB)
    _run("sfdisk", "-q", truncated,
         input="label: dos\nstart=8192, size=40960, type=c\nstart=49152, size=400000, type=83\n")
    os.truncate(truncated, 40 * MIB)
    _fails(tmp_path, truncated, one_node, wheels, unit_file, "is truncated")


def test_refuses_a_full_fat_partition(tmp_path: Path, project_wheel: Path, unit_file: Path,
                                      one_node: img.NodeSpec) -> None:
    wheels = wheels_for(tmp_path, project_wheel, "cp311")
    big = fake_wheel(tmp_path, "pillow-11.0.0-cp311-cp311-manylinux_2_28_aarch64.whl")
    with zipfile.ZipFile(big, "a") as z:
        z.writestr("pillow/blob.bin", os.urandom(3 * MIB))
    full = build_pi_image(tmp_path / "full.img", "bookworm", boot_mib=40, boot_filler=37 * MIB)
    _fails(tmp_path, full, one_node, [w for w in wheels if "pillow" not in w.name] + [big], unit_file, "is too full")
    # and mtools' own "disk full", should the estimate ever be wrong
    fat = img.FatPartition(full, BOOT_START * 512)
    with pytest.raises(UserError, match="is full"):
        fat.write("huge.bin", os.urandom(4 * MIB))


def test_refuses_checksum_mismatch_and_bad_xz(bases: dict[str, Path], tmp_path: Path, project_wheel: Path,
                                              unit_file: Path, one_node: img.NodeSpec) -> None:
    wheels = wheels_for(tmp_path, project_wheel, "cp311")
    _fails(tmp_path, bases["bookworm"], one_node, wheels, unit_file, "does not match its expected sha256",
           sha256="ab" * 32)
    broken = tmp_path / "broken.img.xz"
    broken.write_bytes(lzma.compress(b"\0" * MIB)[:-40])
    _fails(tmp_path, broken, one_node, wheels, unit_file, "is not a complete .xz file")
    with pytest.raises(UserError, match="64 hex digits"):
        img.expected_sha256("not-a-checksum")


def test_refuses_wheels_that_cannot_install(bases: dict[str, Path], tmp_path: Path, project_wheel: Path,
                                            unit_file: Path, one_node: img.NodeSpec) -> None:
    # the Trixie image runs 3.13: cp311 binary wheels do not fit
    _fails(tmp_path, bases["trixie"], one_node, wheels_for(tmp_path, project_wheel, "cp311"), unit_file,
           r"no wheel of numpy, pillow for the Pi \(CPython 3.13")
    _fails(tmp_path, bases["bookworm"], one_node, [project_wheel], unit_file, "--download-deps")
    _fails(tmp_path, bases["bookworm"], one_node, dep_wheels(tmp_path / "d", "cp311"), unit_file,
           "exactly one mailpulse")


def test_bad_configs_are_one_sentence(tmp_path: Path) -> None:
    cases = {
        CONFIG.replace('id = "relay-a"', 'id = "bad id!"'): r"\[node\] id 'bad id!' must be 1-64 characters",
        CONFIG.replace("port = 8883", "port = 70000"): r"\[mqtt\] port 70000 is not a TCP port",
        CONFIG.replace('backend = "ice40"', 'backend = "gpu"'): r"\[scorer\] backend 'gpu' is not one of",
        CONFIG.replace('host = "broker.example.net"', 'host = ""'): r"\[mqtt\] host '' is not a host name",
        CONFIG + "[node\n": "is not valid TOML",
        CONFIG.replace('username = "node"', 'username = "node"\npassword = "x"'):
            r"\[mqtt\] password must not be in the config file",
        # a probe route without its SMTP port
        CONFIG.replace("smtp_port = 25\n", ""): r"\[\[probe.routes\]\] via-relay1 is missing the key 'smtp_port'",
        CONFIG.replace('[node]\n', '[node]\nstate_dir = 5\n'): r"state_dir",
    }
    for text, match in cases.items():
        with pytest.raises(UserError, match=match):
            img.make_node(text, "node.toml", secrets=SECRETS)
    with pytest.raises(UserError, match="passphrase"):
        img.make_node(CONFIG, "n", secrets=SECRETS, wifi_ssid="x", wifi_psk="short", wifi_country="GB")
    with pytest.raises(UserError, match="country code"):
        img.make_node(CONFIG, "n", secrets=SECRETS, wifi_ssid="x", wifi_psk="longenough", wifi_country="")
    with pytest.raises(UserError, match="not an SSH public key"):
        img.make_node(CONFIG, "n", secrets=SECRETS, ssh_keys="ssh-ed25519 AAAA\nnot a key")
    with pytest.raises(UserError, match="hostname 'Bad_Host'"):
        img.make_node(CONFIG, "n", secrets=SECRETS, hostname="Bad_Host")
    with pytest.raises(UserError, match=r"mqtt\.port must be an integer, not 'eighty'"):
        img.make_node(CONFIG, "n", secrets=SECRETS, overrides={"mqtt.port": "eighty"})
    with pytest.raises(UserError, match="broker_url must look like"):
        img.make_node(CONFIG, "n", secrets=SECRETS, overrides={"broker_url": "http://x"})
    # the route's IMAP password: no way to get one, or not among the secrets for the card
    with pytest.raises(UserError, match=r"\[\[probe.routes\]\] via-relay1 needs an IMAP password"):
        img.make_node(CONFIG, "n")
    with pytest.raises(UserError, match=r"has no probe\.via-relay1\.imap_password"):
        img.make_node(CONFIG, "n", secrets={"mqtt_password": "x"})
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG)
    bad = tmp_path / "nodes.csv"
    bad.write_text("node_id,site\nn1,lon1\nn1,lon2\n")
    with pytest.raises(UserError, match="has the node id 'n1' twice"):
        img.read_nodes_csv(bad, cfg, secrets=SECRETS)
    bad.write_text("site\nlon1\n")
    with pytest.raises(UserError, match="needs a node_id column"):
        img.read_nodes_csv(bad, cfg, secrets=SECRETS)
    bad.write_text("node_id,site\nn1,lon 1\n")
    with pytest.raises(UserError, match=r"nodes.csv:2: \[node\] site 'lon 1' must be 1-64 characters"):
        img.read_nodes_csv(bad, cfg, secrets=SECRETS)


# ---------------------------------------------------------------------------------------------
# devices (a regular file stands in for the card)
# ---------------------------------------------------------------------------------------------


def test_write_to_device_stand_in(bases: dict[str, Path], tmp_path: Path) -> None:
    image = bases["bookworm"]
    size = image.stat().st_size
    for use_bmap in ([True, False] if shutil.which("bmaptool") else [False]):
        dev = tmp_path / f"card-{use_bmap}.bin"
        dev.write_bytes(b"\xa5" * (2 * MIB))
        with pytest.raises(UserError, match="not confirmed"):
            img.write_to_device(image, dev, confirm=lambda q: False, use_bmaptool=use_bmap)
        assert dev.read_bytes() == b"\xa5" * (2 * MIB), "an unconfirmed write changed the device"
        asked: list[str] = []

        def yes(question: str, asked: list[str] = asked) -> bool:
            asked.append(question)
            return True

        how = img.write_to_device(image, dev, confirm=yes, use_bmaptool=use_bmap)
        assert how == ("bmaptool" if use_bmap else "python") and "Overwrite everything on" in asked[0]
        with image.open("rb") as a, dev.open("rb") as b:
            # bmaptool writes the mapped blocks only: compare the data regions of the image
            for start, end in img.data_extents(a, size):
                a.seek(start)
                b.seek(start)
                assert a.read(end - start) == b.read(end - start)
        assert Fat(dev).read("cmdline.txt") == Fat(image).read("cmdline.txt")


def test_device_refusals(tmp_path: Path) -> None:
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(300 * 1024**3)  # sparse: a 300 GB "card"
    with pytest.raises(UserError, match="more than an SD card"):
        img.check_device(huge)
    assert img.check_device(huge, force=True).size == 300 * 1024**3
    with pytest.raises(UserError, match="does not exist"):
        img.check_device(tmp_path / "nope")
    with pytest.raises(UserError, match="neither a block device nor a regular file"):
        img.check_device(tmp_path)
    # a fake sysfs: sdz (2 partitions), the running system on sda; a loop device on a file
    sysfs = tmp_path / "sys"
    for name, dev, parts in (("sdz", "8:224", {"sdz1": "8:225", "sdz2": "8:226"}), ("sda", "8:0", {"sda2": "8:2"})):
        base = sysfs / "devices" / name
        (base / "device").mkdir(parents=True)
        (base / "dev").write_text(dev)
        (base / "size").write_text(str(64 * 1024**3 // 512))
        (base / "device/model").write_text("SD Card Reader")
        (sysfs / "class/block").mkdir(parents=True, exist_ok=True)
        (sysfs / "class/block" / name).symlink_to(base)
        (sysfs / "dev/block").mkdir(parents=True, exist_ok=True)
        (sysfs / "dev/block" / dev).symlink_to(base)
        for p, pdev in parts.items():
            (base / p).mkdir()
            (base / p / "dev").write_text(pdev)
            (base / p / "partition").write_text("1")
            (sysfs / "class/block" / p).symlink_to(base / p)
            (sysfs / "dev/block" / pdev).symlink_to(base / p)
    mountinfo = tmp_path / "mountinfo"
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename Type Size Used Priority\n")
    kw: dict[str, Any] = {"sysfs": sysfs, "mountinfo": mountinfo, "swaps": swaps}
    mountinfo.write_text("22 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n")
    sdz = img.disk_info_from_sysfs(Path("/dev/sdz"), "sdz", sysfs)
    assert sdz.devnums == {"8:224", "8:225", "8:226"} and sdz.size == 64 * 1024**3
    assert "SD Card Reader" in sdz.description
    assert img.assess_device(sdz, **kw) == sdz
    mountinfo.write_text("22 1 8:2 / / rw - ext4 /dev/sda2 rw\n40 22 8:225 / /media/me/bootfs rw - vfat /dev/sdz1 rw\n")
    with pytest.raises(UserError, match="is mounted at /media/me/bootfs: unmount it first"):
        img.assess_device(sdz, **kw)
    mountinfo.write_text("22 1 8:2 / / rw - ext4 /dev/sda2 rw\n")
    sda = img.disk_info_from_sysfs(Path("/dev/sda"), "sda", sysfs)
    with pytest.raises(UserError, match="holds the running system"):
        img.assess_device(sda, force=True, **kw)
    with pytest.raises(UserError, match="is a partition"):
        img.disk_info_from_sysfs(Path("/dev/sdz1"), "sdz1", sysfs)
    stand_in = tmp_path / "card.bin"
    stand_in.write_bytes(bytes(MIB))
    (sysfs / "block/loop3/loop").mkdir(parents=True)
    (sysfs / "block/loop3/loop/backing_file").write_text(str(stand_in))
    with pytest.raises(UserError, match="is attached to loop3"):
        img.check_device(stand_in, **kw)


# ---------------------------------------------------------------------------------------------
# --download-deps against PyPI (skipped offline)
# ---------------------------------------------------------------------------------------------


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_download_deps_for_the_pi(tmp_path: Path) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is not reachable")
    target = img.Target("3.11", "aarch64")
    got = img.download_deps(tmp_path, ["paho-mqtt", "pillow"], target)
    names = {str(parse_wheel_filename(p.name)[0]): p.name for p in got}
    assert set(names) == {"paho-mqtt", "pillow"}, names
    assert all(img.wheel_fits(n, target) for n in names.values())
    assert "aarch64" in names["pillow"] and "cp311" in names["pillow"]
    assert not img.wheel_fits(names["pillow"], img.Target("3.13", "aarch64"))
    assert sys.platform != "linux" or "x86_64" not in names["pillow"]


def test_flash_a_node_bundle_from_collector_add_node(bases: dict[str, Path], project_wheel: Path, unit_file: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``image flash --bundle``: the folder ``collector add-node`` wrote (config naming
    /etc/mailpulse/{ca.crt,node.crt,node.key}, secrets) goes onto the card; first boot installs the
    TLS files 0600 for the service user and takes the key off the FAT first."""
    import pip

    dep = init_deployment(tmp_path / "deploy", hosts=["broker.example.org"], nodes=[("lon1", "pi-07")])
    bundle = dep.node_dir("lon1", "pi-07")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for n in ("numpy-2.1.3-py3-none-any.whl", "pillow-11.0.0-py3-none-any.whl", "paho_mqtt-2.1.0-py3-none-any.whl",
              "pydantic-2.11.0-py3-none-any.whl"):
        fake_wheel(wheels, n)
    shutil.copy2(project_wheel, wheels)
    out = tmp_path / "bundle.img"
    assert mailpulse_main(["image", "flash", str(bases["bookworm"]), "--bundle", str(bundle), "--out", str(out),
                           "--wheels", str(wheels), "--unit", str(unit_file)]) == 0
    capsys.readouterr()
    assert mailpulse_main(["image", "inspect", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["node"]["node_id"] == "pi-07" and "mailpulse/node.key" in info["secrets_on_fat"]
    fat = Fat(out)
    cfg = tomllib.loads(fat.text("mailpulse/node.toml"))
    assert cfg["mqtt"]["url"] == "mqtts://broker.example.org:8883" and cfg["mqtt"]["username"] == "lon1.pi-07"
    assert cfg["mqtt"]["key_file"] == "/etc/mailpulse/node.key"
    boot = tmp_path / "boot"
    boot.mkdir()
    _run("mcopy", "-s", "-n", "-i", f"{out}@@{fat.offset}", "::mailpulse", boot, env=fat.env)
    shims, state, root = tmp_path / "shims", tmp_path / "state", tmp_path / "root"
    for d in (shims, state, root / "var/log"):
        d.mkdir(parents=True)
    for name, body in SHIMS.items():
        (shims / name).write_text("#!/bin/sh\n" + body)
        (shims / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "MAILPULSE_FIRSTBOOT_ROOT": str(root),
           "SHIM_LOG": str(tmp_path / "shim.log"), "SHIM_STATE": str(state), "REAL_PYTHON": sys.executable,
           "PIP_DIR": str(Path(pip.__file__).parent)}
    p = subprocess.run(["sh", str(boot / "mailpulse/setup.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (root / "var/log/mailpulse-firstboot.log").read_text()
    for name in ("ca.crt", "node.crt", "node.key", "secrets.toml"):
        on_pi = root / "etc/mailpulse" / name
        assert on_pi.read_bytes() == (bundle / name).read_bytes() and on_pi.stat().st_mode & 0o777 == 0o600
        assert not (boot / "mailpulse" / name).exists()
    # a bundle whose config names a TLS file elsewhere, or lacks one, is one sentence
    (bundle / "node.key").unlink()
    assert mailpulse_main(["image", "flash", str(bases["bookworm"]), "--bundle", str(bundle), "--out",
                           str(tmp_path / "x.img"), "--wheels", str(wheels), "--unit", str(unit_file)]) == 2
    assert "has no node.key" in capsys.readouterr().err
