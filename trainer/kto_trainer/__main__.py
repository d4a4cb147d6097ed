"""`python -m kto_trainer` runs the training CLI (the kto-trainer image's ENTRYPOINT)."""

import sys

from .cli import main

sys.exit(main())
