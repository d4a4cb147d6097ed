"""What the kopf indexes hold and how a follow reads them (views)."""

from __future__ import annotations

import json
from typing import Any

from kto_operator import naming, views


def run(phase: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                            "managedFields": [{"manager": "x"}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"image": "i"}, "status": {"phase": phase} if phase else {}}


def test_only_runs_a_follow_may_act_on_are_indexed() -> None:
    entry = views.run_entry(run("Running"))
    assert entry is not None and "managedFields" not in entry[("ns", "r")]["metadata"]
    assert views.run_entry(run()) != {}
    # Empty, not None: kopf removes an object's entry only for an empty result (None keeps the previous one).
    assert views.run_entry(run("Succeeded")) == {} and views.run_entry(run("Cancelled")) == {}
    assert views.run_entry(run("Running", deleting=True)) == {}


def test_children_are_indexed_by_their_run_uid() -> None:
    job = {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}, "managedFields": [{}]}}
    assert views.child_entry(job) == {"u1": {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}}}}
    assert views.child_entry({"metadata": {"name": "other", "labels": {}}}) is None


def test_a_run_read_from_the_index_is_an_unconfirmed_copy() -> None:
    stored = views.slim(run("Running"))
    found = views.Views(runs={("ns", "r"): [stored]}).run("ns", "r")
    assert found is not None and found[views.UNCONFIRMED]
    found["status"]["phase"] = "Succeeded"
    found["metadata"]["resourceVersion"] = "8"
    assert stored["status"]["phase"] == "Running" and stored["metadata"]["resourceVersion"] == "7"
    assert views.Views().run("ns", "r") is None
    confirmed = views.working_copy(stored, confirmed=True)
    assert views.UNCONFIRMED not in confirmed


def test_job_by_name_pods_and_power_schedules() -> None:
    old = {"metadata": {"name": "older"}}
    job = {"metadata": {"name": "r"}}
    index = views.Views(jobs={"u1": [old, job]}, pods={"u1": [{"metadata": {"name": "p"}}]},
                        powers={"ns": ["power"]})
    assert index.job("u1", "r") is job and index.job("u1", "x") is None and index.job("u2", "r") is None
    assert [p["metadata"]["name"] for p in index.run_pods("u1")] == ["p"] and index.run_pods("u2") == []
    assert index.has_power_schedule("ns") and not index.has_power_schedule("other")
    assert views.power_entry({"metadata": {"namespace": "ns", "name": "power"}}) == {"ns": "power"}


def test_index_entries_leave_out_what_no_follow_reads() -> None:
    body = run("Running")
    body["metadata"]["annotations"] = {views.LAST_HANDLED: '{"spec": {"image": "i"}}', "team": "a"}
    entry = views.run_entry(body)
    assert entry is not None and entry[("ns", "r")]["metadata"]["annotations"] == {"team": "a"}
    assert views.LAST_HANDLED in body["metadata"]["annotations"]  # the watched body itself untouched
    body["status"]["kopf"] = {"lastHandledConfiguration": '{"spec": {"image": "i"}}'}
    entry = views.run_entry(body)
    assert "kopf" not in entry[("ns", "r")]["status"] and entry[("ns", "r")]["status"]["phase"] == "Running"
    assert "kopf" in body["status"]
    job = {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}, "managedFields": [{}]},
           "spec": {"completionMode": "Indexed", "completions": 2, "activeDeadlineSeconds": 60,
                    "template": {"spec": {"containers": [{"name": "trainer"}]}}},
           "status": {"active": 2}}
    kept = views.job_entry(job)
    assert kept == {"u1": {"metadata": {"name": "r", "labels": {naming.LABEL_TRAININGRUN_UID: "u1"}},
                           "spec": {"completionMode": "Indexed", "completions": 2, "activeDeadlineSeconds": 60},
                           "status": {"active": 2}}}
    assert "template" in job["spec"] and views.job_entry({"metadata": {"name": "x"}}) is None


def test_index_entries_share_nothing_with_the_watch_event() -> None:
    """An entry holding the event's own dicts would keep the whole event (managedFields included) alive."""
    body = run("Running")
    body["metadata"]["labels"] = {naming.LABEL_TRAININGRUN_UID: "u1"}
    body["spec"] = {"command": ["python", "-c", "pass"], "parameters": {"epochs": 1}, "template": {"spec": {}}}
    entries = [next(iter(views.run_entry(body).values())), next(iter((views.job_entry(body) or {}).values()))]

    def parts(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [value, *(p for v in value.values() for p in parts(v))]
        if isinstance(value, list):
            return [value, *(p for v in value for p in parts(v))]
        return []

    event_parts = {id(p) for p in parts(body)}
    for entry in entries:
        assert not event_parts & {id(p) for p in parts(entry)}
    assert entries[0]["spec"] == body["spec"] and entries[0]["status"] == body["status"]
    assert "template" not in entries[1]["spec"] and entries[1]["spec"]["command"] == ["python", "-c", "pass"]
    assert "managedFields" not in entries[1]["metadata"]
    assert entries[1]["metadata"]["labels"] == body["metadata"]["labels"]


def test_index_entries_key_names_are_shared_between_objects() -> None:
    """Each watch event decodes its own copy of every key name; the entries keep one of each."""
    first, second = (json.loads(json.dumps(run("Running"))) for _ in range(2))
    a, b = (next(iter(views.run_entry(body).values())) for body in (first, second))
    key_a = next(k for k in a["metadata"] if k == "resourceVersion")
    key_b = next(k for k in b["metadata"] if k == "resourceVersion")
    assert key_a is key_b
