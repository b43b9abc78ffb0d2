"""``python -m batchprof.cli``."""

import sys

from batchprof.cli.main import main

sys.exit(main())
