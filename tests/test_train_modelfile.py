"""The model file: round trip, every kind of broken file, parameter mismatch, input scaling, and the
wide-input transform (its integer arithmetic, its fields, a wide model's round trip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mailpulse.collector.trainer import train
from mailpulse.hdl import reference as hm
from mailpulse.hdl.params import CoreParams, get_params

from mailpulse.datasets import Dataset
from mailpulse.errors import UserError
from mailpulse.modelfile import FORMAT_VERSION, InputScaling, TrainedModel, _checksum, load_model, scale_features
from mailpulse.transform import L_MAX, UNIT, RowTable, WideTransform, cauchy_energy, group_shift, log2fix


def _data(n: int = 3000, f: int = 4, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) @ rng.normal(size=(f, f))
    x[:20] += 6.0
    y = np.zeros(n, dtype=np.int64)
    y[:20] = 1
    return Dataset(x, y, "synthetic", "0" * 64)


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train(_data(), get_params("small"), seed=3).model


def _doc(m: TrainedModel) -> dict:
    return json.loads(m.to_bytes())


def _rewrite(doc: dict, **changes: object) -> bytes:
    """A document with fields changed and the checksum recomputed (a 'valid' but wrong file)."""
    doc = {**doc, **changes}
    doc["checksum"] = "sha256:" + _checksum(doc)
    return json.dumps(doc).encode()


def test_round_trip_file(model: TrainedModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "m.json")
    back = load_model(path)
    assert back.params == model.params
    assert back.feature_schema == model.feature_schema == "odds"
    for name in ("weights", "offsets", "shifts", "tables", "reference_tables"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert back.threshold == model.threshold
    assert back.scaling == model.scaling
    assert back.provenance == model.provenance
    assert back.to_bytes() == model.to_bytes()
    x = _data(200, seed=9).X
    cfg = back.core_config()
    assert np.array_equal(hm.score(back.params, cfg, back.scale(x)).score,
                          hm.score(model.params, model.core_config(), model.scale(x)).score)
    # the quantised tables are the rounded float reference
    np.testing.assert_array_equal(back.tables, np.rint(back.reference_tables * back.table_scale))


def test_load_from_bytes(model: TrainedModel) -> None:
    assert load_model(model.to_bytes()).threshold == model.threshold


def test_size_is_modest_for_zynq() -> None:
    m = train(_data(2000, 3), get_params("zynq"), seed=0).model
    assert len(m.to_bytes()) < 200_000
    assert load_model(m.to_bytes()).params.name == "zynq"


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_truncated(model: TrainedModel, cut: float) -> None:
    raw = model.to_bytes()
    with pytest.raises(UserError, match="not valid JSON"):
        load_model(raw[: int(len(raw) * cut)])


def test_corrupt_bytes(model: TrainedModel) -> None:
    raw = bytearray(model.to_bytes())
    with pytest.raises(UserError, match=r"JSON|UTF-8"):
        load_model(bytes(raw[:100]) + b"\xff\x00garbage" + bytes(raw[100:]))


def test_bad_checksum_on_changed_value(model: TrainedModel) -> None:
    doc = _doc(model)
    doc["tables"][0][0] += 1
    with pytest.raises(UserError, match="checksum"):
        load_model(json.dumps(doc).encode())
    doc = _doc(model)
    doc["checksum"] = "sha256:" + "0" * 64
    with pytest.raises(UserError, match="checksum"):
        load_model(json.dumps(doc).encode())


def test_not_a_model_and_wrong_version(model: TrainedModel) -> None:
    with pytest.raises(UserError, match="not a mailpulse model"):
        load_model(b'{"format": "something-else"}')
    with pytest.raises(UserError, match="not a mailpulse model"):
        load_model(b"[1, 2, 3]")
    with pytest.raises(UserError, match="format version 99"):
        load_model(_rewrite(_doc(model), format_version=99))
    assert FORMAT_VERSION == 2
    # version 1 (before the wide-input transform, never released): one sentence that says what to do
    old = {k: v for k, v in _doc(model).items() if k != "transform"}
    with pytest.raises(UserError, match=r"format version 1, from before wide-input transforms.*retrain"):
        load_model(_rewrite(old, format_version=1))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read model file"):
        load_model(tmp_path / "absent.json")


def test_out_of_range_values_are_refused(model: TrainedModel) -> None:
    doc = _doc(model)
    w = [row[:] for row in doc["weights"]]
    w[0][0] = 3                     # 2-bit signed weights are -2..1
    with pytest.raises(UserError, match="weights holds 3"):
        load_model(_rewrite(doc, weights=w))
    t = [row[:] for row in doc["tables"]]
    t[1][2] = 70000
    with pytest.raises(UserError, match="tables holds 70000"):
        load_model(_rewrite(doc, tables=t))
    with pytest.raises(UserError, match="shifts"):
        load_model(_rewrite(doc, shifts=[40] * len(doc["shifts"])))
    with pytest.raises(UserError, match="threshold"):
        load_model(_rewrite(doc, threshold=-1))
    with pytest.raises(UserError, match="threshold must be an integer"):
        load_model(_rewrite(doc, threshold=1.5))
    with pytest.raises(UserError, match="missing"):
        load_model(_rewrite({k: v for k, v in doc.items() if k != "offsets"}))


def test_parameter_mismatch(model: TrainedModel) -> None:
    doc = _doc(model)
    # tables for K=8 declared as the full set (K=16): does not fit the core
    full = get_params("full").as_dict()
    with pytest.raises(UserError, match="shape"):
        load_model(_rewrite(doc, parameter_set="full", params=full))
    # a known set name with other dimensions
    fake = CoreParams("full", d=8, k=8, b=64).as_dict()
    with pytest.raises(UserError, match="not those of the parameter set 'full'"):
        load_model(_rewrite(doc, parameter_set="full", params=fake))
    # widths that this version would not derive
    bad = dict(doc["params"], proj_bits=30)
    with pytest.raises(UserError, match="widths"):
        load_model(_rewrite(doc, params=bad))
    # what a backend does with the read-back parameters of the bitstream
    model.check_against(get_params("small"))
    model.check_against(get_params("small-r4"))        # route intervals hold no model registers
    with pytest.raises(UserError, match=r"trained for parameter set 'small'.*'zynq'"):
        model.check_against(get_params("zynq"))
    with pytest.raises(UserError, match=r"trained for parameter set 'small'.*'full-r16'"):
        model.check_against(get_params("full-r16"))


def test_scale_features_contract() -> None:
    p = get_params("full")
    sc = InputScaling([1.0, -2.0] + [0.0] * 6, [10.0, 0.5] + [0.0] * 6, 2)
    x = np.array([[1.0, -2.0], [1.04, 0.0], [1.06, 1.0], [1e9, -1e9]])
    q = scale_features(sc, x, p)
    assert q.shape == (4, 8) and q.dtype == np.int64
    assert q[:, 2:].max() == 0 and q[:, 2:].min() == 0
    assert q[0, :2].tolist() == [0, 0]
    assert q[1, :2].tolist() == [0, 1]      # rint(0.4) = 0, 2 * 0.5 = 1
    assert q[2, :2].tolist() == [1, 2]      # rint(0.6) = 1 (ties to even elsewhere)
    assert q[3, :2].tolist() == [32767, -32768]
    with pytest.raises(UserError, match="expects 2 features"):
        scale_features(sc, np.zeros((3, 3)), p)
    with pytest.raises(UserError, match="NaN"):
        scale_features(sc, np.array([[np.nan, 0.0]]), p)


# -- the wide-input transform ------------------------------------------------------------------

def _wide(n: int = 2500, f: int = 13, seed: int = 5) -> Dataset:
    """Correlated features, a few rows that break the correlation, one constant column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) @ rng.normal(size=(4, f)) + 0.3 * rng.normal(size=(n, f))
    x[:, 5] = 7.0
    y = np.zeros(n, dtype=np.int64)
    y[:15] = 1
    x[:15, 0] += 4.0 * x[:15, 1].std()
    return Dataset(x * 100.0 + 3.0, y, "wide", "1" * 64)


