"""Relay names and recipient domains: what metrics labels and alerts show instead of raw addresses.

Declared in :mod:`mailpulse.routes` (the node names its routes with the same rules); re-exported here
for the collector's modules.
"""

from __future__ import annotations

from mailpulse.routes import RelayNames, domain_of, split_relay

__all__ = ["RelayNames", "domain_of", "split_relay"]
