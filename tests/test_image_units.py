"""The pure parts of ``mailpulse.pi_firmware.image``: TOML writing, wheel tags, kernel arguments, config.txt,
sparse copies, unit parsing (no images needed)."""

from __future__ import annotations

import hashlib
import os
import tomllib
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailpulse.pi_firmware import image as img

from mailpulse.errors import UserError

_keys = st.text(min_size=1, max_size=8)
_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
                       max_leaves=8)
_tables = st.lists(st.dictionaries(_keys, _scalars, min_size=1, max_size=3), min_size=1, max_size=2)
_docs = st.dictionaries(_keys, st.one_of(_values, _tables), max_size=5)


@settings(max_examples=60, deadline=None)
@given(_docs)
def test_dump_toml_round_trips(doc: dict[str, object]) -> None:
    assert tomllib.loads(img.dump_toml(doc)) == doc


@pytest.mark.parametrize(("spec", "version", "ok"), [
    (">=3.11,<3.13", "3.11", True), (">=3.11,<3.13", "3.12", True), (">=3.11,<3.13", "3.13", False),
    (">=3.11", "3.13", True), (">=3.11", "3.9", False), ("", "3.13", True), ("!=3.12", "3.12", False),
    ("==3.11.*", "3.11", True), ("==3.11.*", "3.13", False),
    # compatible release: ~=3.11.0 is >=3.11.0,==3.11.*; ~=3.11 is >=3.11,==3.*
    ("~=3.11.0", "3.11", True), ("~=3.11.0", "3.13", False), ("~=3.11", "3.13", True), ("~=3.12", "3.11", False),
])
def test_python_allowed(spec: str, version: str, ok: bool) -> None:
    assert img.python_allowed(spec, version) is ok


@pytest.mark.parametrize(("name", "target", "ok"), [
    ("numpy-2.1.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", ("3.11", "aarch64"), True),
    ("numpy-2.1.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", ("3.13", "aarch64"), False),
    ("numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", ("3.11", "aarch64"), False),
    ("numpy-2.1.3-cp311-cp311-linux_armv7l.whl", ("3.11", "armv7l"), True),
    ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_aarch64.whl", ("3.13", "aarch64"), True),
    ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_aarch64.whl", ("3.13", "armv7l"), False),
    ("paho_mqtt-2.1.0-py3-none-any.whl", ("3.13", "armv7l"), True),
    # musl wheels do not run on Raspberry Pi OS (glibc); manylinux newer than Bookworm's glibc 2.36 neither
    ("x-1.0-cp311-cp311-musllinux_1_2_aarch64.whl", ("3.11", "aarch64"), False),
    ("x-1.0-cp311-cp311-manylinux_2_39_aarch64.whl", ("3.11", "aarch64"), False),
    ("x-1.0-cp311-cp311-manylinux_2_36_aarch64.whl", ("3.11", "aarch64"), True),
])
def test_wheel_fits(name: str, target: tuple[str, str], ok: bool) -> None:
    assert img.wheel_fits(name, img.Target(*target)) is ok


def test_cmdline_keeps_one_line_and_replaces_old_hooks() -> None:
    stock = "console=serial0,115200 root=PARTUUID=ab-02 rootwait quiet\n"
    once = img.edit_cmdline(stock, "cloudinit", "mailpulse-n1-1")
    assert once == "console=serial0,115200 root=PARTUUID=ab-02 rootwait quiet ds=nocloud;i=mailpulse-n1-1\n"
    assert img.edit_cmdline(once, "cloudinit", "mailpulse-n1-2").count("ds=") == 1
    fr = img.edit_cmdline(once, "firstrun", "x")
    assert "ds=" not in fr and fr.strip().endswith(img.FIRSTRUN_ARGS) and fr.count("\n") == 1
    assert img.edit_cmdline(fr, "firstrun", "x") == fr


def test_enable_spi() -> None:
    commented = "#dtparam=i2c_arm=on\n#dtparam=spi=on\ndtparam=audio=on\n\n[cm4]\notg_mode=1\n"
    assert img.enable_spi(commented) == "#dtparam=i2c_arm=on\ndtparam=spi=on\ndtparam=audio=on\n\n[cm4]\notg_mode=1\n"
    on = img.enable_spi(commented)
    assert img.enable_spi(on) == on
    # only inside [cm4]: that is not every board, so [all] gets its own line
    cm4_only = "arm_64bit=1\n[cm4]\ndtparam=spi=on\n"
    assert img.enable_spi(cm4_only).endswith("[all]\n# mailpulse: the iCE40 scorer is on SPI0\ndtparam=spi=on\n")
    assert img.enable_spi("") .strip().endswith("dtparam=spi=on")


