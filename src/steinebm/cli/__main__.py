"""``python -m steinebm.cli`` (and ``torchrun ... -m steinebm.cli``): the ``steinebm`` command."""

import sys

from steinebm.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
