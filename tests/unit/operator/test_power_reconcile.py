"""The reconcile state machine, the history built from objects, and the TrainingRun gate.

The cluster here is an in-memory stand-in with the calls of `kto_operator.api.Api` that power makes (merge
patches, resourceVersion conflicts); the real API server is exercised in tests/integration/test_power*.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kto_operator import naming, times
from kto_operator.api import Api, Conflict, Kind
from kto_operator.power import gate, history, reconcile
from kto_operator.power import workloads as w
from kto_operator.power.metrics import PowerMetrics
from kto_operator.power.reconcile import Pass
from kto_operator.power.settings import PowerSettings
from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, STATEFULSET
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
NS = "ns"


def merge(o: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(o)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge(out.get(k) or {}, v)
        else:
            out[k] = v
    return out


class FakeKube:
    """Objects by (kind, name); workloads become Ready only when `settle()` is called."""

    def __init__(self) -> None:
        self.objs: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 0
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def _bump(self, o: dict[str, Any]) -> None:
        self.rv += 1
        o["metadata"]["resourceVersion"] = str(self.rv)

    def add(self, kind: str, name: str, created: datetime = T0, **body: Any) -> dict[str, Any]:
        o = {"metadata": {"name": name, "namespace": NS, "creationTimestamp": times.format_time(created),
                          "generation": 1, "labels": body.pop("labels", {}),
                          "annotations": body.pop("annotations", {})}, **body}
        self._bump(o)
        self.objs[(kind, name)] = o
        return o

    def workload(self, kind: str, name: str, replicas: int = 1, **body: Any) -> dict[str, Any]:
        spec = {"suspend": False} if kind == CRONJOB else {"replicas": replicas}
        o = self.add(kind, name, spec=spec, **body)
        self.settle()
        return o

    def settle(self) -> None:
        for (kind, _), o in self.objs.items():
            if kind in (DEPLOYMENT, STATEFULSET):
                n = o["spec"]["replicas"]
                o["status"] = {"observedGeneration": o["metadata"]["generation"], "replicas": n, "readyReplicas": n}

    # Api's interface (objects by the kind's name) ------------------------------------------------------
    async def list(self, kind: Kind, ns: str) -> list[dict[str, Any]]:
        # Through the sync listings, which tests replace to step in between two calls.
        by_kind = {"TrainingRun": self.list_runs, "PowerSchedule": self.list_powers}
        return by_kind[kind.__name__](ns) if kind.__name__ in by_kind else self.list_workloads(kind.__name__, ns)

    async def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any] | None:
        return self.get_workload(kind.__name__, ns, name)

    async def patch(self, kind: Kind, ns: str, name: str, patch: dict[str, Any], *,
                    status: bool = False) -> dict[str, Any] | None:
        if status:
            self.patch_power_status(ns, name, patch["status"])
            return copy.deepcopy(self.objs[(kind.__name__, name)])
        return self.patch_workload(kind.__name__, ns, name, patch)

    # Helpers -------------------------------------------------------------------------------------
    def get_power(self, ns: str, name: str) -> dict[str, Any] | None:
        o = self.objs.get(("PowerSchedule", name))
        return copy.deepcopy(o) if o else None

    def list_powers(self, ns: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _), o in self.objs.items() if k == "PowerSchedule"]

    def patch_power_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        o = self.objs[("PowerSchedule", name)]
        o["status"] = merge(o.get("status") or {}, status)
        self._bump(o)

    def list_runs(self, ns: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _), o in self.objs.items() if k == "TrainingRun"]

    def list_workloads(self, kind: str, ns: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _), o in self.objs.items() if k == kind]

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        o = self.objs.get((kind, name))
        return copy.deepcopy(o) if o else None

    def patch_workload(self, kind: str, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        o = self.objs.get((kind, name))
        if o is None:
            return None
        patch = copy.deepcopy(patch)
        rv = patch.get("metadata", {}).pop("resourceVersion", None)
        if rv is not None and rv != o["metadata"]["resourceVersion"]:
            raise Conflict(name)
        new = merge(o, patch)
        if new.get("spec") != o.get("spec"):
            new["metadata"]["generation"] += 1
        self._bump(new)
        self.objs[(kind, name)] = new
        self.patches.append((kind, name, patch))
        return copy.deepcopy(new)

    def status(self, name: str = "power") -> dict[str, Any]:
        return self.objs[("PowerSchedule", name)].get("status") or {}

    def replicas(self, kind: str, name: str) -> int:
        return int(self.objs[(kind, name)]["spec"]["replicas"])


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.events: list[tuple[str, str, str]] = []

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


def runs(kube: FakeKube) -> Callable[[], list[dict[str, Any]]]:
    """The power half's index of TrainingRuns, as the watch would hold it."""
    return lambda: [history.summary(r) for r in kube.list_runs(NS)]


