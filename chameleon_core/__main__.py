"""``python -m chameleon_core``: stream a garment-switching video from the command line (see :mod:`.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
