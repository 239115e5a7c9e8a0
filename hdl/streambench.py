"""The ``stream-bench`` top: the streaming core that ships in the Zynq IP, with its AXI4-Stream
handshake, timed on a board whose pins cannot carry its stream ports.

``mailpulse_axi`` has a 160-bit ``s_axis`` and a 64-bit ``m_axis`` (``hdl/beats.py``): more pins
than an ECP5 package has.  This top keeps everything of the Zynq IP's data path and feeds it from
inside the chip:

* :class:`BeatSource` offers pseudo-random sample beats on an ``s_axis`` of the real width, with a
  pseudo-random ``tvalid`` (idle about one cycle in eight) and ``tlast`` (one beat in 64), and keeps
  to the AXI4-Stream rules (a beat offered stays offered, unchanged, until taken);
* :class:`mailpulse.hdl.axi.SampleFromAXIS` -> :class:`mailpulse.hdl.core.ScorerCore` (``stream=True``,
  LUT projections, the global pipeline enable and the output buffer) ->
  :class:`mailpulse.hdl.axi.ResultToAXIS`, exactly as in :class:`mailpulse.hdl.tops.AXITop`;
* :class:`BeatSink` takes the result beats with a pseudo-random ``tready`` (back-pressure about one
  cycle in eight) and folds every taken beat, ``tlast`` included, into a 32-bit signature
  (rotate left by one, XOR the beat's 32-bit words), shifted out on the ``sig`` pin;
* the register front end and the SPI bridge of ``mailpulse_spi``, so a host can load a model and
  read the counters on a board, as on the SPI top.

Every result bit reaches the signature, so synthesis keeps the whole data path.  The generator's
registers stand where the DMA's output registers stand on the Zynq, so the timed paths are the
core's own.  One 32-bit Galois LFSR (taps 0x80200003, period 2**32 - 1) drives both handshakes;
:func:`lfsr_step` and :func:`fold_step` are its Python model (``tests/test_stream_bench.py``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXIStreamSignature, ResultToAXIS, SampleFromAXIS
from .beats import RESULT_BEAT_BITS, sample_beat_bits
from .core import ScorerCore
from .params import CoreParams
from .spi import SPIRegisterBridge, SPISignature
from .tops import register_side

__all__ = ["LFSR_INIT", "LFSR_TAPS", "BeatSink", "BeatSource", "StreamBenchTop", "fold_step", "lfsr_step"]

#: Galois LFSR feedback (x^32 + x^22 + x^2 + x + 1, maximal length) and its reset value.
LFSR_TAPS = 0x80200003
LFSR_INIT = 0xACE1_2468
#: LFSR bits that decide the handshakes: tvalid when bits [2:0] are not all 0, tlast when bits
#: [13:8] are all 0, the sink's tready when bits [22:20] are not all 0.
SIG_BITS = 32


def lfsr_step(state: int) -> int:
    """One step of the LFSR (shift right, XOR the taps when the bit shifted out was 1)."""
    return (state >> 1) ^ (LFSR_TAPS if state & 1 else 0)


def fold_step(sig: int, beat: int, last: int, beat_bits: int) -> int:
    """The signature after one taken result beat: rotate left by one, XOR the beat's 32-bit words
    and ``tlast`` (bit 0)."""
    sig = ((sig << 1) | (sig >> (SIG_BITS - 1))) & 0xFFFF_FFFF
    for i in range(0, beat_bits, SIG_BITS):
        sig ^= (beat >> i) & 0xFFFF_FFFF
    return sig ^ last


def _lfsr(m: Module, name: str) -> Signal:
    s = Signal(32, init=LFSR_INIT, name=name)
    m.d.sync += s.eq(Cat(s[1:], Const(0, 1)) ^ (Const(LFSR_TAPS, 32) & s[0].replicate(32)))
    return s


class BeatSource(wiring.Component):
    """Pseudo-random sample beats on ``axis`` (``bits`` wide).  The beat's data is a shift register
    of LFSR words: each taken beat shifts one new 32-bit word in."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        super().__init__({"axis": Out(AXIStreamSignature(bits)), "lfsr": Out(32)})

    def elaborate(self, platform):
        m = Module()
        lfsr = _lfsr(m, "src_lfsr")
        words = -(-self.bits // 32)
        data = Signal(32 * words, reset_less=True, name="src_data")
        valid = Signal(name="src_valid")
        last = Signal(name="src_last")
        a = self.axis
        m.d.comb += [a.tdata.eq(data[:self.bits]), a.tvalid.eq(valid), a.tlast.eq(last), self.lfsr.eq(lfsr)]
        with m.If(~valid | a.tready):
            m.d.sync += [
                valid.eq(lfsr[0:3] != 0),
                last.eq(lfsr[8:14] == 0),
                data.eq(Cat(lfsr, data[:-32]) if words > 1 else lfsr),
            ]
        return m


class BeatSink(wiring.Component):
    """Takes result beats on ``axis`` with a pseudo-random ``tready`` (from ``lfsr``) and folds
    them into ``sig_word``; ``sig`` is the signature's top bit."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        super().__init__({"axis": In(AXIStreamSignature(bits)), "lfsr": In(32), "sig_word": Out(SIG_BITS),
                          "sig": Out(1)})

    def elaborate(self, platform):
        m = Module()
        a = self.axis
        ready = Signal(name="sink_ready")
        sig = Signal(SIG_BITS, name="sink_signature")
        m.d.sync += ready.eq(self.lfsr[20:23] != 0)
        words = [a.tdata[i:i + SIG_BITS] for i in range(0, self.bits, SIG_BITS)]
        folded = Cat(sig[-1], sig[:-1]) ^ Cat(a.tlast, Const(0, SIG_BITS - 1))
        for w in words:
            folded = folded ^ w
        m.d.comb += [a.tready.eq(ready), self.sig_word.eq(sig), self.sig.eq(sig[-1])]
        with m.If(a.tvalid & ready):
            m.d.sync += sig.eq(folded)
        return m


class StreamBenchTop(wiring.Component):
    """``mailpulse_spi``'s ports plus ``sig``: the streaming core between an on-chip beat source and
    sink (see the module's description), its register front end behind the SPI bridge.

    ``clk`` clocks everything; ``rst`` is an active-high synchronous reset.
    """

    def __init__(self, params: CoreParams) -> None:
        self.params = params
        self.core = ScorerCore(params)
        self.source = BeatSource(sample_beat_bits(params))
        self.sink = BeatSink(RESULT_BEAT_BITS)
        super().__init__({
            "clk": In(1),
            "rst": In(1),
            "spi": In(SPISignature()),
            "irq": Out(1),
            "sig": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = self.core
        regs = register_side(m, self, self.params, core)
        bridge = m.submodules.spi = SPIRegisterBridge()
        wiring.connect(m, bridge.bus, regs.bus)
        wiring.connect(m, wiring.flipped(self.spi), bridge.spi)

        src = m.submodules.source = self.source
        sin = m.submodules.s_axis = SampleFromAXIS(self.params)
        sout = m.submodules.m_axis = ResultToAXIS(self.params)
        sink = m.submodules.sink = self.sink
        wiring.connect(m, src.axis, sin.axis)
        wiring.connect(m, sin.o_stream, core.i_stream)
        wiring.connect(m, core.o_stream, sout.i_stream)
        wiring.connect(m, sout.axis, sink.axis)
        m.d.comb += [sink.lfsr.eq(src.lfsr), self.sig.eq(sink.sig)]
        return m
