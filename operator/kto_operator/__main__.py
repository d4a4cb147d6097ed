"""Entry point: `python -m kto_operator` (see kto_operator.main)."""

import sys

# Keep the `kubernetes` client out of the operator's process even where it is installed (development
# virtualenvs, a base image that ships it): kopf imports `kubernetes.client` for optional integrations
# (its model classes as bodies, its login) as soon as it can, a large share of the operator's memory
# (docs/benchmarks.md) for nothing: the operator talks to the API with lightkube (`api`, which never
# imports it), and kopf logs in with our `connection.login` handler.
# Only here, in the operator's own process: importing kto_operator as a library (tests) must not block it.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
# httpx's command-line tool, which httpx imports whenever it can (its `main`): click, and where installed (keras
# brings them to a development virtualenv) rich and pygments. httpx falls back to a stub on the ImportError.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from kto_operator.main import main  # noqa: E402  (after the block above, which must precede kopf's import)

if __name__ == "__main__":
    sys.exit(main())
