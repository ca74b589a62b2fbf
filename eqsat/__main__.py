"""``python -m eqsat`` runs the CLI."""

import sys

from eqsat.cli import main

sys.exit(main())