def test_sparse_copy_keeps_content_and_holes(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    with src.open("wb") as f:
        f.truncate(32 * 2**20)
        f.seek(5 * 2**20 + 123)
        f.write(os.urandom(300_000))
        f.seek(20 * 2**20)
        f.write(bytes(2 * 2**20))  # written zeros: must not be copied as data
        f.seek(31 * 2**20)
        f.write(b"end")
    dst = tmp_path / "dst.img"
    img.sparse_copy(src, dst)
    assert dst.stat().st_size == src.stat().st_size
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert img.allocated_bytes(dst) < 2 * 2**20


def test_read_unit(tmp_path: Path) -> None:
    u = tmp_path / "x.service"
    u.write_text("[Service]\nUser=svc\nExecStart=/srv/venv/bin/mailpulse node run --config /etc/mailpulse/node.toml\n")
    assert img.read_unit(u) == img.UnitInfo(u, "x.service", "svc", "/srv/venv", ())
    u.write_text("[Service]\nExecStart=-/usr/bin/env mailpulse\n")
    assert img.read_unit(u).user == img.DEFAULT_SERVICE_USER and img.read_unit(u).venv == img.DEFAULT_VENV
    # the firmware's unit runs /usr/local/bin/mailpulse: never a venv there, a link to the venv instead
    u.write_text("[Service]\nUser=mailpulse\nExecStartPre=/usr/local/bin/mailpulse node check-config F\n"
                 "ExecStart=/usr/local/bin/mailpulse node run --config F\n")
    assert img.read_unit(u) == img.UnitInfo(u, "x.service", "mailpulse", img.DEFAULT_VENV,
                                            ("/usr/local/bin/mailpulse",))
    assert img.read_unit(u, venv="/srv/mp").venv == "/srv/mp"
    with pytest.raises(UserError, match="not a place for the node's virtual environment"):
        img.read_unit(u, venv="/usr")
    with pytest.raises(UserError, match=r"systemd unit .* does not exist"):
        img.read_unit(tmp_path / "missing.service")


def test_expected_sha256(tmp_path: Path) -> None:
    h = "A" * 64
    assert img.expected_sha256(h) == "a" * 64 and img.expected_sha256(None) is None
    f = tmp_path / "x.sha256"
    f.write_text(f"{'b' * 64}  2025-11-24-raspios-trixie-arm64-lite.img.xz\n")
    assert img.expected_sha256(str(f)) == "b" * 64
    f.write_text("garbage\n")
    with pytest.raises(UserError, match="does not start with a sha256"):
        img.expected_sha256(str(f))


def test_wheels_resolve_downloads_only_what_is_missing(tmp_path: Path) -> None:
    proj = tmp_path / "mailpulse-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(proj, "w") as z:
        z.writestr("mailpulse-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: mailpulse\nVersion: 0.1.0\n"
                   "Requires-Python: >=3.11\nRequires-Dist: numpy>=1.26\nRequires-Dist: scipy; extra == \"train\"\n"
                   "Requires-Dist: paho-mqtt<3,>=2.1; extra == \"node\"\n")
    assert img.project_requirements(proj) == (">=3.11", ["numpy", "paho-mqtt"])
    have = [proj, tmp_path / "numpy-2.1.3-cp311-cp311-manylinux2014_aarch64.whl",
            tmp_path / "paho_mqtt-2.1.0-py3-none-any.whl"]
    w = img.Wheels(have, download=True, workdir=None)
    assert w.resolve(img.Target("3.11", "aarch64")) == have  # nothing missing: no download, no workdir needed
    assert img.Wheels(have[:1]).resolve(img.Target("3.11", "aarch64")) == have[:1]


def test_wpa_psk_matches_the_ieee_vector() -> None:
    # IEEE 802.11i-2004, H.4.1: passphrase "password", SSID "IEEE"
    assert img.wpa_psk("IEEE", "password") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert img.wpa_psk("x", "AB" * 32) == "ab" * 32
