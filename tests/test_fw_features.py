"""The feature schema: encoding, missing values, kinds, and the generated docs table."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailpulse.hdl.params import PARAMETER_SETS

from mailpulse import features as F

ROOT = Path(__file__).resolve().parent.parent

SOAK = os.environ.get("MAILPULSE_SOAK") == "1"


def test_schema_fits_every_core() -> None:
    assert F.D == len(F.FEATURES) == len(F.NAMES) == len(set(F.NAMES))
    for p in PARAMETER_SETS.values():
        assert p.d == F.D, f"parameter set {p.name} has D={p.d}, the schema {F.D}"
        assert p.in_min <= F.MISSING and p.in_max >= F.FIXED_MAX


def test_known_values() -> None:
    f = F.feature("delay_total_ms")
    assert f.encode(0) == 0
    assert f.encode(1) == 1024            # log2(2) * 1024
    assert f.encode(3) == 2048
    assert f.encode(-3) == -2048          # negative hop delays keep their sign
    assert f.encode(None) == F.MISSING
    assert f.encode(float("nan")) == F.MISSING
    assert f.encode(1e300) == F.FIXED_MAX
    assert F.feature("outcome").encode(3) == 3 * 4096
    assert F.feature("outcome").encode(max(F.OUTCOMES.values())) < F.FIXED_MAX   # every code is distinct
    assert F.feature("recipients").encode(1000) == F.FIXED_MAX


def test_kind_masks_missing_slots() -> None:
    raw = {n: 5.0 for n in F.NAMES}
    x = F.encode(raw, "message")
    for f in F.FEATURES:
        assert (x[f.index] == F.MISSING) == (f.sources["message"] is None)
    with pytest.raises(ValueError, match="not in schema"):
        F.encode({"delay_totl_ms": 1.0}, "delivery")
    with pytest.raises(ValueError, match="unknown event kind"):
        F.encode({}, "smtp")


@settings(max_examples=6000 if SOAK else 120, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64)), min_size=F.D,
                max_size=F.D))
def test_batch_equals_single_and_range(values: list[float | None]) -> None:
    row = np.array([[math.nan if v is None else v for v in values]])
    batch = F.encode_array(np.repeat(row, 3, axis=0))
    single = [F.FEATURES[i].encode(v) for i, v in enumerate(values)]
    assert batch[0].tolist() == single and (batch == batch[0]).all()
    assert ((batch >= -F.FIXED_MAX) | (batch == F.MISSING)).all() and (batch <= F.FIXED_MAX).all()
    for i, v in enumerate(values):
        if v is None or v != v:
            assert single[i] == F.MISSING
        else:
            assert single[i] != F.MISSING


@settings(max_examples=4000 if SOAK else 200, deadline=None)
@given(st.floats(min_value=-1e9, max_value=1e9))
def test_log_encoding_is_monotonic_and_decodes(v: float) -> None:
    f = F.feature("delay_queue_ms")
    q = f.encode(v)
    assert f.encode(v + abs(v) * 0.01 + 1) >= q
    back = f.decode(q)
    assert back is not None and abs(back - v) <= abs(v) * 0.001 + 1.0


def test_docs_table_is_generated_from_the_schema() -> None:
    doc = (ROOT / "docs" / "features.md").read_text()
    assert F.markdown_table() in doc, "docs/features.md is stale: paste mailpulse.features.markdown_table()"
    assert f"schema version {F.SCHEMA_VERSION}" in doc.lower()
