"""`python -m scenarios [--quick] [--only NAME] [--out FILE]`: score the detector catalogue."""

import sys

from scenarios.run import main

sys.exit(main())
