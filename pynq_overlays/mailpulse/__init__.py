"""Package data of the mailpulse overlay: ``mailpulse.hwh``, the Vivado TCL, the notebook (and
``mailpulse.bit`` once built; see docs/pynq.md).  A package only so that setuptools ships the files."""