@pytest.fixture(scope="module")
def wide_model() -> TrainedModel:
    return train(_wide(), get_params("small"), seed=2).model


def test_log2fix_and_cauchy_energy_are_exact_integers() -> None:
    powers = np.array([1 << e for e in range(40)], dtype=np.int64)
    assert log2fix(powers).tolist() == [e << 8 for e in range(40)]          # exact at powers of two
    v = np.arange(1, 70_000, dtype=np.int64)
    lv = log2fix(v)
    assert np.all(np.diff(lv) >= 0)                                           # monotone
    assert np.max(np.abs(lv / 256.0 - np.log2(v))) < 0.09                     # linear between powers
    assert lv[2] == 256 + 128                                                 # log2fix(3) = 1 + 1/2
    r = np.array([0, UNIT, -UNIT, 32767, -32767])
    assert cauchy_energy(r).tolist()[:3] == [0, 256, 256]                     # log2(1 + 1) = 1
    assert cauchy_energy(r).max() <= 15 << 8
    assert group_shift(8) == 0 and group_shift(9) == 1 and group_shift(100) == 4
    with pytest.raises(ValueError):
        log2fix([0])


def test_transform_arithmetic_by_hand() -> None:
    t = WideTransform(center=[1.0, 0.0, -1.0], scale=[256.0, 512.0, 0.0],
                      rows=np.array([[1 << 4, 0, 0], [0, 1 << 4, 0], [1 << 4, -(1 << 4), 0]]), row_shift=4,
                      row_center=[0, 0, 10], groups=[[0, 1], [2], [], [0], [1], [2], [0, 2], []],
                      out_shift=[0] * 8)
    t.validate(8)
    x = np.array([[2.0, 0.5, 99.0], [1.0, 0.0, 5.0]])
    z = t.features_to_int(x)
    assert z.tolist() == [[256, 256, 0], [0, 0, 0]]
    r = t.rows_of(z)
    assert r.tolist() == [[256, 256, -10], [0, 0, -10]]
    e = cauchy_energy(r)
    out = t.apply(x)
    assert out.tolist()[0] == [512, int(e[0, 2]), 0, 256, 256, int(e[0, 2]), 256 + int(e[0, 2]), 0]
    assert out.tolist()[1] == [0, int(e[1, 2]), 0, 0, 0, int(e[1, 2]), int(e[1, 2]), 0]
    with pytest.raises(UserError, match="expects 3 features"):
        t.apply(np.zeros((2, 4)))
    with pytest.raises(UserError, match="NaN"):
        t.apply(np.array([[np.nan, 0.0, 0.0]]))


