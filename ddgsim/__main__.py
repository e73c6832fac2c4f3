"""Entry point for ``python -m ddgsim``."""

import sys

from ddgsim.cli import main

sys.exit(main())
