"""The TrainingRun side of platform power: may a run start now?

The TrainingRun handler awaits `platform_ready(namespace, kube)` before it creates the MLflow run and the
Job. While it answers False the run stays in phase WaitingForPlatform (reason = the answer's text) and
the handler retries later. Nothing else is needed to wake the platform: the power daemon watches
TrainingRuns and counts a run without a final phase (WaitingForPlatform included) as active, so it
wakes the platform (wakeOnRun) and never puts it to sleep under the run.

The answer is read fresh from the API server (never from a cache): the power daemon announces
GoingToSleep in status before it looks for runs one last time, so a run that reads "On" here is always
seen by that look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kto_operator.api import POWERS, Api
from kto_operator.power.reconcile import governing
from kto_operator.power.schedule import GOING_TO_SLEEP, OFF, ON, WAKING_UP

NO_POWER_SCHEDULE = "NoPowerSchedule"


def readiness(powers: Sequence[Mapping[str, Any]]) -> tuple[bool, str]:
    """Pure: (ready, reason) from the namespace's PowerSchedules."""
    name = governing(powers)
    if name is None:
        return True, NO_POWER_SCHEDULE
    power = next(p for p in powers if p["metadata"]["name"] == name)
    status, spec = power.get("status") or {}, power.get("spec") or {}
    state = status.get("state")
    if state == ON:
        return True, f"PowerSchedule {name} is On"
    if state == WAKING_UP:
        detail = status.get("message") or "waking up"
        return False, f"PowerSchedule {name} is WakingUp: {detail}"
    if state in (OFF, GOING_TO_SLEEP):
        if spec.get("wakeOnRun", True):
            return False, f"PowerSchedule {name} is {state}; the run wakes it (wakeOnRun)"
        return False, (f"PowerSchedule {name} is {state} and wakeOnRun is false: switch it on "
                       f"(kubectl patch power {name} --type merge -p '{{\"spec\":{{\"state\":\"on\"}}}}')")
    return False, f"PowerSchedule {name} has not been reconciled yet"


async def platform_ready(namespace: str, kube: Api) -> tuple[bool, str]:
    """(ready, reason): True when the namespace has no PowerSchedule or its platform is On."""
    return readiness(await kube.list(POWERS, namespace))
