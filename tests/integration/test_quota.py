# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""Quotas as the Developer Sandbox has them, on the bed's real quota admission and Job controller: a trainer
pod refused by a ResourceQuota makes the run Pending / QuotaExceeded with the quota's message (status and
Event), and the run starts by itself once the quota frees. The operator's defaults fill a spec without
resources or deadline: the pod counts in the quota's Terminating scope, the Job gets a TTL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from tests.helpers import figure, sleep_command, wait_for
from tests.integration.operator_fixtures import Operator, Runs, operator, runs, trainingrun_crd  # noqa: F401

pytestmark = pytest.mark.integration

DEFAULT_LIMITS = {"cpu": "500m", "memory": "512Mi"}
DEFAULTS = {"KTO_DEFAULT_RESOURCES": json.dumps({"limits": DEFAULT_LIMITS}),
            "KTO_DEFAULT_POD_DEADLINE_SECONDS": "1800", "KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": "900"}


def _quotas(core: client.CoreV1Api, namespace: str) -> None:
    # No long-running pod may start (the platform took that share); pods with a deadline share 768 MiB.
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "long-running"}, "spec": {
        "scopes": ["NotTerminating"], "hard": {"pods": "0"}}})
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "compute"}, "spec": {
        "scopes": ["Terminating"], "hard": {"limits.memory": "768Mi", "limits.cpu": "2"}}})


def _blocker(core: client.CoreV1Api, namespace: str) -> None:
    """A pod holding 512 MiB of the Terminating quota: the trainer's 512 MiB then exceed it."""
    core.create_namespaced_pod(namespace, {"metadata": {"name": "blocker"}, "spec": {
        "activeDeadlineSeconds": 600, "terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "python:3.11-slim", "command": sleep_command(600),
                        "resources": {"limits": {"cpu": "100m", "memory": "512Mi"}}}]}})


def test_quota_refusal_then_start_when_it_frees(operator: Operator, runs: Runs, bed: Any) -> None:
    core, batch = client.CoreV1Api(bed.api()), client.BatchV1Api(bed.api())
    ns = runs.namespace
    _quotas(core, ns)
    _blocker(core, ns)
    wait_for(lambda: core.read_namespaced_resource_quota("compute", ns).status.used.get("limits.memory") == "512Mi",
             30, "the blocker counted in the quota")
    operator.start(**DEFAULTS)
    submitted = time.monotonic()
    runs.submit("q1", parameters={"epochs": 2, "sleep": 0.2})  # no resources, no deadline: the defaults

    status = wait_for(lambda: (s := runs.status("q1")).get("reason") == "QuotaExceeded" and s, 90,
                      f"reason QuotaExceeded (now {runs.status('q1')})")
    refused_after = time.monotonic() - submitted
    assert status["phase"] == "Pending"
    assert "exceeded quota: compute" in status["message"] and "limits.memory=512Mi" in status["message"], status
    assert not runs.pods("q1")
    events = wait_for(lambda: [e for e in runs.events("q1") if e.reason == "QuotaExceeded"], 30, "Event")
    assert events[0].type == "Warning" and "exceeded quota: compute" in events[0].message

    # The quota frees: the Job controller retries by itself and the run goes on.
    core.delete_namespaced_pod("blocker", ns, grace_period_seconds=0)
    freed = time.monotonic()
    wait_for(lambda: runs.pods("q1"), 180, f"the trainer pod once the quota freed (now {runs.status('q1')})")
    started_after = time.monotonic() - freed
    final = runs.wait_phase("q1", ("Succeeded", "Failed"), 120)
    assert final["phase"] == "Succeeded", final

    # The defaults: resources, the pod's own deadline (Terminating scope: the long-running quota allows 0
    # pods, so the pod could not exist without it), the Job's TTL.
    (pod,) = runs.pods("q1")
    assert pod.spec.active_deadline_seconds == 1800
    assert pod.spec.containers[0].resources.limits == DEFAULT_LIMITS
    job = batch.read_namespaced_job(final["jobName"], ns)
    assert job.spec.ttl_seconds_after_finished == 900
    figure("test_quota_refusal_then_start_when_it_frees",
           f"QuotaExceeded in status {refused_after:.1f} s after submission; trainer pod {started_after:.1f} s "
           "after the quota freed (Job controller back-off)")
