"""``mailpulse image flash`` and ``mailpulse image inspect``: thin layers over :mod:`mailpulse.pi_firmware.image`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError
from mailpulse.pi_firmware import image as img

from . import prints_help


def add_image(p: argparse.ArgumentParser) -> None:
    """``mailpulse image flash`` and ``mailpulse image inspect``."""
    p.description = img.__doc__.splitlines()[0] if img.__doc__ else None
    sub = p.add_subparsers(dest="image_command", metavar="ACTION")
    p.set_defaults(func=prints_help(p))

    f = sub.add_parser("flash", help="write one image per node (a file, a card, or a CSV batch)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write a stock Raspberry Pi OS image with a node's firmware, config and "
                                   "first-boot setup.\nOnly the FAT boot partition is changed (mtools, no mounting, "
                                   "no root). See docs/provisioning.md.")
    f.add_argument("base", type=Path, help="stock Raspberry Pi OS image, .img or .img.xz")
    f.add_argument("--config", type=Path, help="node config (TOML); with --batch: the template every row fills in")
    f.add_argument("--bundle", type=Path, metavar="DIR", help="a node's folder from 'mailpulse collector add-node': "
                                                              "its node.toml, secrets.toml and TLS files (CA, client "
                                                              "certificate and key) go onto the card")
    out = f.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="write the image to this file")
    out.add_argument("--device", type=Path, help="write the image to this card (/dev/sdX, /dev/mmcblkN)")
    out.add_argument("--batch", type=Path, metavar="NODES.CSV",
                     help="one image per CSV row, <node_id>.img in --out-dir")
    f.add_argument("--out-dir", type=Path, default=Path("."),
                   help="folder of the --batch images (default: current folder)")
    f.add_argument("--secrets", type=Path, metavar="FILE",
                   help="secrets template (TOML: mqtt_password, probe.<route>.smtp_password, ...)")
    f.add_argument("--sha256", help="expected sha256 of the base image: 64 hex digits or a .sha256 file")
    f.add_argument("--wheels", type=Path, metavar="DIR",
                   help="wheels to install on the node (the project's is built when absent)")
    f.add_argument("--download-deps", action="store_true", help="fetch missing dependency wheels for the Pi from PyPI")
    f.add_argument("--init", choices=img.INIT_CHOICES, default="auto",
                   help="first-boot mechanism (auto: cloud-init when the image has a NoCloud seed)")
    f.add_argument("--hostname", help="host name (default mailpulse-<node id>)")
    f.add_argument("--ssh-key", action="append", metavar="KEY|FILE", help="administrator's SSH public key (repeatable)")
    f.add_argument("--admin-user", help=f"administrator account (default {img.DEFAULT_ADMIN_USER})")
    f.add_argument("--wifi-ssid")
    f.add_argument("--wifi-psk",
                   help="Wi-Fi passphrase (or set MAILPULSE_WIFI_PSK, which stays out of the shell history)")
    f.add_argument("--wifi-country", help="two-letter country code of the Wi-Fi radio")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (node_id=n1, mqtt.port=8883, broker_url=...)")
    f.add_argument("--pi-python", help="Python version on the Pi (default: read from the image)")
    f.add_argument("--pi-arch", choices=sorted(img.PIP_PLATFORMS), help="CPU of the Pi (default: read from the image)")
    f.add_argument("--unit", type=Path, help="systemd unit to install (default: the node firmware's)")
    f.add_argument("--venv",
                   help=f"virtual environment on the Pi (default: from the unit's ExecStart, else {img.DEFAULT_VENV})")
    f.add_argument("--yes", action="store_true", help="do not ask before overwriting --device")
    f.add_argument("--force", action="store_true", help="write a --device bigger than an SD card")
    f.set_defaults(func=cmd_flash)

    i = sub.add_parser("inspect", help="show what is on an image's boot partition and which node it is for")
    i.add_argument("image", type=Path, help="an image file or a card")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_inspect)


def _progress(i: int, n: int, name: str) -> None:
    width = 30
    done = width * i // max(n, 1)
    bar = "#" * done + "." * (width - done)
    text = f"\r[{bar}] {i}/{n} {name:<24}" if i < n else f"\r[{bar}] {n}/{n} done{' ' * 20}\n"
    if sys.stderr.isatty():
        sys.stderr.write(text)
    else:
        sys.stderr.write(text.lstrip("\r").rstrip() + "\n")
    sys.stderr.flush()


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(question).strip().lower() == "yes"


def cmd_flash(a: argparse.Namespace) -> int:
    files: dict[str, bytes] = {}
    if a.bundle is not None:
        if a.batch:
            raise UserError("--bundle is one node's folder: flash enrolled nodes one by one (--out or --device)")
        a.config = a.config or a.bundle / "node.toml"
        a.secrets = a.secrets or a.bundle / "secrets.toml"
        files = img.bundle_files(a.bundle, img.read_text(a.config, "node config"), str(a.config))
    if a.config is None:
        raise UserError("give the node config with --config FILE (or a node's folder with --bundle DIR)")
    overrides: dict[str, str] = {}
    for item in a.set:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set needs KEY=VALUE, not {item!r}")
        overrides[key.strip()] = value
    psk = a.wifi_psk or os.environ.get("MAILPULSE_WIFI_PSK")
    common: dict[str, Any] = {"secrets": img.read_secrets_file(a.secrets), "hostname": a.hostname,
                              "ssh_keys": a.ssh_key, "wifi_ssid": a.wifi_ssid, "wifi_psk": psk,
                              "wifi_country": a.wifi_country, "admin_user": a.admin_user}
    if a.batch and overrides:
        raise UserError("--set applies to one node: put per-node values in the CSV columns for --batch")
    if a.batch:
        if a.hostname:
            raise UserError("--hostname names one node: give a hostname column in the CSV for --batch")
        nodes = img.read_nodes_csv(a.batch, a.config, **{k: v for k, v in common.items() if k != "hostname"})
    else:
        nodes = [img.make_node(img.read_text(a.config, "node config"), str(a.config), overrides=overrides, files=files,
                               **common)]
    unit = img.read_unit(a.unit, a.venv)
    sha = img.expected_sha256(a.sha256)
    if a.device:
        img.check_device(a.device, force=a.force)
    wheels = img.gather_wheels(a.wheels, download=a.download_deps)
    t0 = time.monotonic()
    try:
        opts: dict[str, Any] = {"sha256": sha, "init": a.init, "unit": unit, "pi_python": a.pi_python,
                                "pi_arch": a.pi_arch}
        if a.batch:
            results = img.flash_batch(a.base, nodes, a.out_dir, wheels, progress=_progress, **opts)
            for r in results:
                print(f"{r.image}: node {r.node_id}, {r.init}, {img.allocated_bytes(r.image) // 2**20} MiB on disk")
        elif a.out:
            r = img.flash_image(a.base, a.out, nodes[0], wheels, **opts)
            print(f"{r.image}: node {r.node_id}, {r.init}, {len(r.files)} files on the boot partition")
        else:
            with tempfile.TemporaryDirectory(prefix="mailpulse-image-") as d:
                r = img.flash_image(a.base, Path(d) / "node.img", nodes[0], wheels, **opts)
                how = img.write_to_device(r.image, a.device, yes=a.yes, force=a.force, confirm=_confirm)
            print(f"{a.device}: node {r.node_id}, {r.init}, written with {how}")
    finally:
        wheels.cleanup()
    print(f"done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    info = img.inspect_image(a.image)
    print(json.dumps(info, indent=2) if a.json else img.format_inspect(info))
    return 0
