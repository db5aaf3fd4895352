"""Benchmarks: command-line programs over the harness, run from the repository's root as
``python -m benchmarks.NAME`` (``--help`` for each). Results and how to read them: README.md."""
