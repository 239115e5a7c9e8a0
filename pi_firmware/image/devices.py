"""Writing a finished image to a card, and the checks before it: never a mounted device, the running
system, swap, a loop-attached file, or (without ``force``) something bigger than an SD card."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpulse.errors import UserError

from .fat import run_tool
from .sparse import copy_extents

__all__ = ["MAX_SD_BYTES", "DeviceInfo", "assess_device", "check_device", "describe_device", "disk_info_from_sysfs",
           "write_to_device"]

#: a device larger than this is probably not an SD card (refused without ``force``)
MAX_SD_BYTES = 256 * 1024**3


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
        raise UserError(f"{dev} ({info.size // 2**20} MiB) is smaller than the image "
                        f"({image.stat().st_size // 2**20} MiB)")
    if not yes:
        question = f"Overwrite everything on {dev} ({info.description})? Type 'yes' to continue: "
        if confirm is None or not confirm(question):
            raise UserError(f"not writing {dev}: not confirmed (pass --yes to skip the question)")
    bmap = shutil.which("bmaptool") is not None if use_bmaptool is None else use_bmaptool
    if bmap:
        with tempfile.TemporaryDirectory(prefix="mailpulse-bmap-") as d:
            bm = Path(d) / "image.bmap"
            run_tool(["bmaptool", "create", "-o", str(bm), str(image)], f"map the blocks of {image}")
            run_tool(["bmaptool", "copy", "--bmap", str(bm), str(image), str(dev)], f"write {dev}")
        return "bmaptool"
    size = image.stat().st_size
    with image.open("rb") as fi, dev.open("r+b") as fo:
        copy_extents(fi, fo, size, sparse=False)
        if not info.is_block:
            fo.truncate(size)
        fo.flush()
        os.fsync(fo.fileno())
    return "python"
