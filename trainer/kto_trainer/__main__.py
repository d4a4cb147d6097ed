"""`python -m kto_trainer` runs the training CLI (the node agent's entrypoint for kto-trainer:* images)."""

import sys

from .cli import main

sys.exit(main())
