"""The AXI4-Stream beats as a DMA engine moves them (``docs/interfaces.md``), vectorised with numpy.

The layouts are declared once in :mod:`mailpulse.hdl.beats` (dense beats: 32 + 16D-bit sample
beats, tag and D signed 16-bit features, 20 bytes for D = 8; 64-bit result beats, score, argmax,
anomaly flag and tag).  This module adds the host's side: the batch is validated
(:func:`check_samples`) before it is packed, and result beats are checked as they are unpacked
(a score wider than the core's scores or an argmax >= K means a misaligned stream), with no
per-sample Python.  The inverse
functions (unpacking samples, packing results) are what a stream *device* model needs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.beats import (
    MAX_STREAM_FEATURES,
    RESULT_BEAT,
    RESULT_BEAT_ROUTES,
    RESULT_BYTES,
    result_beat,
    sample_beat,
    sample_bytes,
)
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import NO_ROUTE, ScoreResult

__all__ = ["MAX_STREAM_FEATURES", "RESULT_BYTES", "check_events", "check_samples", "pack_results", "pack_samples",
           "sample_bytes", "unpack_events", "unpack_results", "unpack_samples"]


def check_samples(params: CoreParams, x: npt.ArrayLike, tags: npt.ArrayLike | None = None
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Validate a batch and return it as ``(x int64 (N, D), tags int64 (N,))``.

    Raises ``ValueError`` naming the problem: wrong shape, a feature outside the signed
    ``in_bits`` range, a tag outside 0..2**32-1, or a tag count that differs from the sample count.
    Nothing is truncated silently.
    """
    xs = np.asarray(x)
    if xs.ndim == 1 and xs.size == params.d:
        xs = xs.reshape(1, params.d)
    if xs.ndim != 2 or xs.shape[1] != params.d:
        raise ValueError(f"samples must have shape (N, {params.d}) for the core ({params.name}), not {xs.shape}")
    if xs.size and not np.issubdtype(xs.dtype, np.integer) and not np.all(np.equal(np.mod(xs, 1), 0)):
            raise ValueError("samples must be integers (fixed point); scale them with the model file first")
    xs = xs.astype(np.int64)
    if xs.size and (xs.min() < params.in_min or xs.max() > params.in_max):
        raise ValueError(f"sample features must be signed {params.in_bits}-bit integers "
                         f"({params.in_min}..{params.in_max})")
    n = xs.shape[0]
    if tags is None:
        ts = np.arange(n, dtype=np.int64)
    else:
        ts = np.asarray(tags).astype(np.int64).reshape(-1)
        if ts.shape[0] != n:
            raise ValueError(f"{n} samples but {ts.shape[0]} tags")
        if ts.size and (ts.min() < 0 or ts.max() > 0xFFFFFFFF):
            raise ValueError("tags must be unsigned 32-bit integers")
    return xs, ts


