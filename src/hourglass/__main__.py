"""``python -m hourglass`` is the ``hourglass`` command (as ``python -m hourglass.cli`` is)."""
import sys

from hourglass.cli import main

sys.exit(main())
