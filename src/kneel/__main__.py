"""``python -m kneel`` (used by ``torchrun -m kneel train ...``)."""

import sys

from kneel.cli import main

sys.exit(main())
