"""`python -m kto_operator.power --state off|on`: the platform's ON/OFF switch without a CRD (see power.cli)."""

import sys

# As in kto_operator/__main__: keep the `kubernetes` client out of this process where it is installed (kopf
# would import it for its optional login); the command talks to the API with kube_rest.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

from kto_operator.power.cli import main  # noqa: E402  (after the block above, which must precede kopf's import)

if __name__ == "__main__":
    sys.exit(main())
