"""Reading training and evaluation data: ODDS ``.mat``, ``.npz`` and the collector's archive.

Every reader returns a :class:`Dataset`: a float matrix ``X`` (rows = samples), optional 0/1
labels ``y`` (1 = anomaly) and the provenance the trainer records (name and SHA-256 of the bytes
read).  Any problem with the input is a :class:`mailpulse.errors.UserError` naming the file.

Formats
-------
``.mat``
    MATLAB file with ``X`` (rows x features) and optionally ``y``, as in the ODDS collection.
    MATLAB v4-v7.2 files are read with :func:`scipy.io.loadmat`; v7.3 files (HDF5) need ``h5py``
    (MATLAB stores them column-major, so they are transposed back).
``.npz``
    NumPy archive with ``X`` and optionally ``y``.
archive (a folder, or one ``.jsonl`` / ``.jsonl.gz`` segment)
    JSON lines, one event object per line with a ``features`` list of numbers (raw values) or an
    ``x`` list (the node's fixed-point vector) and an optional ``label`` (0/1 or true/false).
    Segments are the folder's ``*.jsonl`` and ``*.jsonl.gz`` files in name order; ``*.tmp`` files
    (segments being written) are ignored, and so are blank lines.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import payload as P
from .errors import UserError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class Dataset:
    """Samples, optional labels, and where they came from."""

    X: FloatArray
    y: IntArray | None
    name: str
    sha256: str

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "rows": self.n_samples,
                               "features": self.n_features}
        if self.y is not None:
            out["anomalies"] = int(self.y.sum())
        return out


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a data file (``.mat``, ``.npz``, ``.jsonl``, ``.jsonl.gz``) or an archive folder."""
    p = Path(path)
    if p.is_dir():
        return load_archive(p)
    if not p.exists():
        raise UserError(f"data file {p} does not exist")
    name = p.name.lower()
    if name.endswith(".mat"):
        return _checked(_load_mat(p), p)
    if name.endswith(".npz"):
        return _checked(_load_npz(p), p)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return load_archive(p)
    raise UserError(f"data file {p} has an unknown type; use .mat, .npz, .jsonl, .jsonl.gz or an archive folder")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_mat(path: Path) -> Dataset:
    try:
        import scipy.io
    except ImportError:
        raise UserError(f"reading {path} needs scipy (pip install 'mailpulse[train]')") from None
    try:
        m = scipy.io.loadmat(str(path))
        x, y = m.get("X"), m.get("y")
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        x, y = _load_mat73(path)
    except (ValueError, TypeError, OSError) as e:
        raise UserError(f"data file {path} is not a readable MATLAB file ({e})") from None
    if x is None:
        raise UserError(f"data file {path} has no variable 'X'")
    return Dataset(np.asarray(x), None if y is None else np.asarray(y), path.name, _sha256(path))


def _load_mat73(path: Path) -> tuple[Any, Any]:
    try:
        import h5py  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise UserError(f"data file {path} is MATLAB v7.3 (HDF5); reading it needs h5py (pip install h5py)") from None
    try:
        with h5py.File(path, "r") as f:
            x = np.asarray(f["X"]).T if "X" in f else None
            y = np.asarray(f["y"]).T if "y" in f else None
    except OSError as e:
        raise UserError(f"data file {path} is not a readable MATLAB v7.3 file ({e})") from None
    return x, y


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z:
                raise UserError(f"data file {path} has no array 'X' (it has: {', '.join(z.files) or 'nothing'})")
            x = z["X"]
            y = z.get("y")
    except (ValueError, OSError, zlib.error) as e:
        raise UserError(f"data file {path} is not a readable .npz archive ({e})") from None
    return Dataset(np.asarray(x), None if y is None else np.asarray(y), path.name, _sha256(path))


