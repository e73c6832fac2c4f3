"""Entry point for ``python -m ddgsim``."""

import sys

from ddgsim.malloc import reexec_with_hugepages

reexec_with_hugepages("ddgsim")

from ddgsim.cli import main  # noqa: E402

sys.exit(main())
