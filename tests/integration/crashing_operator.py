"""Test-only launcher: `python -m tests.integration.crashing_operator POINT <kto_operator arguments>` runs the
operator, which SIGKILLs itself right after POINT of a TrainingRun's creation, as abruptly as an OOM kill or a
node loss. Restart tests need the kill between two writes of one handler call (say, the MLflow run created and
its id not yet in the status): no polling from outside can hit that moment, so the kill comes from inside, by
wrapping the operator's calls to the outside world. The product has no such hook.

POINT names the call after which the process dies:
- run-created: MLflow answered the creation of the run (its id is in no status yet);
- run-recorded: the status holding the MLflow run's id was written;
- job-created: the API server answered the creation of the Job (the status does not name it yet);
- job-recorded: the status holding the Job's name was written.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# The entry point's module blocks first (the `kubernetes` client, httpx's command-line tool), as in the operator.
import kto_operator.__main__  # noqa: F401  (before kopf's import)
from kto_operator.api import JOBS, RUNS, Api
from kto_operator.main import main
from kto_operator.tracking import Tracker

POINTS = ("run-created", "run-recorded", "job-created", "job-recorded")
logger = logging.getLogger("tests.crashing_operator")


def _die(point: str) -> None:
    logger.warning("crash point %s: killing the operator process", point)
    os.kill(os.getpid(), signal.SIGKILL)


def _after(method: Callable[..., Awaitable[Any]], point: str,
           when: Callable[..., bool] = lambda *a, **k: True) -> Callable[..., Awaitable[Any]]:
    """`method` (a coroutine function: every call wrapped here is one), then death when `when(*args, **kwargs)`
    holds for that call. Only after the call returned: an exception (a 409, MLflow down) is no crash point."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await method(*args, **kwargs)
        if when(*args, **kwargs):
            _die(point)
        return result

    return wrapper


def _run_status_has(key: str) -> Callable[..., bool]:
    """For Api.patch: a patch of a TrainingRun's status that writes `key` (the power half's patches, of
    PowerSchedules and workloads, go through the same method)."""

    def when(_self: Any, kind: Any, _namespace: str, _name: str, patch: Mapping[str, Any], *,
             status: bool = False) -> bool:
        return kind is RUNS and status and key in (patch.get("status") or {})

    return when


def _creates_job(_self: Any, kind: Any, _manifest: Mapping[str, Any], _owner_uid: str) -> bool:
    return kind is JOBS  # not the workers' Service, created just before


def arm(point: str) -> None:
    if point == "run-created":
        Tracker.ensure_run = _after(Tracker.ensure_run, point)
    elif point == "run-recorded":
        Api.patch = _after(Api.patch, point, _run_status_has("mlflow"))
    elif point == "job-created":
        Api.create_owned = _after(Api.create_owned, point, _creates_job)
    elif point == "job-recorded":
        Api.patch = _after(Api.patch, point, _run_status_has("jobName"))
    else:
        raise SystemExit(f"crash point must be one of {', '.join(POINTS)}, got {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
