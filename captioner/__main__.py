"""``python -m captioner``: see :mod:`captioner.cli`."""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main())
