"""The correlation on Apache Flink: the collectors' archives in, the same incidents out.

``mailpulse flink run --archive DIR [--archive DIR ...]`` runs :mod:`.job` (PyFlink, in the
``.venv-flink`` environment that ``make setup`` makes).  The steps are plain Python in
:mod:`.steps` and :mod:`.segments`; only :mod:`.job` imports pyflink.  See docs/collector.md.
"""
