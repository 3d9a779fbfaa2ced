"""``python -m hopgate``: the same as the ``hopgate`` command."""

import sys

from .cli import main

sys.exit(main())
