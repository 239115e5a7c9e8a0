"""mailpulse PYNQ overlay: the scorer IP's driver, the overlay class, its ``.hwh``/TCL generators
and a simulated ``pynq.Device`` that runs the unmodified PYNQ stack against the RTL or the model.

The overlay files live in ``pynq_overlays/mailpulse/`` (the ``pynq.overlays`` entry point points at
this package, so ``Overlay("mailpulse.bit")`` finds them once the ``.bit`` is built).  ``pynq`` is
an optional dependency: import ``mailpulse.pynq_overlays.driver``/``overlay``/``sim_device`` only where it is
installed.
"""
