"""The Job bodies the operator keeps from watch events: only final states, without managedFields."""

from __future__ import annotations

import datetime
from typing import Any

from kto_operator import naming
from kto_operator.context import Context
from kto_operator.settings import OperatorSettings


def job(uid: str, finished: bool) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    return {"metadata": {"name": "j", "labels": {naming.LABEL_TRAININGRUN_UID: uid},
                         "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"backoffLimit": 0}, "status": {"conditions": conditions, "active": 0 if finished else 1}}


def context() -> Context:
    return Context(settings=OperatorSettings(), kube=None, tracker=None, metrics=None)  # type: ignore[arg-type]


def test_unfinished_jobs_are_not_kept() -> None:
    ctx = context()
    ctx.remember_job(job("u1", finished=False))
    assert ctx.last_job("u1") is None


def test_final_state_kept_without_managed_fields() -> None:
    ctx = context()
    ctx.remember_job(job("u1", finished=True))
    kept = ctx.last_job("u1")
    assert kept is not None and "managedFields" not in kept["metadata"]
    assert kept["status"]["conditions"][0]["type"] == "Complete" and kept["metadata"]["name"] == "j"
    assert ctx.last_job("u1", forget=True) is not None and ctx.last_job("u1") is None


def test_jobs_of_a_gone_run_are_forgotten() -> None:
    """The garbage collector's DELETED event comes after the finalizer: it must not stay for good."""
    ctx = context()
    for uid, name in (("u1", "run-a"), ("u2", "run-b")):
        body = job(uid, finished=True)
        body["metadata"].update(namespace="ns", annotations={naming.ANNOTATION_TRAININGRUN: name})
        ctx.remember_job(body)
    ctx.forget_jobs_of("ns", "run-a")
    assert ctx.last_job("u1") is None and ctx.last_job("u2") is not None


def test_own_writes_are_kept_for_live_runs_only() -> None:
    ctx = context()
    ctx.wrote("ns/a", "u1", "5", final=False)
    assert ctx.current("ns/a", "5") and not ctx.current("ns/a", "4") and not ctx.current("ns/b", "5")
    ctx.wrote("ns/a", "u1", "6", final=True)
    assert not ctx.current("ns/a", "6") and not ctx.own_writes
    ctx.wrote("ns/a", "u2", "7", final=False)
    ctx.forget_jobs_of("ns", "a")  # a run gone
    assert not ctx.own_writes


def test_own_writes_are_not_trusted_under_peering() -> None:
    ctx = context()
    ctx.solo = False
    ctx.wrote("ns/a", "u1", "5", final=False)
    assert not ctx.current("ns/a", "5")


def test_ended_runs_are_remembered_for_a_minute_only() -> None:
    ctx = context()
    now = [datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)]
    ctx.clock = lambda: now[0]
    ctx.wrote("ns/a", "u1", "5", final=True)
    now[0] += datetime.timedelta(seconds=30)
    ctx.wrote("ns/b", "u2", "9", final=True)
    assert set(ctx.ended) == {"u1", "u2"}
    now[0] += datetime.timedelta(seconds=31)
    ctx.wrote("ns/c", "u3", "12", final=True)  # u1 ended 61 s ago: forgotten
    assert list(ctx.ended) == ["u2", "u3"]
