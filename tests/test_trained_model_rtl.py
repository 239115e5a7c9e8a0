"""A model trained on real data gives the same integers through the evaluation, the model backend and
the RTL under simulation: all three compute the same integer scores for a trained model, narrow
(mammography, 6 features) and wide (cardio, 21 features through the model's wide-input transform,
applied on the host)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mailpulse.collector import trainer
from mailpulse.hdl.params import get_params
from mailpulse.sim.tools import have_simulator

from mailpulse.cli import main
from mailpulse.datasets import load_dataset

SIMULATOR = os.environ.get("MAILPULSE_IDENTITY_SIM", "icarus")
ROWS = int(os.environ.get("MAILPULSE_TRAINED_RTL_ROWS", "160"))


def score_both_backends(tmp_path: Path, model_path: Path, data: Path,
                        capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    """``mailpulse score`` with the model backend and with the RTL in the simulator: the two CSVs
    are identical; the rows (after the header) split at commas."""
    outs = {}
    for backend in ("model", "sim"):
        out = tmp_path / f"{backend}.csv"
        extra = ["--simulator", SIMULATOR] if backend == "sim" else []
        assert main(["score", "--backend", backend, "--model", str(model_path), "--data", str(data),
                     "--out", str(out), *extra]) == 0, capsys.readouterr().err
        outs[backend] = out.read_text()
    assert outs["sim"] == outs["model"]
    return [line.split(",") for line in outs["model"].splitlines()[1:]]


@pytest.mark.xdist_group("rtl_identity")
@pytest.mark.parametrize(("data_file", "wide"), [("odds/mammography.mat", False), ("adbench/cardio.npz", True)])
def test_trained_model_scores_identically_in_evaluation_model_backend_and_rtl(
        data_file: str, wide: bool, repo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cocotb", reason="cocotb is not installed")

    if not have_simulator(SIMULATOR):
        pytest.skip(f"{SIMULATOR} is not installed")
    p = get_params("full")
    data = load_dataset(repo_data / data_file)
    result = trainer.train(data, p, seed=3)
    assert (result.model.transform is not None) == wide
    model_path = result.model.save(tmp_path / "model_full.json")
    # The rows to score: every anomaly among the first rows plus normal ones, inputs as raw floats.
    assert data.y is not None
    anomalous = np.flatnonzero(data.y == 1)[: ROWS // 4]
    normal = np.flatnonzero(data.y == 0)[: ROWS - len(anomalous)]
    rows = np.sort(np.concatenate([anomalous, normal]))
    sub = tmp_path / "rows.npz"
    np.savez(sub, X=data.X[rows], y=data.y[rows])
    table = score_both_backends(tmp_path, model_path, sub, capsys)
    assert [int(r[1]) for r in table] == result.score_quantised[rows].tolist()
    assert [int(r[2]) for r in table] == (result.score_quantised[rows] > result.model.threshold).astype(int).tolist()
    assert sum(int(r[2]) for r in table) > 0, "no flagged row: the check would not see a wrong flag"
