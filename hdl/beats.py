"""The AXI4-Stream beat layouts of the scorer, declared once (``docs/interfaces.md``).

Everything that touches a beat takes its bit positions from here: the gateware's stream adapters
(:mod:`mailpulse.hdl.axi`), the simulation's codec (:mod:`mailpulse.sim.codec`), the host
bridge's DMA packing (:mod:`mailpulse.host_bridge.streamfmt`) and the PYNQ driver.

Pure Python and numpy, no Amaranth import.  Beats are little-endian: bit ``i`` of ``tdata`` is
bit ``i % 8`` of byte ``i // 8`` in memory, which is how a DMA engine moves them.

Both beats are dense: every bit belongs to a field.

Sample beat (``s_axis``, 32 + 16D bits: 160 for D = 8, 20 bytes; with routes, R > 0, 32 more)::

    tdata[31:0]                 tag
    tdata[32+16d+15 : 32+16d]   feature d, signed 16-bit, d = 0..D-1
    tdata[32+16D+15 : 32+16D]   route id, unsigned 16-bit (R > 0 only; an id >= R is not tracked)
    tdata[48+16D+15 : 48+16D]   latency, unsigned Q8.8 log2(latency in us) (R > 0 only)

Result beat (``m_axis``, 64 bits, 8 bytes)::

    tdata[23:0]   score (zero-extended; at most 22 bits for K <= 64)
    tdata[30:24]  argmax
    tdata[31]     anomaly flag
    tdata[63:32]  tag

With routes (R > 0) the score field is 22 bits (a score never has more) and its two top bits carry
the route interval's flags: ``tdata[22]`` below (the latency fell below its route's lower bound),
``tdata[23]`` above (above the upper bound); a core without routes keeps them 0, so a host that
reads the 24-bit score of either sees the same number.

The numpy helpers pack and unpack whole batches with a handful of array operations (no per-sample
Python): a byte-aligned field of 8, 16 or 32 bits is a strided view of the beat buffer, a narrower
field (the 24-bit score) is gathered from the bytes it spans.  They do not validate values: a value
wider than its field is cut to the field's bits (callers that take user input check it first, see
:func:`mailpulse.host_bridge.streamfmt.check_samples`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from .params import CoreParams

__all__ = [
    "LATENCY_FIELD_BITS",
    "MAX_STREAM_FEATURES",
    "RESULT_BEAT",
    "RESULT_BEAT_BITS",
    "RESULT_BEAT_ROUTES",
    "RESULT_BYTES",
    "ROUTE_FIELD_BITS",
    "BeatField",
    "BeatLayout",
    "result_beat",
    "sample_beat",
    "sample_beat_bits",
    "sample_bytes",
]

#: Width of the tag field of both beats.
TAG_BITS = 32
#: Width of one feature slot of the sample beat.
FEATURE_BITS = 16
#: Most features a sample beat carries (the most :class:`~mailpulse.hdl.params.CoreParams` allows).
MAX_STREAM_FEATURES = 16
#: Width of the result stream's ``tdata``.
RESULT_BEAT_BITS = 64
#: Bytes per result beat.
RESULT_BYTES = RESULT_BEAT_BITS // 8
#: Width of the result beat's score field (a score has at most 16 + clog2(64) = 22 bits).
SCORE_FIELD_BITS = 24
#: Width of the result beat's argmax field (K <= 64 projections).
ARGMAX_FIELD_BITS = 7
#: Width of the result beat's score field with routes: bits 22/23 are the below/above flags.
ROUTE_SCORE_FIELD_BITS = 22
#: Width of the sample beat's route id (R > 0): wider than any R, so an id out of range arrives as it is.
ROUTE_FIELD_BITS = 16
#: Width of the sample beat's latency (R > 0): unsigned Q8.8 log2 latency
#: (:data:`mailpulse.hdl.reference.LATENCY_BITS`).
LATENCY_FIELD_BITS = 16

_UNSIGNED: dict[int, np.dtype[Any]] = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4")}
_SIGNED: dict[int, np.dtype[Any]] = {8: np.dtype("<i1"), 16: np.dtype("<i2"), 32: np.dtype("<i4")}


@dataclass(frozen=True)
class BeatField:
    """One field of a beat: ``count`` elements of ``width`` bits, element ``i`` at
    ``tdata[lsb + i * width + width - 1 : lsb + i * width]``."""

    name: str
    lsb: int
    width: int
    doc: str
    signed: bool = False
    count: int = 1

    @property
    def end(self) -> int:
        """One past the field's highest bit."""
        return self.lsb + self.width * self.count

    @property
    def mask(self) -> int:
        """The field's bits in the beat."""
        return ((1 << (self.width * self.count)) - 1) << self.lsb

    @property
    def viewable(self) -> bool:
        """The elements are whole 8/16/32-bit words starting on a byte: a numpy view reaches them."""
        return self.width in _UNSIGNED and self.lsb % 8 == 0

    def bits(self, i: int = 0) -> tuple[int, int]:
        """``(lo, hi)``: element ``i`` is ``tdata[lo:hi]`` (Python slice bounds)."""
        if not 0 <= i < self.count:
            raise IndexError(f"beat field {self.name}[{i}] is out of range 0..{self.count - 1}")
        lo = self.lsb + i * self.width
        return lo, lo + self.width


