"""``python -m batchprof.examples``: print the example pytest-benchmark suite to copy."""

from __future__ import annotations

import sys

from . import user_suite_source

sys.stdout.write(user_suite_source())
