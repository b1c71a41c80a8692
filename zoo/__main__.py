"""``python -m zoo`` runs the console script."""

import sys

from zoo.cli import main

sys.exit(main())
