"""``python -m mailpulse ...``: the same command line as the ``mailpulse`` script."""

import sys

from mailpulse.cli import main

sys.exit(main())
