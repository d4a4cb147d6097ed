"""What the kopf indexes hold and how a follow reads them (views)."""

from __future__ import annotations

import sys
from typing import Any

from kto_operator import naming, views

from .indexes import indexed


def run(phase: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                            "managedFields": [{"manager": "x"}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"image": "i"}, "status": {"phase": phase} if phase else {}}


def entry_of(body: dict[str, Any]) -> views.RunEntry:
    (entry,) = views.run_entry(body).values()
    return entry


def test_only_runs_a_follow_may_act_on_are_indexed() -> None:
    entry = entry_of(run("Running"))
    assert "managedFields" not in entry.body()["metadata"]
    assert views.run_entry(run()) != {}
    # Empty, not None: kopf removes an object's entry only for an empty result (None keeps the previous one).
    assert views.run_entry(run("Succeeded")) == {} and views.run_entry(run("Cancelled")) == {}
    assert views.run_entry(run("Running", deleting=True)) == {}


def test_a_run_entry_carries_what_the_sweep_reads_without_decoding() -> None:
    body = run("Pending")
    body["status"].update(reason="PodRefused", jobName="r-job")
    body["spec"]["cancel"] = True
    entry = entry_of(body)
    assert (entry.namespace, entry.name, entry.uid) == ("ns", "r", "u1")
    assert (entry.phase, entry.reason, entry.job_name, entry.cancel) == ("Pending", "PodRefused", "r-job", True)
    fresh = entry_of(run())
    assert (fresh.phase, fresh.reason, fresh.job_name, fresh.cancel) == (None, None, None, False)


def test_children_are_indexed_by_their_run_uid() -> None:
    job = {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}, "managedFields": [{}]}}
    (uid, stored), = (views.child_entry(job) or {}).items()
    assert uid == "u1" and stored.name == "r"
    assert stored.body() == {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}}}
    assert views.child_entry({"metadata": {"name": "other", "labels": {}}}) is None


def test_a_run_read_from_the_index_is_an_unconfirmed_copy() -> None:
    index = indexed(runs=[run("Running")])
    found = index.run("ns", "r")
    assert found is not None and found[views.UNCONFIRMED]
    found["status"]["phase"] = "Succeeded"
    found["metadata"]["resourceVersion"] = "8"
    again = index.run("ns", "r")
    assert again is not None and again["status"]["phase"] == "Running" and again["metadata"]["resourceVersion"] == "7"
    assert views.Views().run("ns", "r") is None
    without_status = indexed(runs=[run()]).run("ns", "r")
    assert without_status is not None and without_status["status"] == {}
    confirmed = views.working_copy({"metadata": {"name": "r"}}, confirmed=True)
    assert views.UNCONFIRMED not in confirmed and confirmed["status"] == {}


def test_job_by_name_pods_and_power_schedules() -> None:
    old, job = {"metadata": {"name": "older"}}, {"metadata": {"name": "r"}, "status": {"active": 1}}
    index = views.Views(jobs={"u1": [views.stored_job(old), views.stored_job(job)]},
                        pods={"u1": [views.stored_pod({"metadata": {"name": "p"}})]}, powers={"ns": ["power"]})
    assert index.job("u1", "r") == job and index.job("u1", "x") is None and index.job("u2", "r") is None
    found = index.job("u1", "r")
    assert found is not None
    found["status"]["active"] = 0
    assert index.job("u1", "r") == job  # every read decodes its own copy
    assert [p["metadata"]["name"] for p in index.run_pods("u1")] == ["p"] and index.run_pods("u2") == []
    assert index.has_power_schedule("ns") and not index.has_power_schedule("other")
    assert views.power_entry({"metadata": {"namespace": "ns", "name": "power"}}) == {"ns": "power"}


def test_index_entries_leave_out_what_no_follow_reads() -> None:
    body = run("Running")
    body["metadata"]["annotations"] = {views.LAST_HANDLED: '{"spec": {"image": "i"}}', "team": "a"}
    body["status"]["kopf"] = {"lastHandledConfiguration": '{"spec": {"image": "i"}}'}
    kept = entry_of(body).body()
    assert kept["metadata"]["annotations"] == {"team": "a"}
    assert "kopf" not in kept["status"] and kept["status"]["phase"] == "Running" and kept["spec"] == body["spec"]
    assert views.LAST_HANDLED in body["metadata"]["annotations"] and "kopf" in body["status"]  # body untouched
    job: dict[str, Any] = {
        "metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}, "managedFields": [{}]},
        "spec": {"completionMode": "Indexed", "completions": 2, "activeDeadlineSeconds": 60,
                 "template": {"spec": {"containers": [{"name": "trainer"}]}}},
        "status": {"active": 2}}
    (stored,) = (views.job_entry(job) or {}).values()
    assert stored.body() == {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}},
                             "spec": {"completionMode": "Indexed", "completions": 2, "activeDeadlineSeconds": 60},
                             "status": {"active": 2}}
    assert "template" in job["spec"] and views.job_entry({"metadata": {"name": "x"}}) is None


def test_an_index_entry_is_compact_text() -> None:
    """An entry is the object's JSON text, far smaller than the same object as dicts."""
    body = run("Running")
    body["spec"] = {"image": "registry/trainer:1", "parameters": {"epochs": 3, "learning_rate": 0.001},
                    "env": [{"name": f"VAR_{i}", "value": str(i)} for i in range(5)],
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}
    entry = entry_of(body)
    assert isinstance(entry.text, str) and entry.body()["spec"] == body["spec"]

    def size(value: Any) -> int:
        if isinstance(value, dict):
            return sys.getsizeof(value) + sum(size(k) + size(v) for k, v in value.items())
        if isinstance(value, list):
            return sys.getsizeof(value) + sum(size(v) for v in value)
        return sys.getsizeof(value)

    assert sys.getsizeof(entry.text) * 3 < size(entry.body())
