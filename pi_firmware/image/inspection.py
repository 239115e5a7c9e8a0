"""``mailpulse image inspect``: what is on an image's boot partition and which node it is for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

from .boot import enable_spi, probe_root
from .fat import FAT_DIR, FatPartition, boot_and_root, read_partitions

__all__ = ["format_inspect", "inspect_image"]

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
        "init": ("cloudinit" if {"user-data", "meta-data"} & set(files)
                 else "firstrun" if "firstrun.sh" in files else None),
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
    secret_files = (f"{FAT_DIR}/secrets.toml", "network-config", "firstrun.sh")
    info["secrets_on_fat"] = sorted(f for f in files if f in secret_files or (f.startswith(f"{FAT_DIR}/")
                                                                              and f.endswith(".key")))
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
        lines.append(f"node: {node['node_id']} (site {node['site']}), hostname {node['hostname']}, "
                     f"backend {node['backend']}")
        lines.append(f"  admin {node['admin_user']} with {node['ssh_keys']} SSH key(s); "
                     f"Wi-Fi: {node['wifi_ssid'] or 'none'}"
                     + (f" ({node['wifi_country']})" if node["wifi_country"] else ""))
        lines.append(f"  instance {node['instance_id']}, written {node['written_at']} by {node['written_by']}")
        lines.append(f"  config checked by: {node.get('config_checked_by', '?')}; "
                     f"secrets: {', '.join(node.get('secrets', [])) or 'none'}")
        lines.append(f"  wheels ({node['target_python']}/{node['target_arch']}): {', '.join(node['wheels'])}")
    lines.append(f"cmdline.txt: {info['cmdline']}")
    lines.append(f"SPI: {'on' if info['spi_enabled'] else 'off'}; "
                 f"secrets still on FAT: {', '.join(info['secrets_on_fat']) or 'none'}")
    lines.append(f"boot partition: {len(info['boot_files'])} files, {info['boot_free_bytes'] // 1024} KiB free")
    lines += [f"  {f}" for f in info["boot_files"]]
    return "\n".join(lines)
