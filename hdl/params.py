"""Elaboration parameters of the mailpulse scorer core and its named parameter sets.

Pure Python (no Amaranth import): the reference model, the host bridge and the firmware use it on
machines that have no HDL toolchain.  Every width the core uses is derived here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailpulse.errors import UserError


def clog2(n: int) -> int:
    """Smallest ``w`` with ``2**w >= n`` (``clog2(1) == 0``)."""
    if n < 1:
        raise ValueError(f"clog2 needs a positive integer, not {n!r}")
    return (n - 1).bit_length()


#: Most routes a core tracks (``PARAMS.ROUTES_LOG2`` has 3 bits: 0 and log2(R) + 1 up to 7).
MAX_ROUTES = 64


@dataclass(frozen=True)
class CoreParams:
    """Elaboration parameters of the scorer core.

    Parameters
    ----------
    name : str
        Name of the parameter set (``small``, ``full``, ``zynq`` or a custom name).
    d : int
        Number of input features per sample (1..16; one 32-bit ``WEIGHTS`` register holds D 2-bit
        weights).
    k : int
        Number of sparse projections / histograms (1..64).
    b : int
        Number of histogram bins per projection, a power of two (2..256).
    in_bits, weight_bits, table_bits, shift_bits, tag_bits : int
        Fixed widths; see ``docs/fixed-point.md``.  They are parameters so that the read-back
        register tells the host exactly what it talks to, not so that they are freely tuned.
    r : int
        Routes with a latency prediction interval (:func:`mailpulse.hdl.reference.route_intervals`):
        0 (no intervals: the beats and the registers are those of a core without them) or a power
        of two 1..64 (``PARAMS.ROUTES_LOG2`` holds ``log2(R) + 1``).
    """

    name: str
    d: int
    k: int
    b: int
    in_bits: int = 16
    weight_bits: int = 2
    table_bits: int = 16
    shift_bits: int = 5
    tag_bits: int = 32
    r: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.d <= 16:
            raise ValueError(f"D must be in 1..16 (one WEIGHTS register per projection), not {self.d}")
        if not 1 <= self.k <= 64:
            raise ValueError(f"K must be in 1..64, not {self.k}")
        if self.b < 2 or self.b > 256 or self.b & (self.b - 1):
            raise ValueError(f"B must be a power of two in 2..256, not {self.b}")
        if self.k * self.b > 8192:
            raise ValueError(f"K*B must be at most 8192 (the table window), not {self.k * self.b}")
        if (self.in_bits, self.weight_bits, self.table_bits, self.shift_bits, self.tag_bits) != (
            16,
            2,
            16,
            5,
            32,
        ):
            raise ValueError("the widths in/weight/table/shift/tag are fixed at 16/2/16/5/32 in this version")
        if self.r and (self.r > MAX_ROUTES or self.r & (self.r - 1)):
            raise ValueError(f"R must be 0 or a power of two in 1..{MAX_ROUTES}, not {self.r}")

    # -- derived widths ---------------------------------------------------------------------
    @property
    def routes_log2p1(self) -> int:
        """``PARAMS.ROUTES_LOG2``: 0 without routes, else ``log2(R) + 1``."""
        return clog2(self.r) + 1 if self.r else 0

    @property
    def b_log2(self) -> int:
        return clog2(self.b)

    @property
    def proj_bits(self) -> int:
        """Signed width of a projection sum: exact for every input and weight."""
        return self.in_bits + self.weight_bits + clog2(self.d)

    @property
    def offset_bits(self) -> int:
        """Signed width of a bin offset register (same range as a projection)."""
        return self.proj_bits

    @property
    def score_bits(self) -> int:
        """Unsigned width of a score: the sum of K table values, exact."""
        return self.table_bits + clog2(self.k)

    @property
    def weight_min(self) -> int:
        return -(1 << (self.weight_bits - 1))

    @property
    def weight_max(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def in_min(self) -> int:
        return -(1 << (self.in_bits - 1))

    @property
    def in_max(self) -> int:
        return (1 << (self.in_bits - 1)) - 1

    @property
    def table_max(self) -> int:
        return (1 << self.table_bits) - 1

    @property
    def shift_max(self) -> int:
        return (1 << self.shift_bits) - 1

    @property
    def offset_min(self) -> int:
        return -(1 << (self.offset_bits - 1))

    @property
    def offset_max(self) -> int:
        return (1 << (self.offset_bits - 1)) - 1

    def as_dict(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "d": self.d,
            "k": self.k,
            "b": self.b,
            "in_bits": self.in_bits,
            "weight_bits": self.weight_bits,
            "table_bits": self.table_bits,
            "shift_bits": self.shift_bits,
            "tag_bits": self.tag_bits,
            "proj_bits": self.proj_bits,
            "offset_bits": self.offset_bits,
            "score_bits": self.score_bits,
            "r": self.r,
        }


#: The named parameter sets.  ``small`` fits an iCE40 UP5K, ``full`` an iCE40 HX8K, ``zynq`` the
#: Zynq-7020 IP (and an ECP5-25F/85F for the open-tool timing check).
PARAMETER_SETS: dict[str, CoreParams] = {
    "small": CoreParams("small", d=8, k=8, b=64),
    "full": CoreParams("full", d=8, k=16, b=64),
    "zynq": CoreParams("zynq", d=8, k=32, b=128),
}


#: The smallest core that still has every structure of the shipped ones (a two-input adder tree, a
#: two-way score/argmax tree, two table banks of several bins): the formal proofs
#: (:mod:`mailpulse.hdl.formal`) run k-induction on it, where the state space of a shipped set is
#: too large; the shipped sets get a bounded model check.  Not a set a bitstream is built for.
FORMAL_PARAMS = CoreParams("formal", d=2, k=2, b=4)


def get_params(name: str) -> CoreParams:
    """Look a parameter set up by name, with an error that lists the known ones.

    ``<set>-r<R>`` names the set ``<set>`` with ``R`` routes (``small-r16``: the ``small`` core
    with 16 route intervals), for verification and builds of a set with intervals."""
    if name in PARAMETER_SETS:
        return PARAMETER_SETS[name]
    base, sep, r = name.rpartition("-r")
    if sep and base in PARAMETER_SETS and r.isdigit() and not PARAMETER_SETS[base].r:
        return replace(PARAMETER_SETS[base], name=name, r=int(r))
    known = ", ".join(sorted(PARAMETER_SETS))
    raise ValueError(f"unknown parameter set {name!r}; known sets: {known} (<set>-r<R>: with R route intervals)")


def base_set(name: str) -> str:
    """The set ``<set>`` of a name ``<set>-r<R>`` (the set with route intervals); any other name as it is."""
    base, sep, r = name.rpartition("-r")
    return base if sep and base and r.isdigit() else name


def params_or_error(name: str) -> CoreParams:
    """:func:`get_params`, with an unknown name as a :class:`~mailpulse.errors.UserError` (bad
    input from a user: one sentence that lists the known sets, exit status 2)."""
    try:
        return get_params(name)
    except ValueError as e:
        raise UserError(str(e)) from None
