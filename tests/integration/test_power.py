"""PowerSchedule on the bed: real API server (CEL, status subresource), real ReplicaSet/StatefulSet/CronJob
controllers, pods run by the node agent, the operator as a subprocess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kto_operator import api, naming
from kto_operator.power.gate import platform_ready
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import wait_for
from tests.integration.power_support import GROUP, PLURAL, VERSION, Platform, PowerOperator, apply_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crds(bed: Any) -> None:
    apply_crds(bed)


@pytest.fixture
def platform(bed: Any, namespace: str, crds: None) -> Platform:
    return Platform(bed, namespace)


@pytest.fixture
def power_operator(bed: Any, namespace: str, platform: Platform, tmp_path: Path) -> Iterator[PowerOperator]:
    op = PowerOperator(bed, namespace, tmp_path).start()
    yield op
    try:
        if not op.alive():
            op.start()
        platform.delete_powers()
    finally:
        op.stop()
        platform.strip_finalizers()
        print(f"---- power operator log ({namespace}) ----\n{op.log()[-20000:]}")


def _ready(bed: Any, namespace: str) -> tuple[bool, str]:
    """The gate's answer through the operator's own API client, logged in with the bed's kubeconfig."""

    async def ask() -> tuple[bool, str]:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("KUBECONFIG", str(bed.kubeconfig))
            kube = api.Api.connect()
        try:
            return await platform_ready(namespace, kube)
        finally:
            await kube.close()

    return asyncio.run(ask())


def _annotations(platform: Platform, kind: str, name: str) -> dict[str, str]:
    return dict(platform.get(kind, name).metadata.annotations or {})


