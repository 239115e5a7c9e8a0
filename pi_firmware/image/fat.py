"""The image's partitions and its FAT boot partition, read and written with sfdisk and mtools at
the partition's byte offset: nothing is mounted and no root is needed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mailpulse.errors import UserError

__all__ = ["FAT_DIR", "FatPartition", "Partition", "boot_and_root", "device_bytes", "read_partitions", "run_tool"]

#: where the files of the node live on the FAT partition
FAT_DIR = "mailpulse"
_FAT_TYPES = {"b", "c", "e", "6", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"}
_LINUX_TYPES = {"83", "0fc63daf-8483-4772-8e79-3d69d8477de4", "b921b045-1df0-41c3-af44-4c6f280d3fae"}
_PKG = {"sfdisk": "fdisk", "mcopy": "mtools", "mdir": "mtools", "mmd": "mtools", "mdel": "mtools", "minfo": "mtools",
        "mtype": "mtools", "mdeltree": "mtools", "debugfs": "e2fsprogs", "bmaptool": "bmap-tools"}


class _ToolError(UserError):
    """A tool ran and failed (as opposed to being absent)."""


def run_tool(cmd: Sequence[str], what: str, *, env: Mapping[str, str] | None = None,
             input: bytes | None = None) -> bytes:
    """Run a tool, return its output; a missing tool or a failure is one sentence naming ``what``."""
    tool = cmd[0]
    if shutil.which(tool) is None:
        raise UserError(f"{tool} is needed to {what} but is not installed (Debian: {_PKG.get(tool, tool)})")
    proc = subprocess.run(list(cmd), capture_output=True, env=dict(env) if env else None, input=input)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise _ToolError(f"{what}: {tool} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc.stdout


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
        out = run_tool(["sfdisk", "--json", str(image)], f"read the partition table of {image}")
    except _ToolError:
        raise UserError(f"{image} has no partition table: it is not a Raspberry Pi OS image") from None
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        m = re.search(r"(\d+)$", p.get("node", ""))
        parts.append(Partition(int(m.group(1)) if m else i, int(p["start"]) * sector, int(p["size"]) * sector,
                               str(p["type"]).lower()))
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
        raise UserError(f"{image} is not a Raspberry Pi OS image: it needs a FAT boot partition followed by a Linux "
                        f"root partition, found {found}")
    for p in (boot, root):
        if p.start + p.size > size:
            raise UserError(f"{image} is truncated: partition #{p.number} ends at byte {p.start + p.size} but the file "
                            f"has {size} bytes")
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
        return run_tool([args[0], "-i", self.spec, *args[1:]], what, env=self.env, input=input)

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
        lines = (line.strip() for line in out.splitlines())
        return {line[3:-1] for line in lines if line.startswith("::/") and line.endswith("/")}

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
