"""``python -m clustercore.adapters.ganeti FILE``: as ``clustercore-iallocator FILE``."""

import sys

from clustercore.adapters.ganeti.cli import main

sys.exit(main())
