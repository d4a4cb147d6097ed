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
from collections.abc import Callable, Mapping
from typing import Any

# As kto_operator/__main__: the `kubernetes` client stays out of the operator's process.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

from kto_operator.kube import Kube  # noqa: E402  (after the block above, which must precede kopf's import)
from kto_operator.main import main  # noqa: E402
from kto_operator.tracking import Tracker  # noqa: E402

POINTS = ("run-created", "run-recorded", "job-created", "job-recorded")
logger = logging.getLogger("tests.crashing_operator")


def _die(point: str) -> None:
    logger.warning("crash point %s: killing the operator process", point)
    os.kill(os.getpid(), signal.SIGKILL)


def _after(method: Callable[..., Any], point: str, when: Callable[..., bool] = lambda *a, **k: True) -> Any:
    """`method`, then death when `when(*args)` holds for that call."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if when(*args, **kwargs):
            _die(point)
        return result

    return wrapper


def _status_has(key: str) -> Callable[..., bool]:
    def when(_self: Any, _namespace: str, _name: str, status: Mapping[str, Any]) -> bool:
        return key in status

    return when


def arm(point: str) -> None:
    if point == "run-created":
        Tracker.ensure_run = _after(Tracker.ensure_run, point)  # type: ignore[method-assign]
    elif point == "run-recorded":
        Kube.patch_run_status = _after(Kube.patch_run_status, point, _status_has("mlflow"))  # type: ignore[method-assign]
    elif point == "job-created":
        Kube.create_job = _after(Kube.create_job, point)  # type: ignore[method-assign]
    elif point == "job-recorded":
        Kube.patch_run_status = _after(Kube.patch_run_status, point, _status_has("jobName"))  # type: ignore[method-assign]
    else:
        raise SystemExit(f"crash point must be one of {', '.join(POINTS)}, got {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
