"""`python -m gpulse.cli …` (the `gpulse` script, before it is installed)."""

import sys

from gpulse.cli import main

sys.exit(main())
