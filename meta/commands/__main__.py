"""``python -m meta.commands`` runs the ``asmr`` command."""

import sys

from meta.commands import main

sys.exit(main())