def _checked(ds: Dataset, where: Path | str) -> Dataset:
    """Validate shapes, finiteness and labels; convert to float64 / int64."""
    x = np.asarray(ds.X)
    if x.dtype.kind not in "biuf":
        raise UserError(f"data {where}: X must be numeric, not {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"data {where}: X must be a non-empty rows x features matrix, not shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"data {where}: X contains NaN or infinite values")
    y: IntArray | None = None
    if ds.y is not None:
        ya = np.asarray(ds.y).reshape(-1)
        if ya.size != x.shape[0]:
            raise UserError(f"data {where}: y has {ya.size} labels for {x.shape[0]} rows")
        if ya.dtype.kind not in "biuf" or not np.all(np.isin(ya, (0, 1))):
            raise UserError(f"data {where}: y must hold only 0 (normal) and 1 (anomaly)")
        y = ya.astype(np.int64)
    return Dataset(x, y, ds.name, ds.sha256)


def archive_segments(folder: Path) -> list[Path]:
    """The archive's segment files in name order (``*.jsonl``, ``*.jsonl.gz``; never ``*.tmp``)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))


def load_archive(path: str | os.PathLike[str], skipped: collections.Counter[str] | None = None) -> Dataset:
    """Read the collector's archive: a folder of segments, or one segment file.

    Labels are used only if every event has one.  Without ``skipped``, a line that is not a JSON
    event, an event without a feature vector or with another length is a ``UserError`` naming
    it (a data file given on purpose).  With ``skipped`` (``train --archive``, retraining), such
    lines - and collector events that fail the payload declaration (:mod:`mailpulse.payload`),
    from an archive written before the collector validated - are skipped and counted there by
    reason; only an archive without any usable event is an error.  A segment that cannot be
    read is always an error.
    """
    p = Path(path)
    if p.is_dir():
        segments = archive_segments(p)
        if not segments:
            raise UserError(f"archive folder {p} holds no *.jsonl or *.jsonl.gz segments")
    elif p.is_file():
        segments = [p]
    else:
        raise UserError(f"archive {p} does not exist")
    h = hashlib.sha256()
    rows: list[list[float]] = []
    labels: list[int | None] = []
    for seg in segments:
        try:
            data = gzip.decompress(seg.read_bytes()) if seg.name.endswith(".gz") else seg.read_bytes()
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"archive segment {seg} cannot be read ({e})") from None
        h.update(seg.name.encode() + b"\0" + data)
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            ev, reason, problem = _archive_line(line, rows[0] if rows else None)
            if reason:
                if skipped is None:
                    raise UserError(f"archive segment {seg.name} line {lineno} {problem}")
                skipped[reason] += 1
                continue
            rows.append([float(v) for v in ev.get("features", ev.get("x"))])
            lab = ev.get("label")
            labels.append(None if lab is None else int(bool(lab)))
    if not rows:
        more = f" (skipped {sum(skipped.values())} that are not usable)" if skipped else ""
        raise UserError(f"archive {p} holds no events{more}")
    y = np.asarray(labels, dtype=np.int64) if all(v is not None for v in labels) else None
    ds = Dataset(np.asarray(rows, dtype=np.float64), y, p.name, h.hexdigest())
    return _checked(ds, p)


def _archive_line(line: bytes, first: list[float] | None) -> tuple[Any, str, str]:
    """``(event, "", "")`` for a usable line, else ``(None, reason, what is wrong)``."""
    try:
        ev = json.loads(line)
    except (ValueError, RecursionError):
        return None, "not_json", "is not a JSON object"
    if not isinstance(ev, dict):
        return None, "not_object", "is not a JSON object"
    if "kind" in ev:      # a collector event: the payload declaration says what is valid
        prob = P.check_event(ev)
        if prob is not None:
            return None, prob.reason, f"is not a valid event ({prob.detail})"
    vec = ev.get("features", ev.get("x"))
    if not isinstance(vec, list) or not vec or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in vec):
        return None, "no_features", "has no 'features' list of numbers"
    if first is not None and len(vec) != len(first):
        return None, "feature_count", f"has {len(vec)} features, earlier events have {len(first)}"
    return ev, "", ""


__all__ = ["Dataset", "archive_segments", "load_archive", "load_dataset"]
