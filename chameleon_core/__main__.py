"""``python -m chameleon_core``: stream a garment-switching video from the command line (see :mod:`.tools.stream`)."""

import sys

from .tools.stream import main

if __name__ == "__main__":
    sys.exit(main())
