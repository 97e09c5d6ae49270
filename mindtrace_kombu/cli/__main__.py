"""``python -m mindtrace_kombu.cli``: the same as ``mindtrace-jobs``."""

from . import main

main()
