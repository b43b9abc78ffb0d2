"""Placeholder: written by the pytest-integration work (issue 7)."""
