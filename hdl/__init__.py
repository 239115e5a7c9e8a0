"""mailpulse hardware: the scorer core's contracts (parameters, register map, reference model).

This package's top level imports no Amaranth, so that hosts without an HDL toolchain can use the
contracts and the reference model.  The Amaranth code lives in ``mailpulse.hdl.core``, ``mailpulse.hdl.axi``,
``mailpulse.hdl.spi``, ``mailpulse.hdl.tops`` and ``mailpulse.hdl.build``.
"""
