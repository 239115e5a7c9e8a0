"""Shared pytest configuration: repository paths and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MAILPULSE_SHARED", ROOT.parent / "shared"))
SOAK = os.environ.get("MAILPULSE_SOAK") == "1"

#: Fixtures that start real servers (Mosquitto, Postfix, Dovecot) on loopback.
pytest_plugins = ["server_fixtures"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = SHARED / "data"
    if not d.is_dir():
        pytest.fail(f"the shared data folder {d} is missing (set MAILPULSE_SHARED to the shared/ folder)")
    return d
