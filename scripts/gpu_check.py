#!/usr/bin/env python3
"""batchprof's GPU verification kit: ``python3 scripts/gpu_check.py OUT [--dry-run]``.

See scripts/gpucheck/driver.py (what runs, the time boxes) and README ("GPU check").
Standard library only at this level: it must start in any python3 with torch installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck.driver import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
