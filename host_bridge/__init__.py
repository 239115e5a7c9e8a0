"""mailpulse host_bridge: the host side of the hardware boundary.

One :class:`~mailpulse.host_bridge.scorer.Scorer` interface with backends ``model``, ``sim`` and
``ice40`` (``pynq`` lives with the overlay; :func:`mailpulse.backends.open_scorer` opens any of them
by name); the core's register protocol (:mod:`mailpulse.host_bridge.core`), the SPI bridge protocol
(:mod:`mailpulse.host_bridge.spi`), the stream beat layouts (:mod:`mailpulse.host_bridge.streamfmt`),
bitstream validation and the iCE40 configuration sequence (:mod:`mailpulse.host_bridge.bitstream`),
sample and model files (:mod:`mailpulse.host_bridge.data`).  See ``docs/host-bridge.md``.
"""
