"""``python -m trainwell``: the same as the ``trainwell`` command."""

import sys

from trainwell.cli import main

sys.exit(main())
