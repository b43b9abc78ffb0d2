"""The example user suite, collected here too: its source ships inside the package as
``batchprof/examples/example_user_suite.py`` (``pytest --pyargs
batchprof.examples.example_user_suite`` runs it from an installed batchprof;
``python -m batchprof.examples`` prints it to copy)."""

from batchprof.examples.example_user_suite import *  # noqa: F403
