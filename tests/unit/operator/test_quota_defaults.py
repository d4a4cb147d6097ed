"""Quotas: a pod refused by a ResourceQuota shows as Pending/QuotaExceeded (from the Job's FailedCreate Event);
defaults an admin sets for runs whose spec says nothing (resources, pod deadline, Job TTL)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kto_operator import jobs, refusals, status, times
from kto_operator.api import EVENTS, Api, Kind
from kto_operator.settings import OperatorSettings, SettingsError

REPO = Path(__file__).resolve().parents[3]
IDS = jobs.MlflowIds(run_id="abc", experiment_id="1", tracking_uri="http://mlflow:5000")
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
QUOTA_MESSAGE = ('Error creating: pods "r-x7k2p" is forbidden: exceeded quota: compute, requested: '
                 'limits.memory=4000Mi, used: limits.memory=0, limited: limits.memory=1Gi')
VGG = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "1300m", "memory": "4000Mi"}}


def run(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": "team", "uid": "u-1"},
            "spec": {"image": "kto-trainer:1", "experiment": "e", **spec}}


def shipped_config() -> dict[str, str]:
    """The kto-operator-config literals of manifests/operator."""
    kustomization = yaml.safe_load((REPO / "manifests/operator/kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "kto-operator-config"]
    return dict(item.split("=", 1) for item in generator["literals"])


# Settings --------------------------------------------------------------------------------------------------
def test_no_defaults_unless_configured() -> None:
    settings = OperatorSettings.from_env({})
    assert (settings.default_resources, settings.default_pod_deadline, settings.default_ttl) == (None, None, None)
    none = OperatorSettings.from_env({"KTO_DEFAULT_RESOURCES": "none", "KTO_DEFAULT_POD_DEADLINE_SECONDS": "none",
                                      "KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": ""})
    assert (none.default_resources, none.default_pod_deadline, none.default_ttl) == (None, None, None)


def test_shipped_defaults_parse_and_fit_vgg16() -> None:
    settings = OperatorSettings.from_env(shipped_config())
    assert settings.default_resources == VGG
    assert settings.default_pod_deadline == 86400 and settings.default_ttl == 3600


@pytest.mark.parametrize("env, match", [
    ({"KTO_DEFAULT_RESOURCES": "{memory: 2Gi}"}, "must be JSON"),
    ({"KTO_DEFAULT_RESOURCES": '{"memory": "2Gi"}'}, "limits` and/or `requests"),
    ({"KTO_DEFAULT_RESOURCES": '{"limits": {"memory": ["2Gi"]}}'}, "limits` and/or `requests"),
    ({"KTO_DEFAULT_RESOURCES": "{}"}, "limits` and/or `requests"),
    ({"KTO_DEFAULT_POD_DEADLINE_SECONDS": "0"}, ">= 1"),
    ({"KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": "-1"}, ">= 0"),
    ({"KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": "an hour"}, "integer"),
])
def test_bad_defaults_are_refused_at_start(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        OperatorSettings.from_env(env)


# The Job ---------------------------------------------------------------------------------------------------
SETTINGS = OperatorSettings(default_resources=VGG, default_pod_deadline=86400, default_ttl=3600)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def test_defaults_fill_what_the_spec_leaves_out() -> None:
    job = jobs.build_job(run(), SETTINGS, IDS)
    assert pod_spec(job)["containers"][0]["resources"] == VGG
    assert pod_spec(job)["activeDeadlineSeconds"] == 86400
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in job["spec"]  # the Job's own deadline is the run's only


def test_the_spec_wins() -> None:
    own = {"limits": {"memory": "8Gi"}}
    job = jobs.build_job(run(resources=own, activeDeadlineSeconds=600, ttlSecondsAfterFinished=0), SETTINGS, IDS)
    assert pod_spec(job)["containers"][0]["resources"] == own
    assert pod_spec(job)["activeDeadlineSeconds"] == 600 and job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 0


def test_without_defaults_the_job_is_as_before() -> None:
    job = jobs.build_job(run(), OperatorSettings(), IDS)
    assert "resources" not in pod_spec(job)["containers"][0]
    assert "activeDeadlineSeconds" not in pod_spec(job) and "ttlSecondsAfterFinished" not in job["spec"]
    # The run's deadline still reaches the pod.
    assert pod_spec(jobs.build_job(run(activeDeadlineSeconds=60), OperatorSettings(), IDS))["activeDeadlineSeconds"] \
        == 60


# Refusals --------------------------------------------------------------------------------------------------
def event(reason: str, message: str, when: str) -> dict[str, Any]:
    return {"reason": reason, "message": message, "lastTimestamp": when,
            "metadata": {"creationTimestamp": "2026-01-01T11:00:00Z"}}


def test_quota_refusal_is_pending_with_the_quotas_message() -> None:
    found = refusals.refusal([event("SuccessfulCreate", "Created pod: r-1", "2026-01-01T11:59:00Z"),
                              event("FailedCreate", QUOTA_MESSAGE, "2026-01-01T11:59:30Z")])
    assert found is not None
    assert (found.phase, found.reason) == (status.PENDING, "QuotaExceeded")
    assert found.message == f"the Job cannot create the trainer pod: {QUOTA_MESSAGE}"


def test_the_newest_refusal_counts_and_other_refusals_are_named_too() -> None:
    security = 'Error creating: pods "r-2" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'
    found = refusals.refusal([event("FailedCreate", QUOTA_MESSAGE, "2026-01-01T11:00:00Z"),
                              event("FailedCreate", security, "2026-01-01T11:30:00Z")])
    assert found is not None and found.reason == "PodRefused" and "PodSecurity" in found.message
    assert refusals.refusal([event("SuccessfulCreate", "Created pod: r-1", "2026-01-01T11:00:00Z")]) is None
    assert refusals.refusal([]) is None


@dataclasses.dataclass
class FakeKube:
    """The read refusals.observe makes, the pods it is given (unit test of the decision; the bed test uses the
    real API)."""

    pods: list[dict[str, Any]]
    events: list[dict[str, Any]]
    event_reads: int = 0

    async def list(self, kind: Kind, namespace: str, *, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
        assert kind is EVENTS and fields == {"involvedObject.uid": "job-uid"}
        self.event_reads += 1
        return self.events


def job(age: float) -> dict[str, Any]:
    created = times.format_time(NOW - datetime.timedelta(seconds=age))
    return {"metadata": {"name": "r", "uid": "job-uid", "creationTimestamp": created}, "status": {}}


def observe(kube: FakeKube, age: float) -> status.Observation:
    return asyncio.run(refusals.observe(cast(Api, kube), job(age), kube.pods, "team", NOW, status.Limits()))


def test_a_pod_less_job_old_enough_has_its_events_read() -> None:
    kube = FakeKube(pods=[], events=[event("FailedCreate", QUOTA_MESSAGE, "2026-01-01T11:59:59Z")])
    assert observe(kube, age=1).reason == "JobCreated" and kube.event_reads == 0  # a new Job: no extra call
    assert observe(kube, age=30).reason == "QuotaExceeded" and kube.event_reads == 1
    kube.events = []
    assert observe(kube, age=30).reason == "JobCreated"


def test_a_job_with_a_pod_never_has_its_events_read() -> None:
    pod = {"metadata": {"name": "r-1", "creationTimestamp": "2026-01-01T11:59:00Z"},
           "status": {"phase": "Pending"}, "spec": {}}
    kube = FakeKube(pods=[pod], events=[event("FailedCreate", QUOTA_MESSAGE, "2026-01-01T11:58:00Z")])
    assert observe(kube, age=60).reason == "PodPending" and kube.event_reads == 0
