"""mailpulse: e-mail delivery health at the edge, with the anomaly scorer in FPGA fabric."""

__version__ = "0.1.0"
