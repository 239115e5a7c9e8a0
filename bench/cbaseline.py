"""The C++ baseline of the scorer (``bench/c/score.cpp``): built here with ``g++ -O3
-march=native``, loaded with ctypes, checked bit for bit against ``mailpulse.hdl.reference.score``
and timed on one core and on all cores.

It does the streaming core's job: dense sample beats in, dense result beats out
(:mod:`mailpulse.hdl.beats`), so its rate and the core's are rates of the same work.

Used by ``bench/bench_fmax.py`` and ``tests/test_bench_cbaseline.py``::

    lib = CBaseline.build(get_params("zynq"))       # ToolMissing without g++
    out = lib.score(beats, cfg, threads=1)          # (N, 8) uint8 result beats
    lib.check(cfg, rng, 10_000)                     # raises AssertionError on any difference
    rate = lib.rate(cfg, beats, threads=os.cpu_count())
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.beats import RESULT_BYTES, sample_beat
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import CoreConfig, score
from mailpulse.host_bridge.streamfmt import pack_results

SOURCE = Path(__file__).resolve().parent / "c" / "score.cpp"
#: The compiler flags the issue prescribes: the best the compiler does for this machine.
CXXFLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread"]
BUILD_DIR = Path(__file__).resolve().parent.parent / "build" / "cbaseline"


class ToolMissing(RuntimeError):
    """No C++ compiler (``g++``) on PATH."""


def compiler() -> str:
    found = shutil.which(os.environ.get("CXX", "g++"))
    if found is None:
        raise ToolMissing("g++ is not installed (Debian package g++, listed in tools/apt-packages.txt)")
    return found


@dataclass
class CBaseline:
    """The compiled baseline for one parameter set."""

    params: CoreParams
    lib: ctypes.CDLL
    path: Path

    @classmethod
    def build(cls, params: CoreParams, build_dir: Path = BUILD_DIR) -> CBaseline:
        """Compile (or reuse) ``score.cpp`` for ``params``; the library's name carries a hash of the
        source, the flags and the compiler's version."""
        cxx = compiler()
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
        flags = [*CXXFLAGS, f"-DMP_D={params.d}", f"-DMP_K={params.k}", f"-DMP_B={params.b}"]
        key = hashlib.sha256(SOURCE.read_bytes() + repr(flags).encode() + version.encode()).hexdigest()[:16]
        build_dir.mkdir(parents=True, exist_ok=True)
        so = build_dir / f"score_{params.name}_{key}.so"
        if not so.exists():
            tmp = so.with_suffix(f".{os.getpid()}.tmp")
            subprocess.run([cxx, *flags, "-o", str(tmp), str(SOURCE)], check=True, capture_output=True, text=True)
            tmp.replace(so)
        lib = ctypes.CDLL(str(so))
        lib.mp_score.restype = ctypes.c_int
        lib.mp_score.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
        d, k, b = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        nbytes = lib.mp_params(ctypes.byref(d), ctypes.byref(k), ctypes.byref(b))
        if (d.value, k.value, b.value, nbytes) != (params.d, params.k, params.b, sample_beat(params).nbytes):
            raise RuntimeError(f"{so} was built for another parameter set")
        return cls(params, lib, so)

    def score(self, beats: npt.NDArray[np.uint8], cfg: CoreConfig, threads: int = 1,
              out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
        """Result beats ((N, 8) uint8) of the sample beats ``beats`` ((N, 4 + 2D) uint8)."""
        p = self.params
        beats = np.ascontiguousarray(beats, dtype=np.uint8)
        n = len(beats)
        if beats.shape != (n, sample_beat(p).nbytes):
            raise ValueError(f"sample beats must have shape (N, {sample_beat(p).nbytes}), not {beats.shape}")
        if out is None:
            out = np.empty((n, RESULT_BYTES), dtype=np.uint8)
        model = [np.ascontiguousarray(a, dtype=np.int32) for a in (cfg.weights, cfg.offsets, cfg.shifts, cfg.tables)]
        rc = self.lib.mp_score(beats.ctypes.data, out.ctypes.data, n, *(a.ctypes.data for a in model),
                               int(cfg.threshold), threads)
        if rc != 0:
            raise RuntimeError(f"mp_score failed ({rc})")
        return out

    def check(self, cfg: CoreConfig, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64]) -> None:
        """The baseline's result beats equal the reference model's, byte for byte, on one thread
        and on two (``AssertionError`` naming the first differing sample otherwise)."""
        p = self.params
        beats = sample_beat(p).pack(len(x), {"tag": tags, "features": x})
        want = pack_results(score(p, cfg, x, tags))
        for threads in (1, 2):
            got = self.score(beats, cfg, threads)
            bad = np.flatnonzero(np.any(got != want, axis=1))
            assert not len(bad), (f"C baseline ({threads} threads) differs from the model at sample {bad[0]}: "
                                  f"{got[bad[0]].tobytes().hex()} != {want[bad[0]].tobytes().hex()}")

    def rate(self, cfg: CoreConfig, beats: npt.NDArray[np.uint8], threads: int, repeat: int = 3) -> float:
        """Samples per second (wall clock, the best of ``repeat`` runs) on ``threads`` threads."""
        out = np.empty((len(beats), RESULT_BYTES), dtype=np.uint8)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            self.score(beats, cfg, threads, out)
            best = min(best, time.perf_counter() - t0)
        return len(beats) / best
