"""Examples shipped with batchprof, so an installed package carries them.

- ``example_user_suite``: a pytest-benchmark suite to copy for your own model (time the step,
  track memory in ``extra_info``, budgets that fail CI on a memory regression). Run it from an
  installed batchprof with ``pytest --pyargs batchprof.examples.example_user_suite``, or copy
  it: ``python -m batchprof.examples > test_my_model.py``.
"""

from __future__ import annotations

from pathlib import Path

USER_SUITE = Path(__file__).with_name("example_user_suite.py")


def user_suite_source() -> str:
    """The example suite's source, to copy into your own tests."""
    return USER_SUITE.read_text(encoding="utf-8")
