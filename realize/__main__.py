"""`python -m realize ...` (also what `accelerate launch -m realize` runs)."""

import sys

from realize.cli import main

sys.exit(main())
