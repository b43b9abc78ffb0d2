"""CLI subcommands, one module each: ``add_parser(subparsers)`` and ``run(args, console)``.

Shared argument helpers live in ``_args``; rendering of results in ``batchprof.render``.
"""
