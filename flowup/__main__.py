"""``python -m flowup ...`` runs the ``flowup`` command line."""

import sys

from flowup.cli import main

sys.exit(main())
