"""`python -m rft_fast.cli`: the same as the `rft-fast` console script."""

import sys

from rft_fast.cli import main

sys.exit(main())
