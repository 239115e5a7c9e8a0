"""The model file: what the trainer writes and every scorer backend loads.

One versioned JSON document (see ``docs/model-file.md``) holding the parameter set the model was
trained for, the feature schema version, the per-feature input scaling to signed 16-bit fixed
point (and, for data wider than the core's D inputs, the wide-input transform of
:mod:`mailpulse.transform` before it), the core's registers (weights, offsets, shifts, tables,
threshold), the float reference tables the quantised tables were rounded from, and the provenance
of the training run.  A ``checksum`` field (SHA-256 over the canonical JSON of everything else)
detects corruption.

Everything that scores applies the same input path, :func:`scale_features` (transform, if any,
then scaling; ``TrainedModel.scale``), and then the bit-exact arithmetic of
:func:`mailpulse.hdl.reference.score`.  Every way a file can be wrong (not JSON, truncated, bad
checksum, other format or version, parameters that do not fit the core, values out of range) is a
:class:`mailpulse.errors.UserError` with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailpulse.hdl.params import PARAMETER_SETS, CoreParams
from mailpulse.hdl.reference import CoreConfig

from .errors import UserError
from .features import SCHEMA_VERSION
from .transform import WideTransform

#: Value of the ``format`` field.
FORMAT_NAME = "mailpulse-model"
#: Version of the document layout; a loader refuses any other.  Version 2 added ``transform``
#: (version 1 was never released; its files are refused with a sentence that says to retrain).
FORMAT_VERSION = 2
#: Feature schema of ODDS-style data (raw float features scaled by the model's input scaling).
ODDS_SCHEMA = "odds"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class InputScaling:
    """Per-feature map from raw values to the core's signed 16-bit inputs.

    ``q[d] = clip(rint((x[d] - center[d]) * scale[d]), in_min, in_max)``.  Both lists have the
    core's ``D`` entries; features the data does not have (zero padding) have ``scale == 0`` so
    they are always 0.  ``n_features`` is how many leading features the data must supply.
    """

    center: list[float]
    scale: list[float]
    n_features: int

    @classmethod
    def identity(cls, d: int, n_features: int | None = None) -> InputScaling:
        """Inputs that are already fixed point (the node's event vectors): ``q = x``."""
        n = d if n_features is None else n_features
        return cls([0.0] * d, [1.0 if i < n else 0.0 for i in range(d)], n)

    def as_dict(self) -> dict[str, Any]:
        return {"center": list(self.center), "scale": list(self.scale), "n_features": self.n_features}


def scale_features(scaling: InputScaling, x: npt.ArrayLike, params: CoreParams,
                   transform: WideTransform | None = None) -> IntArray:
    """Raw samples ``(N, F)`` to the core's ``(N, D)`` signed ``in_bits`` integers.

    With a ``transform`` (a model trained on more than D features), the samples first go through
    it (:meth:`mailpulse.transform.WideTransform.apply`: ``F`` raw features to D integer channels),
    then through ``scaling``.  Otherwise ``F`` must equal ``scaling.n_features`` and the remaining
    ``D - F`` inputs are 0.  Values beyond the 16-bit range saturate (the bins at the ends of each
    histogram hold them).  Raises ``UserError`` for a wrong feature count or non-finite values.
    """
    if transform is not None:
        x = transform.apply(x)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[None, :]
    if xs.ndim != 2:
        raise UserError(f"samples must be a 2-D array (rows x features), not {xs.ndim}-D")
    if xs.shape[1] != scaling.n_features:
        raise UserError(f"the model expects {scaling.n_features} features per sample, the data has {xs.shape[1]}")
    if xs.size and not np.all(np.isfinite(xs)):
        raise UserError("the samples contain NaN or infinite values; clean or impute them first")
    n = scaling.n_features
    center = np.asarray(scaling.center[:n], dtype=np.float64)
    scale = np.asarray(scaling.scale[:n], dtype=np.float64)
    out = np.zeros((xs.shape[0], params.d), dtype=np.int64)
    q = np.rint((xs - center[None, :]) * scale[None, :])
    out[:, :n] = np.clip(q, params.in_min, params.in_max).astype(np.int64)
    return out


@dataclass
class TrainedModel:
    """A trained model: the core registers plus what is needed to feed and audit them.

    Attributes
    ----------
    params : CoreParams
        Parameter set of the core the model was trained for.
    feature_schema : str
        Feature schema version (``"odds"`` for ODDS-style float data, else the node's
        ``mailpulse.features.SCHEMA_VERSION`` as a string).
    scaling : InputScaling
        Raw features to 16-bit inputs (:func:`scale_features`).
    weights, offsets, shifts, tables, threshold
        The core's registers (see :class:`mailpulse.hdl.reference.CoreConfig`).
    reference_tables : (K, B) float array
        The float ``-log density`` tables (shifted so each minimum is 0) the quantised ``tables``
        were rounded from: ``tables == rint(reference_tables * table_scale)``.  Scores from them
        are the "float reference" of ``mailpulse evaluate``.
    table_scale : float
        Table counts per nat.
    provenance : dict
        Data file and its SHA-256, time, seed, target false-alarm rate, training scores, trainer
        version (free-form JSON values).
    transform : WideTransform or None
        For data with more features than D: raw features to D channels, applied before
        ``scaling`` (which is then the identity on the channels).  ``None`` for narrow data.
    """

    params: CoreParams
    feature_schema: str
    scaling: InputScaling
    weights: IntArray
    offsets: IntArray
    shifts: IntArray
    tables: IntArray
    threshold: int
    reference_tables: FloatArray
    table_scale: float
    provenance: dict[str, Any] = field(default_factory=dict)
    transform: WideTransform | None = None

    @property
    def n_features(self) -> int:
        """Raw features per sample the model takes."""
        return self.transform.n_features if self.transform is not None else self.scaling.n_features

    def core_config(self) -> CoreConfig:
        """The registers as :class:`mailpulse.hdl.reference.CoreConfig` (copies)."""
        return CoreConfig(
            weights=np.array(self.weights, dtype=np.int64),
            offsets=np.array(self.offsets, dtype=np.int64),
            shifts=np.array(self.shifts, dtype=np.int64),
            tables=np.array(self.tables, dtype=np.int64),
            threshold=int(self.threshold),
        )

    def scale(self, x: npt.ArrayLike) -> IntArray:
        """Raw samples to the core's integer inputs (:func:`scale_features`, transform included)."""
        return scale_features(self.scaling, x, self.params, self.transform)

    def check_against(self, params: CoreParams) -> None:
        """Raise ``UserError`` if the model does not fit a core with ``params``.

        Backends call this with the parameters read back from the bitstream.  Only the
        elaboration parameters count (D, K, B and the widths), not the set's name nor its route
        intervals (R): a model trained for ``small`` loads into a ``small-r4`` core.
        """
        mine = _shape_of(self.params)
        theirs = _shape_of(params)
        if mine != theirs:
            raise UserError(
                f"the model was trained for parameter set {self.params.name!r} ({_describe(self.params)}) "
                f"but the core has {params.name!r} ({_describe(params)}); retrain with --config {params.name}"
            )

    def check_node_schema(self, what: str = "the model") -> None:
        """Raise ``UserError`` unless the model was trained on the feature schema the node computes
        (:data:`mailpulse.features.SCHEMA_VERSION`): a vector of another schema means other things
        (slots, units, outcome codes), so the node refuses it and the collector does not publish it."""
        if str(self.feature_schema) != str(SCHEMA_VERSION):
            raise UserError(f"{what} was trained on feature schema {self.feature_schema!r}, "
                            f"the node computes schema {SCHEMA_VERSION}; retrain it on current events")

    # -- serialisation ----------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        """The JSON document, checksum included."""
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "parameter_set": self.params.name,
            "params": self.params.as_dict(),
            "feature_schema": self.feature_schema,
            "transform": None if self.transform is None else self.transform.as_dict(),
            "input_scaling": self.scaling.as_dict(),
            "weights": [[int(w) for w in row] for row in np.asarray(self.weights)],
            "offsets": [int(v) for v in np.asarray(self.offsets)],
            "shifts": [int(v) for v in np.asarray(self.shifts)],
            "tables": [[int(v) for v in row] for row in np.asarray(self.tables)],
            "threshold": int(self.threshold),
            "table_scale": float(self.table_scale),
            "reference_tables": [[float(v) for v in row] for row in np.asarray(self.reference_tables)],
            "provenance": self.provenance,
        }
        doc["checksum"] = "sha256:" + _checksum(doc)
        return doc

    def to_bytes(self) -> bytes:
        """The file content: the document, one key per line, UTF-8, ending with a newline."""
        doc = self.to_document()
        # Compact rows (tables are large) but one top-level key per line, for readable diffs.
        lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), allow_nan=False)}" for k, v in doc.items()]
        return ("{\n" + ",\n".join(lines) + "\n}\n").encode()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file atomically (temporary file in the same folder, then rename)."""
        out = Path(path)
        data = self.to_bytes()
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out


def _shape_of(p: CoreParams) -> dict[str, int | str]:
    d = p.as_dict()
    d.pop("name")
    d.pop("r", None)    # the route intervals hold no model registers: a model fits a core with any R
    return d


def _describe(p: CoreParams) -> str:
    return f"D={p.d}, K={p.k}, B={p.b}"


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def load_model(source: str | os.PathLike[str] | bytes) -> TrainedModel:
    """Load and validate a model file (a path, or the file's bytes).

    Raises ``UserError`` naming the file and the first problem: unreadable, not JSON (corrupt or
    truncated), wrong format or format version, bad checksum, parameters unknown or not matching
    their declared set, or a register value that does not fit the parameters.
    """
    if isinstance(source, bytes | bytearray):
        what = "the model data"
        raw = bytes(source)
    else:
        what = f"model file {os.fspath(source)}"
        try:
            raw = Path(source).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {what}: {e.strerror or e}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text, so not a mailpulse model") from None
    except json.JSONDecodeError as e:
        hint = "truncated" if e.pos >= len(raw.rstrip()) - 1 else "corrupt"
        raise UserError(f"{what} is not valid JSON ({hint}: {e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{what} is JSON but not a mailpulse model (no top-level object)")
    if doc.get("format") != FORMAT_NAME:
        raise UserError(f"{what} is not a mailpulse model (format is {doc.get('format')!r}, not {FORMAT_NAME!r})")
    if doc.get("format_version") == 1:
        raise UserError(f"{what} has format version 1, from before wide-input transforms; this mailpulse reads "
                        f"version {FORMAT_VERSION}: retrain the model with this mailpulse")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{what} has format version {doc.get('format_version')!r}; this mailpulse reads version {FORMAT_VERSION}"
        )
    checksum = doc.get("checksum")
    if not isinstance(checksum, str) or checksum != "sha256:" + _checksum(doc):
        raise UserError(f"{what} fails its checksum: it was modified or corrupted after training")
    try:
        return _from_document(doc)
    except (KeyError, TypeError, ValueError) as e:
        msg = str(e).strip("'\"")
        if isinstance(e, KeyError):
            msg = f"field {msg!r} is missing"
        raise UserError(f"{what} is invalid: {msg}") from None


def _params_from(doc: dict[str, Any]) -> CoreParams:
    pd = doc["params"]
    if not isinstance(pd, dict):
        raise TypeError("params is not an object")
    name = doc["parameter_set"]
    if not isinstance(name, str):
        raise TypeError("parameter_set is not a string")
    params = CoreParams(str(pd["name"]), d=int(pd["d"]), k=int(pd["k"]), b=int(pd["b"]))
    if params.as_dict() != pd:
        raise ValueError("params disagree with the widths this mailpulse derives from D, K and B")
    if name != params.name:
        raise ValueError(f"parameter_set {name!r} differs from params name {params.name!r}")
    known = PARAMETER_SETS.get(name)
    if known is not None and _shape_of(known) != _shape_of(params):
        raise ValueError(f"params ({_describe(params)}) are not those of the parameter set {name!r} "
                         f"({_describe(known)})")
    return params


def _int_array(v: Any, name: str) -> IntArray:
    arr = np.asarray(v)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers")
    return arr.astype(np.int64)


def _from_document(doc: dict[str, Any]) -> TrainedModel:
    params = _params_from(doc)
    schema = doc["feature_schema"]
    if not isinstance(schema, str) or not schema:
        raise TypeError("feature_schema must be a non-empty string")
    sc = doc["input_scaling"]
    scaling = InputScaling([float(c) for c in sc["center"]], [float(s) for s in sc["scale"]], int(sc["n_features"]))
    if len(scaling.center) != params.d or len(scaling.scale) != params.d:
        raise ValueError(f"input_scaling needs {params.d} centers and scales (D of {params.name!r})")
    if not 1 <= scaling.n_features <= params.d:
        raise ValueError(f"input_scaling n_features {scaling.n_features} is outside 1..{params.d}")
    if not all(math.isfinite(v) for v in scaling.center + scaling.scale):
        raise ValueError("input_scaling holds a non-finite number")
    transform = None if doc["transform"] is None else WideTransform.from_dict(doc["transform"], params.d)
    if transform is not None and scaling != InputScaling.identity(params.d):
        raise ValueError("a model with a transform needs the identity input_scaling (its channels are the inputs)")
    threshold = doc["threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool):
        raise TypeError("threshold must be an integer")
    ref = np.asarray(doc["reference_tables"], dtype=np.float64)
    model = TrainedModel(
        params=params,
        feature_schema=schema,
        scaling=scaling,
        weights=_int_array(doc["weights"], "weights"),
        offsets=_int_array(doc["offsets"], "offsets"),
        shifts=_int_array(doc["shifts"], "shifts"),
        tables=_int_array(doc["tables"], "tables"),
        threshold=threshold,
        reference_tables=ref,
        table_scale=float(doc["table_scale"]),
        provenance=dict(doc["provenance"]),
        transform=transform,
    )
    model.core_config().validate(params)
    if ref.shape != (params.k, params.b) or not np.all(np.isfinite(ref)):
        raise ValueError(f"reference_tables must be {params.k}x{params.b} finite numbers")
    if not (math.isfinite(model.table_scale) and model.table_scale > 0):
        raise ValueError("table_scale must be a positive number")
    return model


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ODDS_SCHEMA", "InputScaling", "TrainedModel", "load_model",
           "scale_features"]