def check_events(params: CoreParams, n: int, routes: npt.ArrayLike | None = None,
                 latencies: npt.ArrayLike | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Validate the route ids and latencies of ``n`` samples for a core with routes and return them
    as int64 arrays (default: :data:`~mailpulse.hdl.reference.NO_ROUTE`, latency 0: not tracked).

    Raises ``ValueError`` with one sentence: the core has no routes, a count that differs from the
    sample count, a value that is not an integer or is outside 0..65535 (a route id >= R is
    accepted: the core does not track it)."""
    if not params.r:
        if routes is not None or latencies is not None:
            raise ValueError(f"the core ({params.name}) has no route intervals (R = 0): it takes no route ids "
                             "or latencies")
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    out = []
    for what, v, default in (("route ids", routes, NO_ROUTE), ("latencies", latencies, 0)):
        a = np.full(n, default, dtype=np.int64) if v is None else np.asarray(v).reshape(-1)
        if a.shape[0] != n:
            raise ValueError(f"{n} samples but {a.shape[0]} {what}")
        if a.size and not np.issubdtype(a.dtype, np.integer) and (
                not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)) or not np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"{what} must be integers" + (" (Q8.8 log2 of microseconds)" if v is latencies else ""))
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 0xFFFF):
            raise ValueError(f"{what} must be in 0..65535, not {int(a[(a < 0) | (a > 0xFFFF)][0])}")
        out.append(a)
    return out[0], out[1]


def pack_samples(params: CoreParams, x: npt.ArrayLike, tags: npt.ArrayLike | None = None,
                 out: npt.NDArray[np.uint8] | None = None, routes: npt.ArrayLike | None = None,
                 latencies: npt.ArrayLike | None = None) -> npt.NDArray[np.uint8]:
    """Pack N samples into N sample beats (uint8 array of shape (N, sample_bytes(params))); with
    routes, their route ids and latencies (:func:`check_events`).

    ``out``, when given, is a uint8 array of at least N * sample_bytes(params) bytes (for example a DMA
    buffer viewed as bytes); the beats are written into its first bytes and that view is returned.
    """
    lay = sample_beat(params)
    xs, ts = check_samples(params, x, tags)
    rs, ls = check_events(params, xs.shape[0], routes, latencies)
    events = {"route": rs, "latency": ls} if params.r else {}
    return lay.pack(xs.shape[0], {"tag": ts, "features": xs, **events}, out=out)


def unpack_samples(params: CoreParams, data: bytes | npt.NDArray[np.uint8]
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inverse of :func:`pack_samples`: ``(x (N, D), tags (N,))`` from N sample beats."""
    lay = sample_beat(params)
    beats = lay.beats(data)
    return lay.get(beats, "features"), lay.get(beats, "tag")


def unpack_events(params: CoreParams, data: bytes | npt.NDArray[np.uint8]
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The route ids and latencies that N sample beats of a core with routes carry (the inverse of
    the event part of :func:`pack_samples`); ``ValueError`` for a core without routes."""
    if not params.r:
        raise ValueError(f"the core ({params.name}) has no route intervals (R = 0): its beats carry no events")
    lay = sample_beat(params)
    beats = lay.beats(data)
    return lay.get(beats, "route"), lay.get(beats, "latency")


def pack_results(result: ScoreResult) -> npt.NDArray[np.uint8]:
    """Results as N result beats (uint8 array of shape (N, RESULT_BYTES)), the ``m_axis`` layout
    (with the below/above flags when the results carry them: a core with routes)."""
    routes = result.below is not None
    lay = RESULT_BEAT_ROUTES if routes else RESULT_BEAT
    names = ("score", "tag", "argmax", "anomaly", *(("below", "above") if routes else ()))
    return lay.pack(len(result), {name: np.asarray(getattr(result, name), dtype=np.int64) for name in names})


def unpack_results(data: bytes | npt.NDArray[np.uint8], n: int | None = None,
                   params: CoreParams | None = None) -> ScoreResult:
    """Decode result beats (``m_axis`` layout) into a :class:`~mailpulse.hdl.reference.ScoreResult`.

    ``n`` limits the decoding to the first n beats.  Values no core of ``params`` can produce are
    checked when ``params`` is given: a score of more than ``score_bits`` bits or an argmax >= K
    raises ``ValueError`` (it means the stream was misaligned); so does a bit outside the fields.
    """
    lay = RESULT_BEAT if params is None else result_beat(params)
    beats = lay.beats(data)
    if n is not None:
        beats = beats[:n]
    out = ScoreResult(
        score=lay.get(beats, "score"),
        anomaly=lay.get(beats, "anomaly"),
        argmax=lay.get(beats, "argmax"),
        tag=lay.get(beats, "tag"),
    )
    if params is not None and params.r:
        out.below, out.above = lay.get(beats, "below"), lay.get(beats, "above")
    bad = lay.stray(beats)
    if params is not None:
        bad |= (out.score >> params.score_bits != 0) | (out.argmax >= params.k)
    if bad.any():
        which = f"no {params.name} core" if params else "no core"
        raise ValueError(f"result beat {int(np.flatnonzero(bad)[0])} holds a score or argmax {which} produces "
                         "(misaligned stream?)")
    return out