def test_crd_rejects_what_cel_can_judge(platform: Platform) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"schedule": {"on": "0 8 * *"}}, "5 space-separated fields"),
        ({"schedule": {"off": "0 8 * * * *"}}, "5 space-separated fields"),
        ({"schedule": {"on": "0 8 * * 1-5", "timezone": "Europe Paris"}}, "IANA name"),
        ({"idleAfter": "30x"}, "duration"),
        ({"idleAfter": "1d"}, "duration"),
        ({"state": "sleep"}, "Unsupported value"),
        ({"schedule": {}}, "schedule needs on, off or both"),
        ({"state": "on", "exclude": [{}]}, "empty exclude selector"),
        ({"state": "on", "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "need values"),
        ({"wakeOnRun": True}, "at least one of state, schedule or idleAfter"),
    ]
    for i, (spec, message) in enumerate(bad):
        with pytest.raises(ApiException) as err:
            platform.create_power(spec, name=f"bad-{i}")
        assert err.value.status == 422 and message in str(err.value.body), (spec, err.value.body)
    platform.create_power({"schedule": {"on": "0 8 * * MON-FRI", "off": "30 19 * * 1-5",
                                        "timezone": "America/New_York"}, "idleAfter": "1h30m"}, name="good")
    assert platform.power("good")["spec"]["wakeOnRun"] is True  # defaulted
    platform.custom.delete_namespaced_custom_object(GROUP, VERSION, platform.ns, PLURAL, "good")


def test_sleep_and_wake_restore_exactly_with_real_pods(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.statefulset("db", 2)
    p.deployment("web", 3)
    p.deployment("api", 1)
    p.deployment("idle", 0)
    p.cronjob("nightly")
    p.wait_ready("StatefulSet", "db", 2)
    p.wait_ready("Deployment", "web", 3)
    p.wait_ready("Deployment", "api", 1)
    p.create_power({"state": "on"})
    p.wait_state("On", reason="Manual")
    assert _ready(p.bed, p.ns) == (True, "PowerSchedule power is On")

    t0 = time.monotonic()
    p.switch("off")
    st = p.wait_state("Off", timeout=30)
    slept = time.monotonic() - t0
    assert {(x["kind"], x["name"]): x.get("savedReplicas", x.get("savedSuspend")) for x in st["workloads"]} == {
        ("StatefulSet", "db"): 2, ("Deployment", "web"): 3, ("Deployment", "api"): 1, ("CronJob", "nightly"): False}
    assert p.replicas("Deployment", "web") == 0 and p.replicas("StatefulSet", "db") == 0
    assert p.get("CronJob", "nightly").spec.suspend is True
    assert _annotations(p, "Deployment", "web")[naming.ANNOTATION_SAVED_REPLICAS] == "3"
    assert _annotations(p, "StatefulSet", "db")[naming.ANNOTATION_SAVED_REPLICAS] == "2"
    assert naming.ANNOTATION_SAVED_REPLICAS not in _annotations(p, "Deployment", "idle")  # 0 stays 0, nothing saved
    # The real controllers remove the pods; the node agent stops the processes.
    wait_for(lambda: sum(p.all_pods(app) for app in ("web", "db", "api")) == 0, 60, "pods gone")
    ready, why = _ready(p.bed, p.ns)
    assert not ready and "Off" in why

    # Wake: StatefulSets first and Ready, then Deployments.
    t0 = time.monotonic()
    p.switch("on")
    first_web_scale, db_ready_at = None, None
    deadline = time.monotonic() + 90
    while p.status().get("state") != "On":
        assert time.monotonic() < deadline, f"wake timed out: {p.status()}"
        now = time.monotonic()
        if db_ready_at is None and p.ready("StatefulSet", "db") == 2:
            db_ready_at = now
        if first_web_scale is None and p.replicas("Deployment", "web") > 0:
            first_web_scale = now
            assert db_ready_at is not None, "Deployment restored before the StatefulSet was Ready"
        time.sleep(0.05)
    woke = time.monotonic() - t0
    assert p.replicas("Deployment", "web") == 3 and p.replicas("Deployment", "api") == 1
    assert p.replicas("StatefulSet", "db") == 2 and p.replicas("Deployment", "idle") == 0
    assert p.get("CronJob", "nightly").spec.suspend is False
    assert p.ready("Deployment", "web") == 3 and p.running_pods("web") == 3  # On means Ready
    assert not any(k.startswith("kto.dev/") for k in _annotations(p, "Deployment", "web"))
    for reason in ("GoingToSleep", "Asleep", "WakingUp", "Awake"):
        p.wait_event(reason)
    print(f"sleep {slept:.2f} s, wake (Ready) {woke:.2f} s")


def test_exclusions(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.deployment("kto-operator", 1, labels={"app.kubernetes.io/name": "kto-operator"})
    p.deployment("legacy", 2, labels={"axa.com/dailyclean": "false"})
    p.deployment("grafana", 1, labels={"tier": "observability"})
    p.statefulset("outside", 1, labels={"tier": "other"})
    p.deployment("mlflow", 2, labels={"tier": "platform"})
    p.statefulset("mysql", 1, labels={"tier": "platform"})
    p.create_power({"state": "off", "selector": {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["platform", "observability"]}]},
        "exclude": [{"matchLabels": {"tier": "observability"}}]})
    st = p.wait_state("Off", reason="Manual")
    assert sorted(x["name"] for x in st["workloads"]) == ["mlflow", "mysql"]
    assert p.replicas("Deployment", "mlflow") == 0 and p.replicas("StatefulSet", "mysql") == 0
    assert p.replicas("Deployment", "kto-operator") == 1  # the operator never scales itself
    assert p.replicas("Deployment", "legacy") == 2  # Dailyclean's opt-out label
    assert p.replicas("Deployment", "grafana") == 1  # spec.exclude
    assert p.replicas("StatefulSet", "outside") == 1  # not selected
    for kind, name in (("Deployment", "kto-operator"), ("Deployment", "legacy"), ("Deployment", "grafana")):
        assert not any(k.startswith("kto.dev/") for k in _annotations(p, kind, name))


def test_human_edit_while_asleep_is_kept(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.deployment("web", 3)
    p.deployment("api", 2)
    p.create_power({"state": "off"})
    p.wait_state("Off")
    p.scale("Deployment", "web", 1)  # kubectl scale while asleep
    p.switch("on")
    p.wait_state("On")
    p.wait_ready("Deployment", "web", 1)
    p.wait_ready("Deployment", "api", 2)
    assert p.replicas("Deployment", "web") == 1  # the person's value, not the saved 3
    assert p.replicas("Deployment", "api") == 2
    assert not any(k.startswith("kto.dev/") for k in _annotations(p, "Deployment", "web"))
    p.wait_event("HumanEditKept", "Deployment/web: scaled to 1 by hand")


def test_operator_restarted_while_asleep_still_restores(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.statefulset("db", 1)
    p.deployment("web", 4)
    p.create_power({"state": "off"})
    p.wait_state("Off")
    power_operator.stop()
    # A stopped operator leaves the platform as it was (its shutdown neither wakes nor forgets): asleep,
    # with the saved counts on the workloads, which is all the restarted one will have to go on.
    assert not power_operator.alive()
    assert p.replicas("Deployment", "web") == 0 and p.replicas("StatefulSet", "db") == 0
    assert _annotations(p, "Deployment", "web")[naming.ANNOTATION_SAVED_REPLICAS] == "4"
    assert _annotations(p, "StatefulSet", "db")[naming.ANNOTATION_SAVED_REPLICAS] == "1"
    p.switch("on")  # while no operator runs: only the restarted one can act on it
    power_operator.start()
    p.wait_state("On", timeout=90)
    assert p.replicas("Deployment", "web") == 4 and p.replicas("StatefulSet", "db") == 1
    p.wait_ready("Deployment", "web", 4)


def test_recreated_power_schedule_restores_from_annotations(platform: Platform,
                                                            power_operator: PowerOperator) -> None:
    """Even the status can go: the saved values live on the workloads."""
    p = platform
    p.deployment("web", 3)
    p.create_power({"state": "off"})
    p.wait_state("Off")
    # Deleting the PowerSchedule wakes what it put to sleep (no switch left to wake it later).
    p.delete_powers()
    wait_for(lambda: p.replicas("Deployment", "web") == 3, 30, "released on delete")
    p.create_power({"state": "off"}, name="again")
    p.wait_state("Off", name="again")
    # Status wiped by hand: a wake still reads the annotations.
    p.custom.patch_namespaced_custom_object_status(GROUP, VERSION, p.ns, PLURAL, "again",
                                                   {"status": {"workloads": None, "state": "Off"}})
    p.switch("on", name="again")
    p.wait_state("On", name="again")
    assert p.replicas("Deployment", "web") == 3


def test_idle_sleep(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.deployment("web", 2)
    p.create_power({"idleAfter": "8s"})
    st = p.wait_state("On", reason="Default")
    assert st["nextOff"]  # the idle sleep is announced
    st = p.wait_state("Off", reason="Idle", timeout=30)
    assert p.replicas("Deployment", "web") == 0
    # A one-shot wake request (annotation) wakes it; idle puts it back to sleep idleAfter later.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    p.patch_power({"metadata": {"annotations": {"kto.dev/wake-requested-at": now}}})
    p.wait_state("On", reason="WakeRequested")
    assert p.replicas("Deployment", "web") == 2
    p.wait_state("Off", reason="Idle", timeout=30)


def test_invalid_timezone_is_reported(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.create_power({"state": "on", "schedule": {"off": "0 19 * * *", "timezone": "Mars/Olympus"}})
    st = p.wait_state("On", reason="InvalidSchedule")
    assert "Mars/Olympus" in st["message"]
    assert "Mars/Olympus" in p.wait_event("InvalidSchedule")
    assert all(t == "Warning" for t, r, _ in p.events() if r == "InvalidSchedule")
    p.patch_power({"spec": {"schedule": {"timezone": "Europe/Paris"}}})
    st = p.wait_state("On", reason="Manual")
    assert st["nextOff"].endswith(":00:00Z")


def test_schedule_edges_in_a_time_zone(platform: Platform, power_operator: PowerOperator) -> None:
    """Cron edges in Asia/Kolkata (+05:30): on at this minute, off at the next one, switched on time."""
    p = platform
    p.deployment("web", 1)
    if time.time() % 60 > 40:  # alignment, not an assertion: leave the rule a whole minute to show On
        time.sleep(61 - time.time() % 60)
    minute = time.time() // 60 * 60
    here, nxt = (time.gmtime(minute + 5.5 * 3600 + d) for d in (0, 60))
    p.create_power({"schedule": {"on": f"{here.tm_min} {here.tm_hour} * * *",
                                 "off": f"{nxt.tm_min} {nxt.tm_hour} * * *", "timezone": "Asia/Kolkata"}})
    st = p.wait_state("On", reason="Schedule")
    assert st["nextOff"] == time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(minute + 60))
    assert st["nextOn"] == time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(minute + 86400))
    st = p.wait_state("Off", reason="Schedule", timeout=90)
    assert time.time() >= minute + 60
    assert "+05:30 (Asia/Kolkata)" in st["message"]
    assert p.replicas("Deployment", "web") == 0


def test_two_power_schedules_the_oldest_governs(platform: Platform, power_operator: PowerOperator) -> None:
    p = platform
    p.deployment("web", 1)
    p.create_power({"state": "on"})
    p.wait_state("On")
    p.create_power({"state": "off"}, name="second")
    wait_for(lambda: p.status("second").get("reason") == "Duplicate", 30, "second is Duplicate")
    assert p.replicas("Deployment", "web") == 1


def test_full_operator_runs_the_power_handlers(bed: Any, namespace: str, platform: Platform,
                                               tmp_path: Path) -> None:
    """`python -m kto_operator` (the product's entry point) loads the power handlers with its own kopf
    settings (finalizer, annotation storage, no CRD scanning)."""
    op = PowerOperator(bed, namespace, tmp_path, full=True).start()
    try:
        platform.deployment("web", 2)
        platform.create_power({"state": "off"})
        platform.wait_state("Off", timeout=60)
        assert platform.replicas("Deployment", "web") == 0
        platform.switch("on")
        platform.wait_state("On", timeout=60)
        assert platform.replicas("Deployment", "web") == 2
        platform.delete_powers()
        wait_for(lambda: not client.CustomObjectsApi(bed.api()).list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL)["items"], 30, "PowerSchedule deleted (finalizer released)")
    finally:
        op.stop()
        platform.strip_finalizers()
        print(f"---- operator log ({namespace}) ----\n{op.log()[-20000:]}")
