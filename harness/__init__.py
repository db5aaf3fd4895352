"""The test-and-benchmark harness: real servers and processes, traffic, ledgers, registries.

``tests/`` and ``benchmarks/`` both build on it; it imports neither (import-linter checks).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
