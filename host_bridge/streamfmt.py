"""Byte layouts of the AXI4-Stream ports (``docs/interfaces.md``), vectorised with numpy.

Samples travel as 256-bit beats (32 bytes, little-endian, one sample per beat)::

    tdata[31:0]                 tag
    tdata[32+16d+15 : 32+16d]   feature d, signed 16-bit, d = 0..D-1
    above 32+16D                ignored (sent as 0)

Results come back as 128-bit beats (16 bytes)::

    tdata[31:0]   score (zero-extended)
    tdata[63:32]  tag
    tdata[71:64]  argmax
    tdata[72]     anomaly flag

These are the layouts a DMA engine moves through memory, so the host side packs a whole batch
with a handful of numpy operations and no per-sample Python.  The inverse functions (unpacking
samples, packing results) are what a stream *device* model needs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams
from mailpulse.hdl.reference import ScoreResult

#: Bytes per sample beat (256-bit ``s_axis``).
SAMPLE_BYTES = 32
#: Bytes per result beat (128-bit ``m_axis``).
RESULT_BYTES = 16
#: Most features a 256-bit beat can carry after the 32-bit tag.
MAX_STREAM_FEATURES = (SAMPLE_BYTES * 8 - 32) // 16


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


def pack_samples(params: CoreParams, x: npt.ArrayLike, tags: npt.ArrayLike | None = None,
                 out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Pack N samples into N 32-byte beats (uint8 array of shape (N, 32)).

    ``out``, when given, is a uint8 array of at least N*32 bytes (for example a DMA buffer viewed
    as bytes); the beats are written into its first N*32 bytes and that view is returned.
    """
    if params.d > MAX_STREAM_FEATURES:
        raise ValueError(f"a 256-bit beat carries at most {MAX_STREAM_FEATURES} features, not {params.d}")
    xs, ts = check_samples(params, x, tags)
    n = xs.shape[0]
    if out is None:
        beats = np.zeros((n, SAMPLE_BYTES), dtype=np.uint8)
    else:
        flat = out.reshape(-1).view(np.uint8)
        if flat.size < n * SAMPLE_BYTES:
            raise ValueError(f"the output buffer holds {flat.size} bytes, {n * SAMPLE_BYTES} are needed")
        beats = flat[: n * SAMPLE_BYTES].reshape(n, SAMPLE_BYTES)
        beats[...] = 0
    words16 = beats.view("<u2")                       # (N, 16)
    words32 = beats.view("<u4")                       # (N, 8)
    words32[:, 0] = ts.astype(np.uint32)
    words16[:, 2:2 + params.d] = (xs & 0xFFFF).astype(np.uint16)
    return beats


def unpack_samples(params: CoreParams, data: bytes | npt.NDArray[np.uint8]
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inverse of :func:`pack_samples`: ``(x (N, D), tags (N,))`` from N*32 bytes."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    raw = np.ascontiguousarray(raw).reshape(-1)
    if raw.size % SAMPLE_BYTES:
        raise ValueError(f"sample data must be a multiple of {SAMPLE_BYTES} bytes, not {raw.size}")
    beats = raw.reshape(-1, SAMPLE_BYTES)
    tags = beats.view("<u4")[:, 0].astype(np.int64)
    x = beats.view("<i2")[:, 2:2 + params.d].astype(np.int64)
    return x, tags


def pack_results(result: ScoreResult) -> npt.NDArray[np.uint8]:
    """Results as N 16-byte beats, the ``m_axis`` layout."""
    n = len(result)
    beats = np.zeros((n, RESULT_BYTES), dtype=np.uint8)
    w = beats.view("<u4")
    w[:, 0] = np.asarray(result.score, dtype=np.int64).astype(np.uint32)
    w[:, 1] = np.asarray(result.tag, dtype=np.int64).astype(np.uint32)
    w[:, 2] = ((np.asarray(result.argmax, dtype=np.int64) & 0xFF)
               | ((np.asarray(result.anomaly, dtype=np.int64) & 1) << 8)).astype(np.uint32)
    return beats


def unpack_results(data: bytes | npt.NDArray[np.uint8], n: int | None = None) -> ScoreResult:
    """Decode result beats (``m_axis`` layout) into a :class:`~mailpulse.hdl.reference.ScoreResult`.

    ``n`` limits the decoding to the first n beats.  Bits that the layout declares 0 are checked:
    a beat with any of them set raises ``ValueError`` (it means the stream was misaligned).
    """
    raw = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    raw = np.ascontiguousarray(raw).reshape(-1)
    if raw.size % RESULT_BYTES:
        raise ValueError(f"result data must be a multiple of {RESULT_BYTES} bytes, not {raw.size}")
    w = raw.reshape(-1, RESULT_BYTES).view("<u4")
    if n is not None:
        w = w[:n]
    if w.size and (np.any(w[:, 2] >> 9) or np.any(w[:, 3])):
        raise ValueError("result beats have bits set that the m_axis layout declares 0 (misaligned stream?)")
    return ScoreResult(
        score=w[:, 0].astype(np.int64),
        anomaly=((w[:, 2] >> 8) & 1).astype(np.int64),
        argmax=(w[:, 2] & 0xFF).astype(np.int64),
        tag=w[:, 1].astype(np.int64),
    )
