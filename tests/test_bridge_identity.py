"""The cross-backend contract a user can run: ``mailpulse score`` gives identical integers through
the simulated RTL and through the reference model, on every parameter set; plus the command's
file handling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mailpulse.hdl.params import PARAMETER_SETS, get_params
from mailpulse.hdl.reference import CoreConfig, score
from mailpulse.host_bridge.data import save_core_config
from mailpulse.sim.tools import have_simulator

from mailpulse import modelfile
from mailpulse.backends import score_file
from mailpulse.cli import main

N = int(os.environ.get("MAILPULSE_IDENTITY_SAMPLES", "48"))
#: Icarus by default: it compiles a new parameter set in seconds, Verilator needs minutes per set.
SIMULATOR = os.environ.get("MAILPULSE_IDENTITY_SIM", "icarus")


def _files(tmp: Path, pset: str, n: int, seed: int = 9) -> tuple[Path, Path, CoreConfig, np.ndarray, np.ndarray]:
    p = get_params(pset)
    rng = np.random.default_rng(seed)
    cfg = CoreConfig.random(p, rng)
    x = rng.integers(p.in_min, p.in_max + 1, size=(n, p.d)).astype(np.int16)
    tags = rng.integers(0, 1 << 32, size=n)
    model = save_core_config(tmp / f"{pset}_model.npz", p, cfg)
    data = tmp / f"{pset}_data.npz"
    np.savez(data, x=x, tags=tags)
    return model, data, cfg, x, tags


@pytest.mark.xdist_group("rtl_identity")
@pytest.mark.parametrize("pset", sorted(PARAMETER_SETS))
def test_sim_and_model_scores_are_identical(pset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cocotb", reason="cocotb is not installed")

    if not have_simulator(SIMULATOR):
        pytest.skip(f"{SIMULATOR} is not installed")
    model, data, cfg, x, tags = _files(tmp_path, pset, N)
    outs = {}
    for backend in ("model", "sim"):
        out = tmp_path / f"{backend}.csv"
        extra = ["--simulator", SIMULATOR] if backend == "sim" else []
        assert main(["score", "--backend", backend, "--model", str(model), "--data", str(data),
                     "--out", str(out), *extra]) == 0, capsys.readouterr().err
        outs[backend] = out.read_text()
    assert outs["sim"] == outs["model"]
    rows = [line.split(",") for line in outs["model"].splitlines()[1:]]
    want = score(get_params(pset), cfg, x, tags)
    assert [int(r[1]) for r in rows] == want.score.tolist()
    assert [int(r[0]) for r in rows] == want.tag.tolist()


def test_score_reads_jsonl_and_npz_and_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data, _cfg, x, tags = _files(tmp_path, "small", 20)
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"x": [int(v) for v in row], "tag": int(t)}) for row, t in zip(x, tags)))
    a = score_file("model", model, data)
    b = score_file("model", model, jl)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.tag, b.tag)
    assert main(["score", "--backend", "model", "--model", str(model), "--data", str(jl), "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tag,score,anomaly,argmax" and len(out) == 4
    floats = tmp_path / "f.jsonl"
    floats.write_text(json.dumps({"x": [0.5] * 8}) + "\n")
    assert main(["score", "--backend", "model", "--model", str(model), "--data", str(floats)]) == 2
    assert "input scaling" in capsys.readouterr().err
    assert main(["score", "--backend", "model", "--model", str(model), "--data", str(tmp_path / "nope.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", "--backend", "model", "--model", str(model), "--data", str(data), "--params", "full"]) == 2
    assert "parameter set small" in capsys.readouterr().err


def test_score_with_a_trained_model_file_uses_its_input_scaling(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    p = get_params("small")
    rng = np.random.default_rng(12)
    cfg = CoreConfig.random(p, rng)
    scaling = modelfile.InputScaling(center=[0.5] * 6 + [0.0] * 2, scale=[3000.0] * 6 + [0.0] * 2, n_features=6)
    model = modelfile.TrainedModel(params=p, feature_schema="odds", scaling=scaling, weights=cfg.weights,
                            offsets=cfg.offsets, shifts=cfg.shifts, tables=cfg.tables, threshold=cfg.threshold,
                            reference_tables=cfg.tables.astype(float), table_scale=1.0)
    path = model.save(tmp_path / "m.json")
    x = rng.random((30, 6))
    data = tmp_path / "odds.npz"
    np.savez(data, X=x, y=np.zeros(30, dtype=np.int64))
    assert main(["score", "--backend", "model", "--model", str(path), "--data", str(data)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    want = score(p, cfg, model.scale(x))
    assert [int(r.split(",")[1]) for r in rows] == want.score.tolist()
    assert [int(r.split(",")[0]) for r in rows] == list(range(30))
