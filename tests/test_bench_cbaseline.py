"""The C++ baseline of ``bench/bench_fmax.py`` (``bench/c/score.cpp``, built with ``g++ -O3
-march=native``) is bit-exact with the reference model: its result beats equal the model's, byte
for byte, on random samples of every parameter set (on one thread and on two), adversarial
configurations included.  Skips only when g++ is absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig
from mailpulse.sim.codec import random_samples

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _cbaseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailpulse_bench_cbaseline", BENCH / "cbaseline.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cb() -> ModuleType:
    mod = _cbaseline()
    try:
        mod.compiler()
    except mod.ToolMissing as e:
        pytest.skip(str(e))
    return mod


@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
def test_c_baseline_is_bit_exact(cb: ModuleType, name: str, tmp_path: Path) -> None:
    p = get_params(name)
    lib = cb.CBaseline.build(p, tmp_path)
    rng = np.random.default_rng(7)
    for cfg in (CoreConfig.random(p, rng), _extreme(p, rng)):
        x, tags = random_samples(p, rng, 3000)
        lib.check(cfg, x, tags)


def test_c_baseline_refuses_a_foreign_parameter_set(cb: ModuleType, tmp_path: Path) -> None:
    p = get_params("small")
    lib = cb.CBaseline.build(p, tmp_path)
    with pytest.raises(ValueError, match="shape"):
        lib.score(np.zeros((4, 32), dtype=np.uint8), CoreConfig.random(p, np.random.default_rng(1)))


def _extreme(p: CoreParams, rng: np.random.Generator) -> CoreConfig:
    """All weights at their most negative, offsets at the ends, shifts 0 and the largest, full
    tables with ties (the argmax's lowest index), threshold at the largest score."""
    cfg = CoreConfig.random(p, rng)
    cfg.weights[:] = p.weight_min
    cfg.offsets[::2] = p.offset_min
    cfg.offsets[1::2] = p.offset_max
    cfg.shifts[::3] = 0
    cfg.shifts[1::3] = p.shift_max
    cfg.tables[:] = p.table_max
    cfg.tables[:, ::2] = rng.integers(0, p.table_max + 1, size=cfg.tables[:, ::2].shape)
    cfg.threshold = p.table_max * p.k - 1
    return cfg
