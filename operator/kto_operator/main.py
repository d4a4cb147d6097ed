"""`python -m kto_operator [--namespace NS | --all-namespaces]`: runs the operator in the foreground."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import sys
import time

import kopf

from .identity import ensure_user_name

# The modules whose import registers the handlers with kopf: TrainingRuns, then PowerSchedules, then the web
# console (it serves both halves' objects, in the process that is never put to sleep), then the process's own
# upkeep (its heap).
HANDLERS = ("kto_operator.handlers", "kto_operator.power.handlers", "kto_operator.console.handlers",
            "kto_operator.heap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kto-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", help="watch this namespace only (needs a Role, no ClusterRole)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="kopf liveness endpoint URL ('' turns it off); default %(default)s")
    parser.add_argument("--peering", metavar="NAME", default=os.environ.get("KTO_PEERING") or None,
                        help="run as one of several replicas: kopf peering through the KopfPeering (namespaced) or "
                             "ClusterKopfPeering (-A) object NAME, whose CRD is crds/optional/kopf-peering.yaml; "
                             "only the live replica of highest priority acts. Default: $KTO_PEERING, else standalone")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; default: older replicas first (start time, random tie-break)")
    parser.add_argument("--peering-lifetime", type=int, default=int(os.environ.get("KTO_PEERING_LIFETIME") or 60),
                        metavar="SECONDS",
                        help="how long a silent replica counts as alive: a killed one is replaced after at most "
                             "this; default %(default)s")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


# Start times in milliseconds below this (year 2109) give positive priorities under 2**53 (exact in JSON).
_PRIORITY_EPOCH_MS = 2**42


def peering_priority(started: float, tie_break: int) -> int:
    """A replica started earlier outranks a later one, so a new replica never takes over from a working
    one; replicas of the same priority would all pause (kopf), hence the tie-break (0..999). Milliseconds,
    so that two replicas started within the same second are still ordered by their start times."""
    return (_PRIORITY_EPOCH_MS - int(started * 1000)) * 1000 + tie_break


def load_handlers() -> list[str]:
    """Import the handler modules, registering them with kopf."""
    for module in HANDLERS:
        importlib.import_module(module)
    return list(HANDLERS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_user_name(os.environ)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx (under lightkube) logs every request at INFO: a line per API call drowns the operator's own.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # kopf logs every handler call of every object ("Handler 'start' succeeded.", several per run and watch
    # event) at INFO: its warnings and errors stay; the runs' steps are logged by the operator itself (writes).
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    loaded = load_handlers()
    logging.getLogger("kto_operator").info("handlers: %s", ", ".join(loaded))
    priority = None
    if args.peering:
        priority = args.priority if args.priority is not None else \
            peering_priority(time.time(), random.SystemRandom().randrange(1000))
    kopf.run(
        standalone=not args.peering,
        peering_name=args.peering or None,
        priority=priority,
        clusterwide=bool(args.all_namespaces),
        namespaces=[args.namespace] if args.namespace else (),
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(namespace=args.namespace, peering=args.peering, peering_lifetime=args.peering_lifetime),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
