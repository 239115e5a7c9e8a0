"""``python -m mailpulse.collector.flink ...``: the job (:func:`.job.main`), in the Flink venv.

(Its functions must live in an importable module, not in ``__main__``, so that they are pickled by
reference for the Python workers.)"""

import sys

from .job import main

sys.exit(main())
