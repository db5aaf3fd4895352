import sys

from emotitrack.cli import main

sys.exit(main())
