"""Backends of :class:`mailpulse.host_bridge.scorer.Scorer` on this side of the hardware boundary:
``model`` (the reference, in process), ``sim`` (the RTL under cocotb) and ``ice40`` (SPI from a Pi).

The ``pynq`` backend lives with the overlay (:mod:`mailpulse.pynq_overlays.backend`); one is opened
by name with :func:`mailpulse.backends.open_scorer`.
"""
