"""mailpulse host_bridge: the host side of the hardware boundary.

One :class:`~mailpulse.host_bridge.scorer.Scorer` interface with backends ``model``, ``sim``, ``pynq``,
``ice40`` (and ``auto``), opened with :func:`mailpulse.host_bridge.backends.open_scorer`; the core's register
protocol (:mod:`mailpulse.host_bridge.core`), the SPI bridge protocol (:mod:`mailpulse.host_bridge.spi`), the stream
beat layouts (:mod:`mailpulse.host_bridge.streamfmt`), bitstream validation and loading
(:mod:`mailpulse.host_bridge.bitstream`) and the ``score`` / ``bitstream load`` commands
(:mod:`mailpulse.host_bridge.cli`).  See ``docs/host-bridge.md``.
"""
