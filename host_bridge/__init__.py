"""mailpulse host_bridge: the host side of the hardware boundary.

One :class:`~host_bridge.scorer.Scorer` interface with backends ``model``, ``sim``, ``pynq``,
``ice40`` (and ``auto``), opened with :func:`host_bridge.backends.open_scorer`; the core's register
protocol (:mod:`host_bridge.core`), the SPI bridge protocol (:mod:`host_bridge.spi`), the stream
beat layouts (:mod:`host_bridge.streamfmt`), bitstream validation and loading
(:mod:`host_bridge.bitstream`) and the ``score`` / ``bitstream load`` commands
(:mod:`host_bridge.cli`).  See ``docs/host-bridge.md``.
"""
