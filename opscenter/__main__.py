"""``python -m opscenter``: the same as ``vcr-opscenter``."""
import sys

from opscenter.cli import main

sys.exit(main())
