"""Entry point: `python -m kto_operator` (see kto_operator.main)."""

import sys

from kto_operator.main import main

if __name__ == "__main__":
    sys.exit(main())
