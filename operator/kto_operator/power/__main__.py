"""`python -m kto_operator.power --state off|on`: the platform's ON/OFF switch without a CRD (see power.cli)."""

import sys

# As in kto_operator/__main__: keep the `kubernetes` client out of this process where it is installed (kopf
# would import it for its optional integrations); the command talks to the API with kto_operator.api.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

from kto_operator.power.cli import main  # noqa: E402  (after the block above, which must precede kopf's import)

if __name__ == "__main__":
    sys.exit(main())
