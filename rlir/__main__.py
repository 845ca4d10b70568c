"""``python -m rlir``: the same command line as the ``rlir`` console script (also under ``torchrun -m rlir``)."""

import sys

from rlir.cli import main

sys.exit(main())
