"""The Verilog under test: generated once per (top, parameter set) and cached.

The Verilog comes from the ``hdl`` part through its documented command line
(``mailpulse hdl verilog --config NAME --top TOP -o FILE``), run in a subprocess so that the
bench depends only on that contract.  Files are cached under ``build/sim/verilog/`` keyed by a hash
of the ``hdl/`` sources, so an edit of the core regenerates them and nothing else does.

``MAILPULSE_SIM_RTL_DIR=DIR`` makes the bench use ``DIR/mailpulse_<top>_<set>.v`` instead (to
simulate a Verilog file from elsewhere, e.g. a netlist after synthesis).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailpulse.hdl.params import get_params

ROOT = Path(__file__).resolve().parent.parent
#: The tops ``mailpulse hdl verilog --top`` generates: the shipped ``axi`` and ``spi``, and the
#: verification tops of the bulk harnesses (``axi_lut``: the AXI top with LUT projections; ``bus``,
#: ``bus_stream``: the SPI top's front end and core with the register port on pins).
TOPS = ("axi", "spi", "axi_lut", "bus", "bus_stream")
#: Verilog module name of each top (docs/interfaces.md).
TOP_MODULE = {top: f"mailpulse_{top}" for top in TOPS}


def build_root() -> Path:
    """Root of every simulation build (``build/sim`` in the repository, or ``MAILPULSE_SIM_BUILD``)."""
    return Path(os.environ.get("MAILPULSE_SIM_BUILD", ROOT / "build" / "sim"))


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (parallel pytest workers build each thing once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_names(top: str, params_name: str) -> None:
    if top not in TOPS:
        raise ValueError(f"unknown top {top!r}; known tops: {', '.join(TOPS)}")
    get_params(params_name)   # a ValueError that lists the known sets


def hdl_digest() -> str:
    """Hash of the ``hdl/`` Python sources: the cache key of generated Verilog."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "hdl").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def verilog_path(top: str, params_name: str) -> Path:
    """Path of the Verilog of ``top`` for parameter set ``params_name``, generating it if needed.

    Raises
    ------
    RuntimeError
        When the generator fails; the message holds its output.
    """
    check_names(top, params_name)
    override = os.environ.get("MAILPULSE_SIM_RTL_DIR")
    if override:
        p = Path(override) / f"mailpulse_{top}_{params_name}.v"
        if not p.exists():
            raise FileNotFoundError(f"MAILPULSE_SIM_RTL_DIR is set but {p} does not exist")
        return p
    out = build_root() / "verilog" / f"{TOP_MODULE[top]}_{params_name}_{hdl_digest()}.v"
    with file_lock(out.with_suffix(".lock")):
        if out.exists():
            return out
        tmp = out.with_suffix(".tmp.v")
        cmd = [sys.executable, "-m", "mailpulse", "hdl", "verilog", "--config", params_name,
               "--top", top, "-o", str(tmp)]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0 or not tmp.exists():
            raise RuntimeError(f"generating the Verilog of {top}/{params_name} failed ({' '.join(cmd[1:])}):\n"
                               f"{r.stdout}{r.stderr}")
        tmp.replace(out)
        for old in out.parent.glob(f"{TOP_MODULE[top]}_{params_name}_*"):  # files of older hdl/ sources
            if old.suffix in (".v", ".lock") and old.stem != out.stem:
                old.unlink(missing_ok=True)
    return out
