"""The power half's long-lived state, shared by its handlers through kopf's memo (as kto_operator.context
is for TrainingRuns)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kto_operator import times
from kto_operator.api import Api
from kto_operator.power.metrics import PowerMetrics
from kto_operator.power.settings import PowerSettings

Key = tuple[str, str]  # (namespace, PowerSchedule name)


@dataclasses.dataclass
class PowerContext:
    """Built once in the power startup handler and kept in kopf's memo."""

    settings: PowerSettings
    kube: Api
    metrics: PowerMetrics
    # Whole seconds: status times are RFC 3339 seconds, and the rule must see what status records.
    clock: Callable[[], datetime] = times.now_seconds
    # The daemon of each PowerSchedule waits on its event between passes; watch events set it.
    nudges: dict[Key, asyncio.Event] = dataclasses.field(default_factory=dict)
    # What the watch last saw, to nudge on changes only: our own status writes must not nudge.
    seen_powers: dict[Key, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    seen_runs: dict[str, bool] = dataclasses.field(default_factory=dict)  # run uid -> active
    # One lock per PowerSchedule: a pass and the release on delete never overlap. kopf signals the daemon to
    # stop while it calls the delete handler, so a pass that read the schedule just before the deletion could
    # otherwise put back to sleep what the release had just woken.
    pass_locks: dict[Key, asyncio.Lock] = dataclasses.field(default_factory=dict)

    def nudge_namespace(self, namespace: str | None) -> None:
        for (ns, _name), ev in self.nudges.items():
            if ns == namespace:
                ev.set()

    def pass_lock(self, key: Key) -> asyncio.Lock:
        return self.pass_locks.setdefault(key, asyncio.Lock())
