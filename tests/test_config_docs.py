"""``docs/config.md`` is rendered from the config types; the checked-in page must match, and its
example must be a valid node config."""

from __future__ import annotations

import tomllib
from pathlib import Path

from mailpulse.config.base import SecretSource
from mailpulse.config.docs import NODE_EXAMPLE, render
from mailpulse.config.node import validate_node

ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_config_md_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run `python -m mailpulse.config.docs > docs/config.md`")


def test_the_example_is_a_valid_node_config() -> None:
    secrets = SecretSource({"mqtt_password": "x", "probe.chain.smtp_password": "y", "probe.chain.imap_password": "z"})
    cfg, errors = validate_node(tomllib.loads(NODE_EXAMPLE), secrets, local=False)
    assert cfg is not None, errors
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("broker.example.org", 8883, True)