SETTINGS = PowerSettings(ready_timeout=300.0)
METRICS = PowerMetrics(CollectorRegistry())


def run_until_stable(kube: FakeKube, clock: Clock, name: str = "power", passes: int = 20,
                     settle: bool = True) -> float:
    wait = 0.0
    for _ in range(passes):
        before = copy.deepcopy(kube.status(name))
        wait = asyncio.run(Pass(cast(Api, kube), SETTINGS, NS, name, clock.now, clock.emit, METRICS, runs(kube)).run())
        if settle:
            kube.settle()
        settled = kube.status(name).get("state") not in ("WakingUp", "GoingToSleep")
        if wait > 0 and kube.status(name) == before and settled:
            return wait
    return wait


@pytest.fixture
def platform() -> tuple[FakeKube, Clock]:
    kube, clock = FakeKube(), Clock()
    kube.workload(STATEFULSET, "mysql", 1)
    kube.workload(DEPLOYMENT, "minio", 1)
    kube.workload(DEPLOYMENT, "mlflow", 3)
    kube.workload(CRONJOB, "backup")
    kube.workload(DEPLOYMENT, "kto-operator", 1, labels={"app.kubernetes.io/name": "kto-operator"})
    kube.workload(DEPLOYMENT, "keep-me", 2, labels={"axa.com/dailyclean": "false"})
    kube.workload(DEPLOYMENT, "grafana", 1, labels={"tier": "obs"})
    kube.add("PowerSchedule", "power", created=T0 - timedelta(days=1),
             spec={"state": "on", "exclude": [{"matchLabels": {"tier": "obs"}}]})
    return kube, clock


def switch(kube: FakeKube, state: str) -> None:
    kube.objs[("PowerSchedule", "power")]["spec"]["state"] = state
    kube.objs[("PowerSchedule", "power")]["metadata"]["generation"] += 1


