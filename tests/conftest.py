"""Shared pytest configuration: repository paths and the repository's data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SOAK = os.environ.get("MAILPULSE_SOAK") == "1"

#: Fixtures that start real servers (Mosquitto, Postfix, Dovecot) on loopback.
pytest_plugins = ["server_fixtures"]


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """``data/``: real data nobody here wrote, carried by the repository with its licences."""
    return DATA
