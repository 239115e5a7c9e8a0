"""The files ``mailpulse score`` reads: sample files, turned into the core's fixed-point input, and
model files (a trained model file, or a raw register image).

Formats (by suffix):

* ``.npz`` - array ``X`` (read by ``mailpulse.datasets``, the trainer's reader) or ``x``;
  optional ``tags`` (N,).
* ``.mat`` - ODDS layout ``X`` (``mailpulse.datasets``; MATLAB 7.3 files too).
* ``.jsonl`` / ``.json`` - one JSON object per line: ``{"x": [...], "tag": 7}`` (``features`` is
  accepted for ``x``), or a bare list of numbers.

With a model file (``mailpulse.modelfile.TrainedModel``) samples always go through its input path
(``TrainedModel.scale``: raw features to the core's signed 16-bit inputs, through the model's
wide-input transform first when it was trained on more than D features).  With a raw register image
(no scaling), integer data in the signed 16-bit range is used as is and anything else is an
error - never a silent rounding.

A raw register image (``.npz`` with ``weights``, ``offsets``, ``shifts``, ``tables``, ``threshold``,
``params``; :func:`save_core_config`) is for bring-up and tests; trained models use
:mod:`mailpulse.modelfile`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import CoreParams, get_params
from mailpulse.hdl.reference import CoreConfig

from mailpulse.datasets import load_dataset
from mailpulse.errors import UserError
from mailpulse.modelfile import load_model

FloatOrInt = npt.NDArray[Any]


def _read_own(path: Path) -> tuple[FloatOrInt, npt.NDArray[np.int64] | None]:
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return np.asarray(load_dataset(path).X), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            tags = np.asarray(z["tags"], dtype=np.int64) if "tags" in z.files else None
            if "x" in z.files and "X" not in z.files:
                return np.asarray(z["x"]), tags
            if "X" not in z.files:
                raise UserError(f"{path} has no array named 'x' or 'X' (arrays: {', '.join(z.files)})")
        return np.asarray(load_dataset(path).X), tags   # the trainer's layout
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows: list[Any] = []
        tag_list: list[int] = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {n} is not JSON ({e.msg})") from None
            if isinstance(obj, dict):
                vec = obj.get("x", obj.get("features"))
                if vec is None:
                    raise UserError(f"{path} line {n} has no 'x' (or 'features') list")
                if "tag" in obj:
                    tag_list.append(int(obj["tag"]))
            else:
                vec = obj
            rows.append(vec)
        if tag_list and len(tag_list) != len(rows):
            raise UserError(f"{path}: some lines have a 'tag' and some do not")
        try:
            arr = np.asarray(rows, dtype=np.float64)
        except ValueError:
            raise UserError(f"{path}: the feature lists do not all have the same length") from None
        return arr, (np.asarray(tag_list, dtype=np.int64) if tag_list else None)
    raise UserError(f"{path}: unknown data format {suffix!r} (use .npz, .mat or .jsonl)")


def read_data(path: Path) -> tuple[FloatOrInt, npt.NDArray[np.int64] | None]:
    """(features (N, D), tags or None) from a data file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    return _read_own(path)


def to_fixed_point(x: FloatOrInt, model: Any, d: int) -> npt.NDArray[np.int64]:
    """The core's input (N, d) int64: through the model's input scaling when it has one, else
    integer data as is."""
    xs = np.asarray(x)
    if xs.ndim == 1:
        xs = xs.reshape(1, -1)
    scale = getattr(model, "scale", None)
    if callable(scale):
        out = np.asarray(scale(xs), dtype=np.int64)
        if out.ndim != 2 or out.shape[1] != d:
            raise UserError(f"the model's input scaling produced shape {out.shape}, the core needs (N, {d})")
        return out
    is_int = np.issubdtype(xs.dtype, np.integer) or (xs.size > 0 and np.all(np.mod(xs, 1) == 0))
    if is_int and xs.shape[1] == d and (xs.size == 0 or (xs.min() >= -32768 and xs.max() <= 32767)):
        return xs.astype(np.int64)
    raise UserError(f"the data is not {d} signed 16-bit integer features per sample and the model has no input "
                    "scaling to convert it")


def save_core_config(path: Path, params: CoreParams, cfg: CoreConfig) -> Path:
    """Write a raw register image of a model (``.npz``: weights, offsets, shifts, tables,
    threshold, params).  For bring-up and tests; trained models use ``mailpulse.modelfile``."""
    cfg.validate(params)
    np.savez(path, params=np.array(params.name), weights=cfg.weights, offsets=cfg.offsets, shifts=cfg.shifts,
             tables=cfg.tables, threshold=np.array(int(cfg.threshold), dtype=np.int64))
    return Path(path)


def load_model_any(path: Path) -> tuple[Any, CoreConfig, CoreParams | None]:
    """(model object, its CoreConfig, its parameter set if it names one) from a model file.

    A ``.npz`` with a ``tables`` array is a raw register image (:func:`save_core_config`; the model
    object is then ``None``); anything else goes to :func:`mailpulse.modelfile.load_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "tables" in z.files:
                try:
                    raw_params = get_params(str(z["params"]))
                except ValueError as e:
                    raise UserError(f"{path}: {e}") from None
                cfg = CoreConfig(weights=z["weights"].astype(np.int64), offsets=z["offsets"].astype(np.int64),
                                 shifts=z["shifts"].astype(np.int64), tables=z["tables"].astype(np.int64),
                                 threshold=int(z["threshold"]))
                return None, cfg, raw_params
    model = load_model(path)
    p = getattr(model, "params", None)
    named = get_params(p) if isinstance(p, str) else p if isinstance(p, CoreParams) else None
    return model, model.core_config(), named
