"""The model file: round trip, every kind of broken file, parameter mismatch, input scaling."""

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
    assert FORMAT_VERSION == 1


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
    with pytest.raises(UserError, match=r"trained for parameter set 'small'.*'zynq'"):
        model.check_against(get_params("zynq"))


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
