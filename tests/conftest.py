"""Shared pytest configuration: repository paths and the repository's data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# setuptools (imported by pynq through pynqutils) replaces the standard library's distutils with its
# own and asserts that it did; a test earlier in the same worker that imported the standard
# library's distutils first made every pynq test of that worker fail at import.  Importing
# setuptools before any test makes its distutils the one every test gets.
import setuptools  # noqa: F401  (imported for its side effect)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SOAK = os.environ.get("MAILPULSE_SOAK") == "1"

#: Fixtures that start real servers (Mosquitto, Postfix, Dovecot) on loopback.
pytest_plugins = ["server_fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``soak`` run only with ``MAILPULSE_SOAK=1``; otherwise they are deselected (not
    skipped: a skip in ``make test`` means a missing tool, never a test left out on purpose)."""
    if SOAK:
        return
    soak = [it for it in items if it.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [it for it in items if it.get_closest_marker("soak") is None]


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """``data/``: real data nobody here wrote, carried by the repository with its licences."""
    return DATA


@pytest.fixture(scope="module")
def pynq_support() -> ModuleType:
    """``tests/pynq_sim_support.py`` (overlay folders, a simulated PYNQ device); skips without pynq."""
    pytest.importorskip("pynq", reason="pynq is not installed")
    import pynq_sim_support

    return pynq_sim_support


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    """The test runs in ``tmp_path`` (the working directory is restored after it)."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
