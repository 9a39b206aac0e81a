"""``python -m jumok`` runs the command line."""

import sys

from jumok.cli import main

sys.exit(main())
