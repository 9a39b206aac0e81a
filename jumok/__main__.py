"""``python -m jumok`` runs the command line."""

import sys

from jumok.app.cli import main

sys.exit(main())
