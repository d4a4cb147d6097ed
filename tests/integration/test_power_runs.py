"""PowerSchedule and TrainingRuns together, with the whole operator (`python -m kto_operator`): a sleep is
deferred while a run is active, and a run submitted while the platform sleeps wakes it, waits in
WaitingForPlatform until it is On, then runs to Succeeded (the stand-in trainer logs to the bed's MLflow)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import wait_for
from tests.integration.power_support import Platform, PowerOperator, apply_crds

pytestmark = pytest.mark.integration

TR = ("kto.dev", "v1alpha1")


@pytest.fixture(scope="module")
def crds(bed: Any) -> None:
    apply_crds(bed)


class Runs:
    def __init__(self, bed: Any, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(bed.api())
        self.batch = client.BatchV1Api(bed.api())

    def submit(self, name: str, epochs: int, sleep: float) -> None:
        self.custom.create_namespaced_custom_object(*TR, self.ns, "trainingruns", {
            "apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name},
            "spec": {"image": "kto-standin-trainer:0.1.0", "experiment": f"power-{self.ns}",
                     "parameters": {"epochs": epochs, "sleep": sleep}}})

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(*TR, self.ns, "trainingruns", name).get("status") or {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status(name)
            return st if st.get("phase") == phase else None

        try:
            return wait_for(check, timeout, f"TrainingRun {name} {phase}", interval=0.1)
        except AssertionError as err:
            raise AssertionError(f"{err}; status: {self.status(name)}") from None

    def jobs(self) -> int:
        return len(self.batch.list_namespaced_job(self.ns).items)

    def drain(self) -> None:
        items = self.custom.list_namespaced_custom_object(*TR, self.ns, "trainingruns")["items"]
        for item in items:
            with contextlib.suppress(ApiException):
                self.custom.delete_namespaced_custom_object(*TR, self.ns, "trainingruns", item["metadata"]["name"])
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not self.custom.list_namespaced_custom_object(*TR, self.ns, "trainingruns")["items"],
                     30, "TrainingRuns deleted")
        for item in self.custom.list_namespaced_custom_object(*TR, self.ns, "trainingruns")["items"]:
            with contextlib.suppress(ApiException):
                self.custom.patch_namespaced_custom_object(*TR, self.ns, "trainingruns", item["metadata"]["name"],
                                                           {"metadata": {"finalizers": None}})


@pytest.fixture
def world(bed: Any, namespace: str, crds: None, tmp_path: Path) -> Iterator[tuple[Platform, Runs, PowerOperator]]:
    platform, runs = Platform(bed, namespace), Runs(bed, namespace)
    op = PowerOperator(bed, namespace, tmp_path, full=True).start()
    yield platform, runs, op
    try:
        runs.drain()
        platform.delete_powers()
    finally:
        op.stop()
        runs.drain()
        platform.strip_finalizers()
        print(f"---- operator log ({namespace}) ----\n{op.log()[-30000:]}")


def _platform(p: Platform) -> None:
    p.statefulset("mysql", 1)
    p.deployment("minio", 1)
    p.deployment("mlflow", 2)
    p.wait_ready("Deployment", "mlflow", 2)


def test_sleep_is_deferred_while_a_run_is_active(world: tuple[Platform, Runs, PowerOperator]) -> None:
    p, runs, _ = world
    _platform(p)
    p.create_power({"state": "on"})
    p.wait_state("On")
    runs.submit("long", epochs=12, sleep=1.0)
    runs.wait_phase("long", "Running", timeout=90)
    p.switch("off")  # e.g. the evening's off
    st = p.wait_state("On", reason="SleepDeferred")
    assert st["deferredBy"] == ["long"]
    assert p.replicas("Deployment", "mlflow") == 2 and p.replicas("StatefulSet", "mysql") == 1
    assert "long" in p.wait_event("SleepDeferred")
    assert runs.phase("long") == "Running"  # the run was never disturbed
    runs.wait_phase("long", "Succeeded", timeout=120)
    ended = time.monotonic()
    st = p.wait_state("Off", reason="Manual", timeout=30)
    print(f"sleep done {time.monotonic() - ended:.2f} s after the run succeeded")
    assert st["deferredBy"] == [] and st["lastRunActivity"]
    assert p.replicas("Deployment", "mlflow") == 0 and p.replicas("StatefulSet", "mysql") == 0


def test_run_submitted_while_asleep_wakes_the_platform_and_succeeds(
    world: tuple[Platform, Runs, PowerOperator],
) -> None:
    p, runs, _ = world
    _platform(p)
    p.create_power({"state": "off"})
    p.wait_state("Off")
    assert p.replicas("Deployment", "mlflow") == 0
    t0 = time.monotonic()
    runs.submit("wake", epochs=2, sleep=0.2)
    seen: list[tuple[str | None, str | None, int]] = []
    deadline = time.monotonic() + 150
    while runs.phase("wake") != "Succeeded":
        assert time.monotonic() < deadline, f"run did not succeed: {runs.status('wake')} / {p.status()}"
        st, rs = p.status(), runs.status("wake")
        entry = (st.get("state"), rs.get("phase"), runs.jobs())
        if not seen or seen[-1] != entry:
            seen.append(entry)
        # No Job before the platform is On (MySQL, then MinIO and MLflow Ready).
        if entry[2] > 0:
            assert any(s == "On" for s, _, _ in seen), seen
        time.sleep(0.1)
    print(f"submitted -> Succeeded in {time.monotonic() - t0:.1f} s; (power, run, jobs) seen: {seen}")
    assert ("WaitingForPlatform" in [ph for _, ph, _ in seen]), seen
    assert "WakingUp" in [s for s, _, _ in seen], seen
    p.wait_event("WakingUp", "woken for runs: wake")
    p.wait_event("Awake")
    # Restored exactly; and with the run over the platform goes back to sleep (spec.state is still off).
    st = p.wait_state("Off", reason="Manual", timeout=30)
    assert {x["name"]: x["savedReplicas"] for x in st["workloads"]} == {"mysql": 1, "minio": 1, "mlflow": 2}


def test_wake_on_run_false_lets_the_run_wait(world: tuple[Platform, Runs, PowerOperator]) -> None:
    p, runs, _ = world
    p.deployment("mlflow", 1)
    p.create_power({"state": "off", "wakeOnRun": False})
    p.wait_state("Off")
    runs.submit("patient", epochs=1, sleep=0.1)
    st = runs.wait_phase("patient", "WaitingForPlatform", timeout=60)
    assert "wakeOnRun is false" in str(st)
    st = p.wait_state("Off", reason="RunsWaitingForWake", timeout=30)
    assert p.replicas("Deployment", "mlflow") == 0
    p.switch("on")
    p.wait_state("On", timeout=60)
    runs.wait_phase("patient", "Succeeded", timeout=120)