def test_row_table_energy_by_hand() -> None:
    """Table inside the window, table edge plus the Cauchy energy of the distance beyond it."""
    rt = RowTable(offset=-128, shift=6, table=[300, 0, 100, 700])           # window -128..127
    assert rt.end == 127
    r = np.array([-128, -65, -64, 0, 63, 64, 127, 128, 127 + UNIT, -128 - UNIT, -32767, 32767])
    want = [300, 300, 0, 100, 100, 700, 700, 700 + 0, 700 + 256, 300 + 256,
            300 + int(cauchy_energy(np.array([32767 - 128]))[0]), 700 + int(cauchy_energy(np.array([32767 - 127]))[0])]
    assert rt.energy(r).tolist() == want
    assert rt.energy(r).max() <= 2 * L_MAX
    t = WideTransform(center=[0.0, 0.0], scale=[1.0, 1.0], rows=np.array([[1, 0], [0, 1]]), row_shift=0,
                      row_center=[0, 0], groups=[[0, 1], [0], [1], [], [], [], [], []], out_shift=[0] * 8,
                      row_tables=[rt, None])
    t.validate(8)
    out = t.apply(np.array([[64.0, 256.0], [-300.0, 0.0]]))
    e300 = 300 + int(cauchy_energy(np.array([300 - 128]))[0])
    assert out.tolist() == [[700 + 256, 700, 256, 0, 0, 0, 0, 0], [e300, e300, 0, 0, 0, 0, 0, 0]]
    # a row with a table counts twice toward the shift that keeps a channel in 16 bits
    assert t.group_weight([0, 1]) == 3 and t.group_weight([1]) == 1
    with pytest.raises(ValueError, match="cannot hold a group"):
        WideTransform([0.0] * 2, [1.0] * 2, np.array([[1, 0], [0, 1]]), 0, [0, 0], [[0, 0, 0, 0, 0]] + [[]] * 7,
                      [0] * 8, row_tables=[rt, None]).validate(8)