@dataclass(frozen=True)
class BeatLayout:
    """The layout of one stream's beats; bits outside every field are 0 (sent and expected)."""

    name: str
    bits: int
    fields: tuple[BeatField, ...]

    def __post_init__(self) -> None:
        spans = sorted((f.lsb, f.end, f.name) for f in self.fields)
        for (_a0, a1, n0), (b0, _b1, n1) in pairwise(spans):
            if b0 < a1:
                raise ValueError(f"fields {n0} and {n1} of the {self.name} beat overlap")
        for f in self.fields:
            if f.end > self.bits:
                raise ValueError(f"field {f.name} (bits {f.lsb}..{f.end - 1}) does not fit the "
                                 f"{self.bits}-bit {self.name} beat")
            if not f.viewable and (f.count != 1 or f.width > 56):
                raise ValueError(f"field {f.name} of the {self.name} beat must be a byte-aligned 8/16/32-bit "
                                 "word (array) or a single field of at most 56 bits")

    @property
    def nbytes(self) -> int:
        return self.bits // 8

    @property
    def used_mask(self) -> int:
        """Bits that belong to a field."""
        m = 0
        for f in self.fields:
            m |= f.mask
        return m

    def __getitem__(self, name: str) -> BeatField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"the {self.name} beat has no field {name!r}")

    # -- numpy ---------------------------------------------------------------------------------
    def beats(self, data: bytes | bytearray | npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
        """``data`` (bytes or any array holding whole beats) as a ``(N, nbytes)`` uint8 array."""
        if isinstance(data, bytes | bytearray):
            raw = np.frombuffer(bytes(data), dtype=np.uint8)
        else:
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if raw.size % self.nbytes:
            raise ValueError(f"{raw.size} bytes is not a whole number of {self.nbytes}-byte {self.name} beats")
        return raw.reshape(-1, self.nbytes)

    def view(self, beats: npt.NDArray[np.uint8], name: str, *, signed: bool | None = None) -> npt.NDArray[np.integer]:
        """A view of field ``name`` in ``beats`` (``(N, nbytes)`` uint8): shape ``(N,)`` for a
        scalar field, ``(N, count)`` for an array; signed as the field declares unless ``signed``
        says otherwise.  Writing into it writes the beats."""
        f = self[name]
        if not f.viewable:
            raise ValueError(f"field {f.name} of the {self.name} beat is narrower than a byte: no view")
        sgn = f.signed if signed is None else signed
        b0 = f.lsb // 8
        # the field's bytes (last axis contiguous), reinterpreted: a view, unaligned or not
        words = beats[:, b0:b0 + f.width // 8 * f.count].view((_SIGNED if sgn else _UNSIGNED)[f.width])
        return words[:, 0] if f.count == 1 else words

    def get(self, beats: npt.NDArray[np.uint8], name: str) -> npt.NDArray[np.int64]:
        """Field ``name`` of every beat as int64 (sign-extended for a signed field)."""
        f = self[name]
        if f.viewable:
            return self.view(beats, name).astype(np.int64)
        v = np.zeros(len(beats), dtype=np.int64)
        for i, b in enumerate(range(f.lsb // 8, (f.end - 1) // 8 + 1)):
            v |= beats[:, b].astype(np.int64) << (8 * i)
        v = (v >> (f.lsb % 8)) & ((1 << f.width) - 1)
        if f.signed:
            v = np.where(v >> (f.width - 1), v - (1 << f.width), v)
        return v

    def pack(self, n: int, values: Mapping[str, npt.ArrayLike],
             out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
        """``n`` beats with the fields in ``values`` (the others 0), as ``(n, nbytes)`` uint8.

        ``out``, when given, is a uint8 array of at least ``n * nbytes`` bytes (a DMA buffer viewed
        as bytes, say): the beats are written into its first ``n * nbytes`` bytes and that view is
        returned.  Values are cut to their field's width.
        """
        if out is None:
            beats = np.zeros((n, self.nbytes), dtype=np.uint8)
        else:
            flat = out.reshape(-1).view(np.uint8)
            if flat.size < n * self.nbytes:
                raise ValueError(f"the output buffer holds {flat.size} bytes, {n * self.nbytes} are needed")
            beats = flat[:n * self.nbytes].reshape(n, self.nbytes)
            beats[...] = 0
        for name, value in values.items():
            f = self[name]
            v = np.asarray(value)
            if f.viewable:
                self.view(beats, name, signed=False)[...] = (v & ((1 << f.width) - 1)).astype(_UNSIGNED[f.width])
            else:
                placed = (v.astype(np.int64) & ((1 << f.width) - 1)) << (f.lsb % 8)
                for i, b in enumerate(range(f.lsb // 8, (f.end - 1) // 8 + 1)):
                    beats[:, b] |= ((placed >> (8 * i)) & 0xFF).astype(np.uint8)
        return beats

    def stray(self, beats: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
        """Per beat: a bit outside every field is set (a misaligned stream or a broken sender)."""
        return np.any(beats & ~self._byte_mask(), axis=1)

    def stray_bits(self, beats: npt.NDArray[np.uint8]) -> int:
        """The bits outside every field that are set in any beat (OR over the beats), as an int."""
        if not len(beats):
            return 0
        return int.from_bytes((np.bitwise_or.reduce(beats, axis=0) & ~self._byte_mask()).tobytes(), "little")

    def _byte_mask(self) -> npt.NDArray[np.uint8]:
        return np.frombuffer(self.used_mask.to_bytes(self.nbytes, "little"), dtype=np.uint8)


def sample_beat_bits(params: CoreParams) -> int:
    """Width of the ``s_axis`` beat for ``params``: the tag and D features, with routes the route
    id and the latency, nothing else."""
    return TAG_BITS + FEATURE_BITS * params.d + (ROUTE_FIELD_BITS + LATENCY_FIELD_BITS if params.r else 0)


def sample_bytes(params: CoreParams) -> int:
    """Bytes per ``s_axis`` beat for ``params`` (20 for D = 8)."""
    return sample_beat_bits(params) // 8


def sample_beat(params: CoreParams) -> BeatLayout:
    """The ``s_axis`` sample beat for D = ``params.d`` features."""
    if params.d > MAX_STREAM_FEATURES:
        raise ValueError(f"a sample beat carries at most {MAX_STREAM_FEATURES} features, not {params.d}")
    if params.in_bits != FEATURE_BITS or params.tag_bits != TAG_BITS:
        raise ValueError(f"the sample beat carries {FEATURE_BITS}-bit features and {TAG_BITS}-bit tags, "
                         f"not {params.in_bits}/{params.tag_bits}")
    fields = [
        BeatField("tag", 0, TAG_BITS, "the sample's tag, returned with its result"),
        BeatField("features", TAG_BITS, FEATURE_BITS, "feature d (two's complement)", signed=True,
                  count=params.d),
    ]
    if params.r:
        at = TAG_BITS + FEATURE_BITS * params.d
        fields += [BeatField("route", at, ROUTE_FIELD_BITS, "the event's route id (an id >= R is not tracked)"),
                   BeatField("latency", at + ROUTE_FIELD_BITS, LATENCY_FIELD_BITS,
                             "the event's latency, unsigned Q8.8 log2(latency in us)")]
    return BeatLayout("sample", sample_beat_bits(params), tuple(fields))


def _result_beat(routes: bool) -> BeatLayout:
    score_bits = ROUTE_SCORE_FIELD_BITS if routes else SCORE_FIELD_BITS
    flags = (BeatField("below", ROUTE_SCORE_FIELD_BITS, 1, "latency below its route's lower bound"),
             BeatField("above", ROUTE_SCORE_FIELD_BITS + 1, 1, "latency above its route's upper bound"))
    return BeatLayout("result", RESULT_BEAT_BITS, (
        BeatField("score", 0, score_bits, "the score, zero-extended"),
        *(flags if routes else ()),
        BeatField("argmax", SCORE_FIELD_BITS, ARGMAX_FIELD_BITS,
                  "projection with the largest table value (lowest index on ties)"),
        BeatField("anomaly", SCORE_FIELD_BITS + ARGMAX_FIELD_BITS, 1, "score > threshold"),
        BeatField("tag", 32, TAG_BITS, "the sample's tag"),
    ))


#: The ``m_axis`` result beat of a core without routes (R = 0).
RESULT_BEAT = _result_beat(False)
#: The ``m_axis`` result beat of a core with routes (R > 0): the below/above flags in bits 22/23.
RESULT_BEAT_ROUTES = _result_beat(True)


def result_beat(params: CoreParams) -> BeatLayout:
    """The ``m_axis`` result beat of ``params`` (:data:`RESULT_BEAT` or :data:`RESULT_BEAT_ROUTES`)."""
    return RESULT_BEAT_ROUTES if params.r else RESULT_BEAT
