"""Reading sample files for ``mailpulse score`` and turning them into the core's fixed-point input.

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
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailpulse.errors import UserError

FloatOrInt = npt.NDArray[Any]


def _read_own(path: Path) -> tuple[FloatOrInt, npt.NDArray[np.int64] | None]:
    suffix = path.suffix.lower()
    if suffix in (".npz", ".mat") and importlib.util.find_spec("mailpulse.datasets") is not None:
        tags = None
        trainer_format = True
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                tags = np.asarray(z["tags"], dtype=np.int64) if "tags" in z.files else None
                trainer_format = "X" in z.files
        if trainer_format:
            ds = importlib.import_module("mailpulse.datasets").load_dataset(path)
            return np.asarray(ds.X), tags
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            key = "x" if "x" in z.files else "X" if "X" in z.files else None
            if key is None:
                raise UserError(f"{path} has no array named 'x' or 'X' (arrays: {', '.join(z.files)})")
            tags = np.asarray(z["tags"], dtype=np.int64) if "tags" in z.files else None
            return np.asarray(z[key]), tags
    if suffix == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError:
            raise UserError("reading .mat files needs scipy (pip install scipy)") from None
        try:
            m = loadmat(str(path))
        except Exception as e:  # scipy raises several types for a bad file
            raise UserError(f"{path} is not a readable MATLAB file ({e})") from None
        if "X" not in m:
            raise UserError(f"{path} has no matrix 'X' (ODDS layout)")
        return np.asarray(m["X"]), None
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
