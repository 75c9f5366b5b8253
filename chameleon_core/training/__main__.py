"""``python -m chameleon_core.training``: see :mod:`chameleon_core.training.cli`."""

import sys

from .cli import main

sys.exit(main())
