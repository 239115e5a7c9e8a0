"""The trainer's parts: histograms (bins and tables), projection selection, the wide-input
transform, detection metrics.  :mod:`mailpulse.collector.trainer` puts them together."""
