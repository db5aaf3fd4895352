import sys

from serving.cli import main

# Guarded: the scoring process is started with "spawn", which imports this module again.
if __name__ == "__main__":
    sys.exit(main())
