"""The AXI4-Stream beats of the simulation, packed and unpacked with numpy.

The layouts are :mod:`mailpulse.hdl.beats` (``docs/interfaces.md``): this module adds what a
testbench needs on top - results with their ``tlast`` and the stray bits, random sample beats,
frame lengths and a comparison with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.beats import RESULT_BEAT, RESULT_BYTES, result_beat, sample_beat, sample_bytes
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import NO_ROUTE, IntArray, ScoreResult

__all__ = ["RESULT_BYTES", "StreamResults", "beat_fields", "compare", "frame_lengths",
           "pack_samples", "random_beats", "random_samples", "sample_bytes", "unpack_results", "unpack_samples"]


@dataclass
class StreamResults(ScoreResult):
    """A :class:`mailpulse.hdl.reference.ScoreResult` read from ``m_axis``, with each result's ``tlast``."""

    tlast: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Bits of the result beats that must be 0 but were not (OR over all beats, beat bit positions).
    stray_bits: int = 0


def pack_samples(params: CoreParams, x: npt.ArrayLike, tags: npt.ArrayLike | None = None,
                 routes: npt.ArrayLike | None = None, latencies: npt.ArrayLike | None = None) -> bytes:
    """N samples (N, D) and their tags as N ``s_axis`` beats (features and tags cut to their widths);
    with routes (R > 0) their route ids (default :data:`~mailpulse.hdl.reference.NO_ROUTE`) and
    latencies (default 0)."""
    xs = np.asarray(x, dtype=np.int64)
    if xs.ndim != 2 or xs.shape[1] != params.d:
        raise ValueError(f"samples must have shape (N, {params.d}), not {xs.shape}")
    n = xs.shape[0]
    t = np.zeros(n, dtype=np.int64) if tags is None else np.asarray(tags, dtype=np.int64)
    if t.shape != (n,):
        raise ValueError(f"{n} samples but tags of shape {t.shape}")
    events = {"route": np.full(n, NO_ROUTE) if routes is None else np.asarray(routes),
              "latency": np.zeros(n, dtype=np.int64) if latencies is None else np.asarray(latencies)}
    return sample_beat(params).pack(n, {"tag": t, "features": xs, **(events if params.r else {})}).tobytes()


def unpack_samples(params: CoreParams, data: bytes) -> tuple[IntArray, IntArray]:
    """Inverse of :func:`pack_samples`: ((N, D) features, (N,) tags)."""
    lay = sample_beat(params)
    beats = lay.beats(data)
    return lay.get(beats, "features"), lay.get(beats, "tag")


def unpack_results(data: bytes, tlast: npt.ArrayLike | None = None, params: CoreParams | None = None
                   ) -> StreamResults:
    """N ``m_axis`` beats as :class:`StreamResults` (of a core of ``params``: with routes, the
    below/above flags; default: the beat of a core without routes)."""
    lay = RESULT_BEAT if params is None else result_beat(params)
    beats = lay.beats(data)
    n = len(beats)
    tl = np.zeros(n, dtype=np.int64) if tlast is None else np.asarray(tlast, dtype=np.int64)
    out = StreamResults(score=lay.get(beats, "score"), anomaly=lay.get(beats, "anomaly"),
                        argmax=lay.get(beats, "argmax"), tag=lay.get(beats, "tag"),
                        tlast=tl, stray_bits=lay.stray_bits(beats))
    if params is not None and params.r:
        out.below, out.above = lay.get(beats, "below"), lay.get(beats, "above")
    return out


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
    lay = sample_beat(params)
    beats = lay.beats(random_beats(params, rng, n))
    return lay.get(beats, "features"), lay.get(beats, "tag")


def random_beats(params: CoreParams, rng: np.random.Generator, n: int) -> npt.NDArray[np.int16]:
    """``n`` random ``s_axis`` beats, packed: an (N, sample_bytes(params) / 2) ``int16`` array laid out as
    :func:`pack_samples` lays it out (``.tobytes()`` gives the beats; :func:`beat_fields` gives
    views of the features and tags).

    Features uniform over the whole range, except one sample in 8 with small values in -256..255
    and one in 8 with the two extremes mixed; drawn straight into the beat buffer as 16-bit
    integers (about five times faster than int64 features packed by :func:`pack_samples`).
    Tags are uniform 32-bit values.  :func:`random_samples` gives the same draws unpacked.
    """
    if not 1 <= params.in_bits <= 16:
        raise ValueError(f"random_beats needs features of at most 16 bits, not {params.in_bits}")
    buf = np.zeros((n, sample_bytes(params) // 2), dtype="<i2")
    feats, tags = beat_fields(params, buf)
    d = params.d
    feats[...] = rng.integers(params.in_min, params.in_max + 1, size=(n, d), dtype=np.int16)
    kind = rng.integers(0, 8, size=n, dtype=np.uint8)
    small = np.flatnonzero(kind == 0)
    feats[small] = rng.integers(-256, 256, size=(len(small), d), dtype=np.int16)
    ext = np.flatnonzero(kind == 1)
    top = rng.integers(0, 2, size=(len(ext), d), dtype=np.int16)
    feats[ext] = np.where(top == 1, params.in_max, params.in_min).astype(np.int16)
    tags[...] = rng.integers(0, 1 << 32, size=n, dtype=np.uint32)
    return buf


def beat_fields(params: CoreParams, beats: npt.NDArray[np.int16]
                ) -> tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]:
    """Views of the features ((N, D) ``int16``) and the tags ((N,) ``uint32``) in packed sample
    beats (as :func:`random_beats` returns them): no copy, writing them writes the beats."""
    lay = sample_beat(params)
    raw = beats.view(np.uint8).reshape(-1, sample_bytes(params))
    return lay.view(raw, "features"), lay.view(raw, "tag")


def compare(expected: ScoreResult, got: ScoreResult, limit: int = 5) -> list[int]:
    """Indices (at most ``limit``) where ``got`` differs from ``expected`` in any output."""
    n = min(len(expected), len(got))
    bad = np.zeros(n, dtype=bool)
    for name in ("score", "anomaly", "argmax", "tag", "below", "above"):
        e, g = getattr(expected, name), getattr(got, name)
        if e is None and g is None:
            continue
        if e is None or g is None:
            raise ValueError(f"one result has {name} flags and the other not: a core with routes against one without")
        bad |= np.asarray(e)[:n] != np.asarray(g)[:n]
    idx = np.flatnonzero(bad)[:limit].tolist()
    if len(expected) != len(got) and len(idx) < limit:
        idx.append(n)
    return [int(i) for i in idx]
