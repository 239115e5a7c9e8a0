"""mailpulse hardware: the scorer core's contracts (parameters, register map, wire protocols,
reference model) and its gateware.

This package's top level imports no Amaranth, so that hosts without an HDL toolchain can use the
contracts and the reference model.  Pure Python (the contracts layer): ``params``, ``regmap``,
``beats``, ``spiproto``, ``plan``, ``reference``, ``reports``.  Amaranth (the gateware):
``control``, ``lane``, ``core``, ``dsp``, ``folded``, ``regs``, ``axi``, ``spi``, ``tops``,
``board``, ``build``, ``platforms``.
"""
