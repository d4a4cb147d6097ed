"""`python -m kto_operator [--namespace NS | --all-namespaces]`: runs the operator in the foreground."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

import kopf

POWER_HANDLERS = "kto_operator.power.handlers"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kto-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", help="watch this namespace only (needs a Role, no ClusterRole)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="kopf liveness endpoint URL ('' turns it off); default %(default)s")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def load_handlers() -> list[str]:
    """Import the handler modules, registering them with kopf. PowerSchedule handlers live in their own
    subpackage that may be absent: only a missing module is tolerated, never an error inside it."""
    loaded = ["kto_operator.handlers"]
    importlib.import_module("kto_operator.handlers")
    if importlib.util.find_spec("kto_operator.power") is not None and \
            importlib.util.find_spec(POWER_HANDLERS) is not None:
        importlib.import_module(POWER_HANDLERS)
        loaded.append(POWER_HANDLERS)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # MLflow's telemetry would phone home from a cluster that may have no internet; never wanted here.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = load_handlers()
    logging.getLogger("kto_operator").info("handlers: %s", ", ".join(loaded))
    kopf.run(
        standalone=True,
        clusterwide=bool(args.all_namespaces),
        namespaces=[args.namespace] if args.namespace else (),
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(namespace=args.namespace),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
