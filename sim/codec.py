"""Bit layouts of the AXI4-Stream beats (docs/interfaces.md), packed and unpacked with numpy.

Sample beat (``s_axis``, 256 bits = 32 bytes, little-endian): bytes 0..3 the tag, bytes
``4 + 2d .. 5 + 2d`` feature ``d`` (signed 16 bit), the rest 0.  Result beat (``m_axis``,
128 bits = 16 bytes): bytes 0..3 the score, 4..7 the tag, byte 8 the argmax, bit 0 of byte 9 the
anomaly flag, every other bit 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import IntArray, ScoreResult

SAMPLE_BYTES = 32
RESULT_BYTES = 16


@dataclass
class StreamResults(ScoreResult):
    """A :class:`mailpulse.hdl.reference.ScoreResult` read from ``m_axis``, with each result's ``tlast``."""

    tlast: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Bits of the result beats that must be 0 but were not (OR over all beats).
    stray_bits: int = 0


def pack_samples(params: CoreParams, x: npt.ArrayLike, tags: npt.ArrayLike | None = None) -> bytes:
    """N samples (N, D) and their tags as N 32-byte ``s_axis`` beats."""
    xs = np.asarray(x, dtype=np.int64)
    if xs.ndim != 2 or xs.shape[1] != params.d:
        raise ValueError(f"samples must have shape (N, {params.d}), not {xs.shape}")
    n = xs.shape[0]
    buf = np.zeros((n, SAMPLE_BYTES // 2), dtype="<i2")
    t = np.zeros(n, dtype=np.int64) if tags is None else np.asarray(tags, dtype=np.int64)
    if t.shape != (n,):
        raise ValueError(f"{n} samples but tags of shape {t.shape}")
    buf.view("<u4")[:, 0] = (t & 0xFFFFFFFF).astype(np.uint32)
    buf[:, 2:2 + params.d] = xs.astype(np.int16)
    return buf.tobytes()


def unpack_samples(params: CoreParams, data: bytes) -> tuple[IntArray, IntArray]:
    """Inverse of :func:`pack_samples`: ((N, D) features, (N,) tags)."""
    if len(data) % SAMPLE_BYTES:
        raise ValueError(f"{len(data)} bytes is not a whole number of {SAMPLE_BYTES}-byte sample beats")
    buf = np.frombuffer(data, dtype="<i2").reshape(-1, SAMPLE_BYTES // 2)
    return buf[:, 2:2 + params.d].astype(np.int64), buf.view("<u4")[:, 0].astype(np.int64)


def unpack_results(data: bytes, tlast: npt.ArrayLike | None = None) -> StreamResults:
    """N 16-byte ``m_axis`` beats as :class:`StreamResults`."""
    if len(data) % RESULT_BYTES:
        raise ValueError(f"{len(data)} bytes is not a whole number of {RESULT_BYTES}-byte result beats")
    w = np.frombuffer(data, dtype="<u4").reshape(-1, 4).astype(np.int64)
    n = w.shape[0]
    info = w[:, 2]
    stray = int(np.bitwise_or.reduce(info & ~0x1FF)) if n else 0
    stray |= int(np.bitwise_or.reduce(w[:, 3])) if n else 0
    tl = np.zeros(n, dtype=np.int64) if tlast is None else np.asarray(tlast, dtype=np.int64)
    return StreamResults(score=w[:, 0], anomaly=(info >> 8) & 1, argmax=info & 0xFF, tag=w[:, 1],
                         tlast=tl, stray_bits=stray)


def frame_lengths(tlast: npt.ArrayLike) -> list[int]:
    """Lengths of the frames a ``tlast`` vector cuts a stream into (the last frame may be open)."""
    tl = np.asarray(tlast, dtype=bool)
    ends = np.flatnonzero(tl) + 1
    out = np.diff(np.concatenate([[0], ends])).tolist()
    if len(tl) and not tl[-1]:
        out.append(len(tl) - (int(ends[-1]) if len(ends) else 0))
    return [int(v) for v in out]


def random_samples(params: CoreParams, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
    """``n`` random samples with tags as int64 arrays: the features and tags of
    :func:`random_beats` (uniform full-range features, mixed with small values and the two
    extremes, so that clamping at both ends and sign handling are exercised)."""
    beats = random_beats(params, rng, n)
    return beats[:, 2:2 + params.d].astype(np.int64), beats.view("<u4")[:, 0].astype(np.int64)


def random_beats(params: CoreParams, rng: np.random.Generator, n: int) -> npt.NDArray[np.int16]:
    """``n`` random ``s_axis`` beats, packed: an (N, 16) ``int16`` array laid out as
    :func:`pack_samples` lays it out (``.tobytes()`` gives the beats).

    Features uniform over the whole range, except one sample in 8 with small values in -256..255
    and one in 8 with the two extremes mixed; drawn straight into the beat buffer as 16-bit
    integers (about five times faster than int64 features packed by :func:`pack_samples`).
    Tags are uniform 32-bit values.  :func:`random_samples` gives the same draws unpacked.
    """
    if not 1 <= params.in_bits <= 16:
        raise ValueError(f"random_beats needs features of at most 16 bits, not {params.in_bits}")
    buf = np.zeros((n, SAMPLE_BYTES // 2), dtype="<i2")
    d = params.d
    buf[:, 2:2 + d] = rng.integers(params.in_min, params.in_max + 1, size=(n, d), dtype=np.int16)
    kind = rng.integers(0, 8, size=n, dtype=np.uint8)
    small = np.flatnonzero(kind == 0)
    buf[small, 2:2 + d] = rng.integers(-256, 256, size=(len(small), d), dtype=np.int16)
    ext = np.flatnonzero(kind == 1)
    top = rng.integers(0, 2, size=(len(ext), d), dtype=np.int16)
    buf[ext, 2:2 + d] = np.where(top == 1, params.in_max, params.in_min).astype(np.int16)
    buf.view("<u4")[:, 0] = rng.integers(0, 1 << 32, size=n, dtype=np.uint32)
    return buf


def compare(expected: ScoreResult, got: ScoreResult, limit: int = 5) -> list[int]:
    """Indices (at most ``limit``) where ``got`` differs from ``expected`` in any output."""
    n = min(len(expected), len(got))
    bad = np.zeros(n, dtype=bool)
    for name in ("score", "anomaly", "argmax", "tag"):
        bad |= np.asarray(getattr(expected, name))[:n] != np.asarray(getattr(got, name))[:n]
    idx = np.flatnonzero(bad)[:limit].tolist()
    if len(expected) != len(got) and len(idx) < limit:
        idx.append(n)
    return [int(i) for i in idx]
