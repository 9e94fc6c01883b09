"""``python -m mine_reg``: the ``mine-reg`` command line."""

import sys

from .cli import main

sys.exit(main())
