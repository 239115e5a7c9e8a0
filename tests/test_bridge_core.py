"""host_bridge: stream layouts, the register protocol, the model backend and the SPI protocol
(against a byte-level model of the bridge), all compared with mailpulse.hdl.reference.score."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.hdl.reference import CoreConfig, EmulatedCore, score
from mailpulse.hdl.regmap import RegisterMap
from mailpulse.host_bridge.backends.ice40 import Ice40Scorer
from mailpulse.host_bridge.bus import EmulatedBus, group_bursts
from mailpulse.host_bridge.core import CoreClient, CoreMismatchError
from mailpulse.host_bridge.spi import (
    CMD_READ,
    CMD_WRITE,
    SYNC_BYTE,
    FakeSpiDev,
    SpiBridgeModel,
    SpiRegisterBus,
    SpiSyncError,
)
from mailpulse.host_bridge.streamfmt import pack_results, pack_samples, unpack_results, unpack_samples

from mailpulse.backends import open_scorer
from mailpulse.errors import UserError


def _same(a: Any, b: Any) -> None:
    for f in ("score", "anomaly", "argmax", "tag"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_sample_beat_layout_is_the_documented_one() -> None:
    p = get_params("small")
    x = np.array([[-1, 2, -32768, 32767, 0, 5, 6, 7]])
    beats = pack_samples(p, x, [0xDEADBEEF])
    raw = bytes(beats[0])
    assert len(raw) == 4 + 2 * p.d == 20                                    # dense: tag and D features
    assert raw[0:4] == (0xDEADBEEF).to_bytes(4, "little")                 # tdata[31:0] = tag
    assert raw[4:6] == (0xFFFF).to_bytes(2, "little")                     # feature 0 = -1
    assert raw[8:10] == (0x8000).to_bytes(2, "little")                    # feature 2 = -32768
    assert raw[18:20] == (7).to_bytes(2, "little")                        # feature 7, the last bytes
    xs, tags = unpack_samples(p, raw)
    assert xs.tolist() == x.tolist() and tags.tolist() == [0xDEADBEEF]


def test_result_beat_layout_and_misalignment_check() -> None:
    p = get_params("full")
    rng = np.random.default_rng(1)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(50, p.d))
    r = score(p, cfg, x, rng.integers(0, 1 << 32, size=50))
    beats = pack_results(r)
    w = beats.view("<u4")
    assert beats.shape == (50, 8)
    assert np.array_equal(w[:, 0], r.score | (r.argmax << 24) | (r.anomaly << 31)) and np.array_equal(w[:, 1], r.tag)
    _same(unpack_results(beats.tobytes()), r)
    _same(unpack_results(beats.tobytes(), params=p), r)
    bad = beats.copy()
    bad[3, 2] |= 0x80                     # score bit 23: more than the core's 20 score bits
    with pytest.raises(ValueError, match="misaligned"):
        unpack_results(bad, params=p)
    bad = beats.copy()
    bad[4, 3] = (bad[4, 3] & 0x80) | p.k  # argmax K
    with pytest.raises(ValueError, match="misaligned"):
        unpack_results(bad, params=p)


def test_sample_validation_never_truncates() -> None:
    p = get_params("small")
    with pytest.raises(ValueError, match="signed 16-bit"):
        pack_samples(p, np.full((1, p.d), 40000))
    with pytest.raises(ValueError, match="shape"):
        pack_samples(p, np.zeros((2, p.d + 1), dtype=int))
    with pytest.raises(ValueError, match="tags"):
        pack_samples(p, np.zeros((2, p.d), dtype=int), [1])
    with pytest.raises(ValueError, match="integers"):
        pack_samples(p, np.full((1, p.d), 0.5))


def test_group_bursts_merges_runs_in_order() -> None:
    runs = group_bursts([(0x300, 1), (0x304, 2), (0x100, 3), (0x108, 4), (0x10C, 5)], max_words=2)
    assert runs == [(0x300, [1, 2]), (0x100, [3]), (0x108, [4, 5])]


@pytest.mark.parametrize("pset", sorted(PARAMETER_SETS))
def test_model_backend_matches_reference(pset: str) -> None:
    p = get_params(pset)
    rng = np.random.default_rng(11)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(3000, p.d))
    tags = rng.integers(0, 1 << 32, size=3000)
    with open_scorer("model", p, batch_size=1000) as s:
        ident = s.identify()
        assert ident.params == p and ident.version[0] == 1
        s.load_model(cfg)
        _same(s.score_batch(x, tags), score(p, cfg, x, tags))
        assert s.score_one(x[5], int(tags[5])) == score(p, cfg, x[5:6], tags[5:6]).row(0)
        c = s.counters()
        assert c.samples == 3001
        s.set_threshold(0)
        assert s.score_one(x[0], 1)[1] == int(score(p, cfg, x[:1]).score[0] > 0)
    with pytest.raises(RuntimeError, match="closed"):
        s.score_batch(x)


def test_core_client_refuses_the_wrong_core() -> None:
    small, full = get_params("small"), get_params("full")
    client = CoreClient(EmulatedBus(EmulatedCore(small)), full)
    with pytest.raises(CoreMismatchError, match="expects set full"):
        client.identify()
    with pytest.raises(CoreMismatchError, match="does not fit"):
        CoreClient(EmulatedBus(EmulatedCore(small)), small).load_config(CoreConfig.zeros(full))


def test_model_load_writes_only_the_shadow_bank_until_commit() -> None:
    p = get_params("small")
    model = EmulatedCore(p)
    client = CoreClient(EmulatedBus(model), p)
    cfg = CoreConfig.random(p, np.random.default_rng(2))
    client.load_config(cfg, commit=False)
    assert int(model.active.tables.sum()) == 0                      # still the reset model
    client.commit()
    assert np.array_equal(model.active.tables, cfg.tables) and model.active.threshold == cfg.threshold


def test_spi_frames_are_the_documented_bytes() -> None:
    p = get_params("small")
    model = EmulatedCore(p)
    spi = FakeSpiDev(SpiBridgeModel(model).transfer, keep_log=True)
    spi.max_speed_hz = 8_000_000
    bus = SpiRegisterBus(spi)
    regmap = RegisterMap(p)
    bus.write_burst(regmap["OFFSET"].address(0), [0x01020304, 0xFFFFFFFF])
    mosi, miso = spi.log[-1]
    a = regmap["OFFSET"].address(0)
    assert mosi == bytes([CMD_WRITE, a >> 8, a & 0xFF, 1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF])
    assert miso[0] == SYNC_BYTE and miso[1:] == bytes(len(miso) - 1)
    assert bus.read_burst(regmap["ID"].address(), 2) == [0x4D504C53, regmap["VERSION"].reset]
    mosi, miso = spi.log[-1]
    assert mosi[:4] == bytes([CMD_READ, 0, 0, 0]) and len(mosi) == 12
    assert miso[4:8] == b"MPLS"
    assert model.shadow.offsets[1] == -1                                  # sign-extended field


def test_spi_detects_a_missing_fpga_and_splits_long_bursts() -> None:
    dead = FakeSpiDev(lambda mosi: bytes(len(mosi)))
    dead.max_speed_hz = 1_000_000
    with pytest.raises(SpiSyncError, match="0x00 instead of the sync byte"):
        SpiRegisterBus(dead).read(0)
    p = get_params("full")
    model = EmulatedCore(p)
    spi = FakeSpiDev(SpiBridgeModel(model).transfer, bufsiz=64, keep_log=True)
    spi.max_speed_hz = 1_000_000
    bus = SpiRegisterBus(spi, max_transfer=64)
    table = RegisterMap(p)["TABLE"]
    bus.write_burst(table.address(0), list(range(100)))
    assert all(len(m) <= 64 for m, _ in spi.log) and len(spi.log) == 7
    assert model.bank_tables[1][0, :64].tolist() == list(range(64))
    assert model.bank_tables[1][1, :36].tolist() == list(range(64, 100))


def test_a_host_without_routes_runs_on_the_boards_cores_with_them() -> None:
    """The HX8K and ECP5 bitstreams carry 16 route intervals: the SPI scorer of a node configured
    for ``full`` identifies such a core (the identity says R = 16), scores bit-exact and leaves the
    intervals off (no bound moves).  A client of a stream path (wider beats), a host that expects
    routes the core lacks, or another route count, is refused."""
    full, full_r16 = get_params("full"), get_params("full-r16")
    # what makes it safe: every register of the map without routes is in the map with them, at the
    # same address, with the same fields (the route fields are extra; PARAMS tells R)
    with_routes = {r.name: r for r in RegisterMap(full_r16).registers}
    for reg in RegisterMap(full).registers:
        other = with_routes[reg.name]
        layout = {(f.name, f.lsb, f.width) for f in reg.fields}
        assert other.address(0) == reg.address(0), reg.name
        assert layout <= {(f.name, f.lsb, f.width) for f in other.fields}, reg.name
    rng = np.random.default_rng(9)
    cfg = CoreConfig.random(full, rng)
    x = rng.integers(full.in_min, full.in_max + 1, size=(120, full.d))
    tags = rng.integers(0, 1 << 32, size=120)
    core = EmulatedCore(full_r16)
    bounds = RegisterMap(full_r16)["ROUTE_BOUND"]
    before = [core.read(bounds.address(i)) for i in range(2 * full_r16.r)]
    spi = FakeSpiDev(SpiBridgeModel(core).transfer)
    spi.max_speed_hz = 8_000_000
    with Ice40Scorer(full, spi=spi) as s:
        assert s.identify().params == full_r16
        s.load_model(cfg)
        _same(s.score_batch(x, tags), score(full, cfg, x, tags))
    assert [core.read(bounds.address(i)) for i in range(2 * full_r16.r)] == before
    with pytest.raises(CoreMismatchError, match=r"R=16, the host expects set full \(.*R=0\)"):
        CoreClient(EmulatedBus(EmulatedCore(full_r16)), full).identify()
    with pytest.raises(CoreMismatchError, match="R=0, the host expects set full-r16"):
        CoreClient(EmulatedBus(EmulatedCore(full)), full_r16, routes_optional=True).identify()
    with pytest.raises(CoreMismatchError, match="R=16, the host expects set full-r4"):
        CoreClient(EmulatedBus(EmulatedCore(full_r16)), get_params("full-r4"), routes_optional=True).identify()


@pytest.mark.parametrize("pset", ["small", "full"])
def test_ice40_backend_over_the_spi_protocol_matches_reference(pset: str) -> None:
    p = get_params(pset)
    rng = np.random.default_rng(5)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(200, p.d))
    tags = rng.integers(0, 1 << 32, size=200)
    spi = FakeSpiDev(SpiBridgeModel(EmulatedCore(p)).transfer)
    spi.max_speed_hz = 8_000_000
    with Ice40Scorer(p, spi=spi) as s:
        assert s.identify().params == p
        s.load_model(cfg)
        _same(s.score_batch(x, tags), score(p, cfg, x, tags))
        assert s.counters().samples == 200


def test_unknown_backend_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown scorer backend"):
        open_scorer("gpu", "small")


def test_push_never_returns_a_stale_result() -> None:
    """A core whose RESULT_* lag behind PUSH until STATUS says valid: same tags twice, then a new one."""
    p = get_params("small")
    regmap = RegisterMap(p)

    class LaggyBus(EmulatedBus):
        def __init__(self, model: EmulatedCore) -> None:
            super().__init__(model)
            self.stale: dict[int, int] | None = None
            self.status_reads = 0

        def write(self, address: int, value: int) -> None:
            if address == regmap["PUSH"].address():
                self.stale = {a: self.model.read(a) for a in range(regmap["RESULT_SCORE"].address(),
                                                                   regmap["RESULT_INFO"].address() + 4, 4)}
            super().write(address, value)

        def read(self, address: int) -> int:
            if address == regmap["STATUS"].address():
                self.status_reads += 1
                self.stale = None
            if self.stale is not None and address in self.stale:
                return self.stale[address]
            return super().read(address)

    model = EmulatedCore(p)
    bus = LaggyBus(model)
    client = CoreClient(bus, p)
    client.results_settle = True              # the fast path, whose fallbacks are under test here
    cfg = CoreConfig.random(p, np.random.default_rng(4))
    client.load_config(cfg)
    x = np.random.default_rng(4).integers(p.in_min, p.in_max + 1, size=(3, p.d))
    tags = np.array([5, 5, 6])
    bus.status_reads = 0
    got = client.push_many(x, tags)
    want = score(p, cfg, x, tags)
    assert got[:, 0].tolist() == want.score.tolist() and got[:, 3].tolist() == [5, 5, 6]
    assert bus.status_reads == 3              # every stale read was caught and retried after a poll
