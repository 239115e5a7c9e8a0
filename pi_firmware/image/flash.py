"""Writing images: one node's first-boot files into a copy of the base image (:func:`customise`),
one image file (:func:`flash_image`) or one per node (:func:`flash_batch`).

Every output is written under a temporary name and renamed when complete; any failure removes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mailpulse import __version__
from mailpulse.errors import UserError

from .boot import (
    InitKind,
    UnitInfo,
    detect_init,
    edit_cmdline,
    enable_spi,
    instance_id,
    probe_root,
    read_unit,
    render_firstboot,
)
from .fat import FAT_DIR, FatPartition, boot_and_root
from .nodes import NodeSpec
from .sparse import materialise, sparse_copy, verify_checksum
from .wheels import Target, Wheels, check_wheels

__all__ = ["CONFIG_CHECK", "PYTHON_BY_INIT", "FlashResult", "customise", "flash_batch", "flash_image"]

#: what validated the node config (recorded in the manifest): the one node config type
CONFIG_CHECK = "mailpulse.config.node.NodeConfig"

#: Python of the stock images, when the root file system does not tell
PYTHON_BY_INIT: dict[str, str] = {"firstrun": "3.11", "cloudinit": "3.13"}


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
            raise UserError(f"the boot partition of {image} has no {required}: it is not a Raspberry Pi OS boot "
                            "partition")
    if f"{FAT_DIR}/manifest.json" in existing:
        try:
            other = json.loads(fat.read(f"{FAT_DIR}/manifest.json")).get("node_id", "?")
        except json.JSONDecodeError:
            other = "?"
        raise UserError(f"the base image was already written by mailpulse for node {other} (and may hold its "
                        "secrets): start from the stock Raspberry Pi OS image")
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
        "config_checked_by": CONFIG_CHECK,
        "ssh_keys": len(node.ssh_keys), "secrets": sorted(node.secrets),
        "wifi_ssid": node.wifi.ssid if node.wifi else None,
        "wifi_country": node.wifi.country if node.wifi else None, "service_user": unit.user, "venv": unit.venv,
        "unit": unit.name, "links": list(unit.links), "target_python": target.python, "target_arch": target.arch,
        "wheels": wheel_names,
        "written_by": f"mailpulse {__version__}", "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
    }
    files[f"{FAT_DIR}/manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    cluster = fat.cluster_bytes()
    need = sum(-(-len(v) // cluster) * cluster for k, v in files.items() if k not in existing)
    need += sum(-(-w.stat().st_size // cluster) * cluster for w in wheels) + 4 * cluster
    free = fat.free_bytes()
    if need > free:
        raise UserError(f"the FAT boot partition of {image} is too full: the node files need {need // 1024} KiB but "
                        f"only {free // 1024} KiB are free")
    fat.mkdir(FAT_DIR)
    fat.mkdir(f"{FAT_DIR}/wheels")
    for w in wheels:
        fat.copy_in(w, f"{FAT_DIR}/wheels/{w.name}")
    for name, data in files.items():
        fat.write(name, data)
    written = sorted([*files, *(f"{FAT_DIR}/wheels/{w.name}" for w in wheels)])
    return FlashResult(image, node.node_id, kind, iid, tuple(written), target)


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
