"""``python -m tfos.submit [options] script.py [args]``: the same as ``tfos submit ...``."""

import sys

from tfos.cli import submit

sys.exit(submit(sys.argv[1:]))