def test_transform_row_sums_are_exact_at_the_extremes() -> None:
    """float64 accumulation of integer products is exact: compare with Python integers."""
    rng = np.random.default_rng(0)
    f = 300
    rows = rng.integers(-(1 << 20), (1 << 20) + 1, size=(5, f))
    z = rng.choice([-32767, 32767, -32766, 32765, 1, -1], size=(50, f))
    t = WideTransform([0.0] * f, [1.0] * f, rows, 20, [0] * 5, [[0]] * 8, [0] * 8)
    got = t.rows_of(z)
    want = [[max(-32767, min(32767, sum(int(a) * int(b) for a, b in zip(zr, row)) >> 20)) for row in rows]
            for zr in z]
    assert got.tolist() == want


def test_wide_model_round_trip_and_inputs(wide_model: TrainedModel, tmp_path: Path) -> None:
    m = wide_model
    assert m.transform is not None and m.n_features == 13
    assert m.scaling == InputScaling.identity(8)
    assert m.provenance["inputs"] == "13 features -> 8 energy channels"
    tables = m.transform.row_tables
    assert tables is not None and sum(t is not None for t in tables) == 12        # the 12 varying features
    assert _doc(m)["transform"]["kind"] == "energy-tables"
    back = load_model(m.save(tmp_path / "w.json"))
    assert back.transform == m.transform and back.to_bytes() == m.to_bytes()
    x = _wide(400, seed=9).X
    xq = back.scale(x)
    assert np.array_equal(xq, m.transform.apply(x)) and xq.shape == (400, 8)
    assert xq.min() >= 0 and xq.max() <= 32767
    assert np.array_equal(hm.score(back.params, back.core_config(), xq).score,
                          hm.score(m.params, m.core_config(), m.scale(x)).score)
    with pytest.raises(UserError, match="expects 13 features per sample, the data has 8"):
        back.scale(np.zeros((2, 8)))


def test_bad_transform_fields_are_refused(wide_model: TrainedModel) -> None:
    doc = _doc(wide_model)
    tr = doc["transform"]

    def bad(match: str, **change: object) -> None:
        with pytest.raises(UserError, match=match):
            load_model(_rewrite(doc, transform={**tr, **change}))

    bad("kind 'pca' is unknown", kind="pca")
    bad("beyond 2\\*\\*20", rows=[[1 << 21, *r[1:]] for r in tr["rows"]])
    bad("rows must hold integers", rows=[[0.5, *r[1:]] for r in tr["rows"]])
    bad("names a row outside", groups=[[10000], *tr["groups"][1:]])
    bad("cannot hold a group", out_shift=[0] * 8, groups=[list(range(len(tr["rows"])))] * 8)
    bad("needs 8 groups", groups=tr["groups"][:7])
    bad("row_center", row_center=tr["row_center"][:-1])
    bad("same length", scale=tr["scale"][:-1])
    bad("row_shift", row_shift=25)
    bad("needs 2 entries|row_tables needs", row_tables=tr["row_tables"][:-1])
    first = tr["row_tables"][0]
    bad("values must be within", row_tables=[{**first, "table": [L_MAX + 1] * len(first["table"])},
                                             *tr["row_tables"][1:]])
    bad("window", row_tables=[{**first, "offset": 32767}, *tr["row_tables"][1:]])
    bad("row table must be an object", row_tables=[[1, 2], *tr["row_tables"][1:]])
    bad("row table must hold integers|row table offset must hold integers",
        row_tables=[{**first, "offset": 0.5}, *tr["row_tables"][1:]])
    # a transform without tables (the Cauchy energy on every row) still loads
    plain = {k: v for k, v in tr.items() if k != "row_tables"}
    m = load_model(_rewrite(doc, transform={**plain, "kind": "energy-groups",
                                            "out_shift": [group_shift(len(g)) for g in tr["groups"]]}))
    assert m.transform is not None and m.transform.row_tables is None
    with pytest.raises(UserError, match="identity input_scaling"):
        load_model(_rewrite(doc, input_scaling=InputScaling.identity(8, 7).as_dict()))
    with pytest.raises(UserError, match="transform is not an object"):
        load_model(_rewrite(doc, transform=[1, 2]))
    with pytest.raises(UserError, match="row_center must hold integers"):
        load_model(_rewrite(doc, transform={**tr, "row_center": [0.5] * len(tr["row_center"])}))
