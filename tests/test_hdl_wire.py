"""The wire protocols declared once in hdl/beats.py and hdl/spiproto.py: the declarations are
consistent, docs/interfaces.md states them, and the gateware's ports are as wide as the beats."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from mailpulse.hdl import spiproto
from mailpulse.hdl.beats import MAX_STREAM_FEATURES, RESULT_BEAT, BeatField, BeatLayout, sample_beat, sample_bytes
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "interfaces.md").read_text()


def _doc_range(lo: int, hi: int) -> str:
    return f"`tdata[{hi - 1}:{lo}]`" if hi - lo > 1 else f"`tdata[{lo}]`"


def test_docs_state_the_declared_beats() -> None:
    p = PARAMETER_SETS["full"]
    tag = sample_beat(p)["tag"]
    feats = sample_beat(p)["features"]
    assert _doc_range(tag.lsb, tag.lsb + tag.width) + " = tag" in DOC
    assert f"`tdata[{feats.lsb}+{feats.width}d+{feats.width - 1} : {feats.lsb}+{feats.width}d]` = feature d" in DOC
    for f in RESULT_BEAT.fields:
        assert _doc_range(f.lsb, f.lsb + f.width) + " = " in DOC, f.name
    assert f"`s_axis`, {sample_beat(p).bits} bits" in DOC and f"`m_axis`, {RESULT_BEAT.bits} bits" in DOC


def test_docs_state_the_spi_frame() -> None:
    assert f"`0x{spiproto.CMD_WRITE:02X}` write, `0x{spiproto.CMD_READ:02X}` read" in DOC
    assert f"`0x{spiproto.SYNC_BYTE:02X}` (sync" in DOC
    assert re.search(rf"\| read: {spiproto.READ_HEADER_BYTES}\.\. \|", DOC)
    assert re.search(rf"\| write: {spiproto.WRITE_HEADER_BYTES}\.\. \|", DOC)


def test_spi_frames() -> None:
    assert spiproto.write_frame(0x8004, [1, 0xFFFFFFFF]) == bytes([0x02, 0x80, 0x04, 0, 0, 0, 1, 255, 255, 255, 255])
    assert spiproto.read_frame(0x18, 2) == bytes([0x0B, 0, 0x18]) + bytes(9)
    miso = bytes([0xA5, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4])
    assert spiproto.read_words(miso) == [7, 0x01020304] and spiproto.read_words(miso, 1) == [7]
    with pytest.raises(ValueError, match="needs 16 MISO bytes"):
        spiproto.read_words(miso, 3)


def test_layouts_round_trip_and_refuse_bad_declarations() -> None:
    p = PARAMETER_SETS["zynq"]
    lay = sample_beat(p)
    rng = np.random.default_rng(1)
    x = rng.integers(p.in_min, p.in_max + 1, size=(50, p.d))
    t = rng.integers(0, 1 << 32, size=50)
    beats = lay.pack(50, {"tag": t, "features": x})
    assert beats.shape == (50, sample_bytes(p)) == (50, 20) and not lay.stray(beats).any()
    assert lay.used_mask == (1 << lay.bits) - 1 and RESULT_BEAT.used_mask == (1 << 64) - 1, "dense beats"
    assert (lay.get(beats, "features") == x).all() and (lay.get(beats, "tag") == t).all()
    assert (lay.view(beats, "features") == x).all(), "a byte-aligned field is a view"
    score = rng.integers(0, 1 << p.score_bits, size=3)
    res = RESULT_BEAT.pack(3, {"score": score, "anomaly": [1, 0, 1], "argmax": [5, 6, 63], "tag": [1, 2, 0xFFFFFFFF]})
    assert RESULT_BEAT.get(res, "anomaly").tolist() == [1, 0, 1] and RESULT_BEAT.stray_bits(res) == 0
    assert RESULT_BEAT.get(res, "score").tolist() == score.tolist()
    assert RESULT_BEAT.get(res, "argmax").tolist() == [5, 6, 63]
    w = res.view("<u4")
    assert w[:, 0].tolist() == [int(s) | a << 24 | f << 31 for s, a, f in zip(score, [5, 6, 63], [1, 0, 1])]
    assert w[:, 1].tolist() == [1, 2, 0xFFFFFFFF]
    odd = sample_beat(CoreParams("odd", d=15, k=2, b=4))         # 272 bits, 34 bytes: not a multiple of 4
    xo = rng.integers(-32768, 32768, size=(5, 15))
    ob = odd.pack(5, {"features": xo, "tag": [7] * 5})
    assert ob.shape == (5, 34) and (odd.get(ob, "features") == xo).all() and (odd.view(ob, "tag") == 7).all()
    assert MAX_STREAM_FEATURES == 16
    with pytest.raises(ValueError, match="overlap"):
        BeatLayout("x", 64, (BeatField("a", 0, 32, ""), BeatField("b", 16, 32, "")))
    with pytest.raises(ValueError, match="at most 56 bits"):
        BeatLayout("x", 128, (BeatField("a", 4, 60, ""),))


def test_contracts_and_their_users_import_no_amaranth() -> None:
    """The contracts layer is pure Python, and the simulation's codec/device/bulk harness and the
    host bridge's wire modules take the protocols from it without importing Amaranth."""
    import subprocess
    import sys

    mods = ["mailpulse.hdl.params", "mailpulse.hdl.regmap", "mailpulse.hdl.beats", "mailpulse.hdl.spiproto",
            "mailpulse.hdl.plan", "mailpulse.hdl.reference", "mailpulse.hdl.reports", "mailpulse.sim.codec",
            "mailpulse.sim.device", "mailpulse.sim.bulk", "mailpulse.host_bridge.spi",
            "mailpulse.host_bridge.streamfmt"]
    code = ("import importlib, sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'amaranth' or name.startswith('amaranth.'):\n"
            "            raise ImportError('amaranth imported')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
