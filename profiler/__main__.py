"""``python -m batchprof``: the same as the ``batchprof`` command."""

import sys

from batchprof.cli.main import main

sys.exit(main())
