"""`python -m autopmf ...`: the same as the `autopmf` command."""

import sys

from autopmf.cli import main

sys.exit(main())
