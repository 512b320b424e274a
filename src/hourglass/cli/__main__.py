"""``python -m hourglass.cli`` is the ``hourglass`` command."""
import sys

from hourglass.cli import main

sys.exit(main())
