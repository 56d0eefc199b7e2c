"""``python -m clustercore.cli``: the ``clustercore`` command."""

import sys

from clustercore.cli.main import main

sys.exit(main())