def test_first_pass_on_then_sleep_and_wake_exactly(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "On"
    assert kube.status()["reason"] == "Manual"
    switch(kube, "off")
    clock.now += timedelta(minutes=1)
    run_until_stable(kube, clock)
    st = kube.status()
    assert st["state"] == "Off"
    assert kube.replicas(DEPLOYMENT, "mlflow") == 0 and kube.replicas(STATEFULSET, "mysql") == 0
    assert kube.objs[(CRONJOB, "backup")]["spec"]["suspend"] is True
    # Excluded: the operator, the Dailyclean opt-out, spec.exclude.
    assert kube.replicas(DEPLOYMENT, "kto-operator") == 1
    assert kube.replicas(DEPLOYMENT, "keep-me") == 2
    assert kube.replicas(DEPLOYMENT, "grafana") == 1
    assert sorted((x["kind"], x["name"], x.get("savedReplicas")) for x in st["workloads"]) == [
        (CRONJOB, "backup", None), (DEPLOYMENT, "minio", 1), (DEPLOYMENT, "mlflow", 3), (STATEFULSET, "mysql", 1)]
    assert "GoingToSleep" in clock.reasons() and "Asleep" in clock.reasons()
    # Sleep order: apps first, the database last.
    order = [name for _, name, p in kube.patches if p.get("spec", {}).get("replicas") == 0]
    assert order.index("mysql") > order.index("mlflow")

    switch(kube, "on")
    clock.now += timedelta(minutes=1)
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "On"
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3 and kube.replicas(STATEFULSET, "mysql") == 1
    assert kube.objs[(CRONJOB, "backup")]["spec"]["suspend"] is False
    assert kube.status()["workloads"] == []
    assert not any(w.asleep_by_us(o) for o in kube.objs.values())


def test_wake_waits_for_statefulsets_ready_before_deployments(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "Off"
    switch(kube, "on")
    clock.now += timedelta(minutes=1)
    for _ in range(5):  # no settling: the StatefulSet never becomes Ready
        asyncio.run(Pass(cast(Api, kube), SETTINGS, NS, "power", clock.now, clock.emit, METRICS, runs(kube)).run())
    assert kube.status()["state"] == "WakingUp"
    assert kube.replicas(STATEFULSET, "mysql") == 1
    assert kube.replicas(DEPLOYMENT, "mlflow") == 0  # not before the database is Ready
    assert "mysql" in kube.status()["message"]
    assert gate.readiness(kube.list_powers(NS))[0] is False
    kube.settle()
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "On" and kube.replicas(DEPLOYMENT, "mlflow") == 3
    assert gate.readiness(kube.list_powers(NS))[0] is True


def test_wake_goes_on_after_the_ready_timeout(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    switch(kube, "on")
    run_until_stable(kube, clock, passes=4, settle=False)
    clock.now += timedelta(seconds=SETTINGS.ready_timeout + 1)
    run_until_stable(kube, clock, passes=6, settle=False)
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3
    assert "WakeTimeout" in clock.reasons()


def test_human_edit_while_asleep_is_kept(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    kube.objs[(DEPLOYMENT, "mlflow")]["spec"]["replicas"] = 2  # kubectl scale --replicas=2
    switch(kube, "on")
    run_until_stable(kube, clock)
    assert kube.replicas(DEPLOYMENT, "mlflow") == 2
    assert kube.replicas(DEPLOYMENT, "minio") == 1
    assert "HumanEditKept" in clock.reasons()


def test_sleep_deferred_by_a_run_then_done_after_it(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    run_until_stable(kube, clock)
    kube.add("TrainingRun", "r1", status={"phase": "Running"})
    switch(kube, "off")
    run_until_stable(kube, clock)
    st = kube.status()
    assert (st["state"], st["reason"], st["deferredBy"]) == ("On", "SleepDeferred", ["r1"])
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3
    assert "SleepDeferred" in clock.reasons()
    kube.objs[("TrainingRun", "r1")]["status"] = {"phase": "Succeeded"}
    clock.now += timedelta(minutes=5)
    run_until_stable(kube, clock)
    st = kube.status()
    assert (st["state"], st["reason"], st["deferredBy"]) == ("Off", "Manual", [])
    assert st["lastRunActivity"] == times.format_time(clock.now)
    assert kube.replicas(DEPLOYMENT, "mlflow") == 0


def test_run_submitted_while_asleep_wakes_then_sleeps_after(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    assert gate.readiness(kube.list_powers(NS)) == (False, "PowerSchedule power is Off; the run wakes it (wakeOnRun)")
    kube.add("TrainingRun", "r1", status={"phase": "WaitingForPlatform"})
    run_until_stable(kube, clock)
    st = kube.status()
    assert (st["state"], st["reason"]) == ("On", "SleepDeferred")  # woken; now it holds the sleep off
    assert "WokenByRun" in " ".join(m for _, _, m in clock.events) or "WakingUp" in clock.reasons()
    assert gate.readiness(kube.list_powers(NS))[0] is True
    kube.objs[("TrainingRun", "r1")]["status"] = {"phase": "Succeeded"}
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "Off"


def test_race_run_created_after_going_to_sleep_is_announced(platform: tuple[FakeKube, Clock]) -> None:
    """A run created after the sleep decision: GoingToSleep is persisted first, so the run's gate says
    "not ready", and the last look for runs (after the announce) sees it: the sleep is called off."""
    kube, clock = platform
    run_until_stable(kube, clock)
    switch(kube, "off")
    real = kube.list_runs
    gate_answers: list[bool] = []

    def list_runs(ns: str) -> list[dict[str, Any]]:
        if kube.status().get("state") == "GoingToSleep" and ("TrainingRun", "late") not in kube.objs:
            gate_answers.append(gate.readiness(kube.list_powers(NS))[0])  # the run's handler asks now
            kube.add("TrainingRun", "late", status={})
        return real(ns)

    kube.list_runs = list_runs  # type: ignore[method-assign]
    run_until_stable(kube, clock)
    assert gate_answers == [False]
    assert kube.status()["state"] == "On"
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3 and not any(w.asleep_by_us(o) for o in kube.objs.values())


def test_conflict_is_retried(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    real = kube.patch_workload
    calls = {"n": 0}

    def flaky(kind: str, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        calls["n"] += 1
        if name == "mlflow" and calls["n"] < 4:
            kube.objs[(kind, name)]["metadata"]["resourceVersion"] += "x"  # someone else wrote it
        return real(kind, ns, name, patch)

    kube.patch_workload = flaky  # type: ignore[method-assign]
    run_until_stable(kube, clock)
    assert kube.status()["state"] == "Off"
    assert kube.replicas(DEPLOYMENT, "mlflow") == 0
    assert kube.objs[(DEPLOYMENT, "mlflow")]["metadata"]["annotations"][naming.ANNOTATION_SAVED_REPLICAS] == "3"


def test_restart_while_asleep_restores_from_annotations(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    # The PowerSchedule is deleted and re-created without status (worse than an operator restart).
    power = kube.objs[("PowerSchedule", "power")]
    power.pop("status")
    switch(kube, "on")
    run_until_stable(kube, clock)
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3 and kube.replicas(STATEFULSET, "mysql") == 1


def test_idle_sleep(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    kube.objs[("PowerSchedule", "power")]["spec"] = {"idleAfter": "30m"}
    kube.objs[("PowerSchedule", "power")]["metadata"]["creationTimestamp"] = times.format_time(T0)
    wait = run_until_stable(kube, clock)
    assert kube.status()["state"] == "On"
    assert kube.status()["nextOff"] == "2026-06-10T12:30:00Z"
    assert 0 < wait <= SETTINGS.max_wait
    clock.now = T0 + timedelta(minutes=30)
    run_until_stable(kube, clock)
    assert (kube.status()["state"], kube.status()["reason"]) == ("Off", "Idle")


def test_duplicate_and_invalid(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    kube.add("PowerSchedule", "second", spec={"state": "off"})
    run_until_stable(kube, clock, name="second")
    assert kube.status("second")["reason"] == "Duplicate"
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3
    kube.objs[("PowerSchedule", "power")]["spec"] = {"schedule": {"on": "0 8 * * *", "timezone": "Nowhere/Land"}}
    run_until_stable(kube, clock)
    assert kube.status()["reason"] == "InvalidSchedule"
    assert "Nowhere/Land" in kube.status()["message"]
    assert ("Warning", "InvalidSchedule") in [(t, r) for t, r, _ in clock.events]


def test_release_all_on_delete(platform: tuple[FakeKube, Clock]) -> None:
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    released = asyncio.run(reconcile.release_all(cast(Api, kube), NS, "power", SETTINGS))
    assert len(released) == 4
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3


def test_release_on_delete_survives_a_status_write(platform: tuple[FakeKube, Clock]) -> None:
    """The Deployment controller writes status right after a scale: the release must re-read, not give up."""
    kube, clock = platform
    switch(kube, "off")
    run_until_stable(kube, clock)
    listed = kube.list_workloads
    kube.list_workloads = lambda kind, ns: [  # type: ignore[method-assign]
        {**o, "metadata": {**o["metadata"], "resourceVersion": "stale"}} for o in listed(kind, ns)]
    released = asyncio.run(reconcile.release_all(cast(Api, kube), NS, "power", SETTINGS))
    assert len(released) == 4
    assert kube.replicas(DEPLOYMENT, "mlflow") == 3
    assert not any(w.asleep_by_us(o) for o in kube.objs.values())


def test_gate_without_power_schedule() -> None:
    assert gate.readiness([]) == (True, gate.NO_POWER_SCHEDULE)


def test_gate_wake_on_run_false() -> None:
    p = {"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"wakeOnRun": False}, "status": {"state": "Off"}}
    ready, why = gate.readiness([p])
    assert not ready and "wakeOnRun is false" in why


def test_manual_state_history() -> None:
    created = T0 - timedelta(days=1)
    first = history.manual_state({"state": "off"}, {}, {}, created, T0)
    assert first.status_manual == {"state": "off", "at": times.format_time(created)}
    same = history.manual_state({"state": "off"}, {"state": "Off", "manual": first.status_manual}, {}, created, T0)
    assert same.events[0].at == created
    changed = history.manual_state({"state": "on"}, {"state": "Off", "manual": first.status_manual}, {}, created, T0)
    assert changed.events[0].at == T0 and changed.events[0].state == "On"
    added_later = history.manual_state({"state": "on"}, {"state": "Off"}, {}, created, T0)
    assert added_later.events[0].at == T0
    ann = history.manual_state({}, {}, {naming.ANNOTATION_WAKE_REQUESTED_AT: "2026-06-10T11:00:00Z",
                                        naming.ANNOTATION_SLEEP_REQUESTED_AT: "yesterday"}, created, T0)
    assert [e.source for e in ann.events] == ["WakeRequested"] and len(ann.problems) == 1


def test_active_runs_and_activity() -> None:
    runs = [
        {"metadata": {"name": "a", "creationTimestamp": "2026-06-10T09:00:00Z"}, "status": {"phase": "Running"}},
        {"metadata": {"name": "b", "creationTimestamp": "2026-06-10T08:00:00Z"},
         "status": {"phase": "Succeeded", "completionTime": "2026-06-10T10:00:00Z"}},
        {"metadata": {"name": "c"}},  # just created: no phase yet, active
        {"metadata": {"name": "d", "deletionTimestamp": "2026-06-10T10:00:00Z"}, "status": {"phase": "Running"}},
        {"metadata": {"name": "e"}, "status": {"phase": "WaitingForPlatform"}},
    ]
    assert history.active_runs(runs) == ("a", "c", "e")
    assert history.last_run_activity(runs, None, False, True, T0) == datetime(2026, 6, 10, 10, tzinfo=UTC)
    assert history.last_run_activity([], None, True, False, T0) == T0
