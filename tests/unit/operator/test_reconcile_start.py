"""The start (reconcile.ensure_started): one MLflow call (the run's creation), the Job, one status write that
carries kopf's diff base, noted for kopf's store only when the API server kept it. MLflow is searched for an
earlier attempt's run only when one may exist (Context.maybe_created), and with several replicas the attempt is
written first."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kto_operator import context, diffbase, reconcile, writes
from kto_operator.api import ApiError
from kto_operator.metrics import Metrics
from kto_operator.settings import OperatorSettings
from kto_operator.tracking import RunInfo

from .indexes import indexed

NS, NAME, UID = "ns", "run", "uid-1"
HANDLED = diffbase.encode({"spec": {"image": "trainer:1"}})


class FakeKube:
    """Status patches applied to one stored TrainingRun; `prunes`: a CRD without status.kopf; `refuses`: the
    API server down for status writes."""

    def __init__(self, prunes: bool = False) -> None:
        self.stored: dict[str, Any] = {"metadata": {"namespace": NS, "name": NAME, "uid": UID, "generation": 1,
                                                    "resourceVersion": "1"}, "status": {}}
        self.prunes, self.refuses, self.jobs, self.statuses = prunes, False, 0, []  # type: ignore[var-annotated]

    async def patch(self, kind: Any, namespace: str, name: str, body: dict[str, Any], *,
                    status: bool = False) -> dict[str, Any]:
        if self.refuses:
            raise ApiError(503, "Service Unavailable", "etcd leader changed")
        written = {k: v for k, v in body["status"].items() if not (self.prunes and k == "kopf")}
        self.statuses.append(written)
        self.stored["status"] = {**self.stored["status"], **written}
        self.stored["metadata"]["resourceVersion"] = str(int(self.stored["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.stored)

    async def create_owned(self, kind: Any, manifest: Any, owner_uid: str) -> bool:
        self.jobs += 1
        return self.jobs == 1  # later: found, an earlier attempt's


class FakeTracker:
    """MLflow as the start sees it: any call but the run's creation fails the test."""

    def __init__(self) -> None:
        self.searched: list[bool] = []

    async def ensure_run(self, *args: Any, search: bool = True) -> tuple[RunInfo, bool]:
        self.searched.append(search)
        return RunInfo("r1", "7", "RUNNING"), True


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes, "event", lambda *args: None)  # kopf posts Events from its handlers only


def start(kube: FakeKube, solo: bool = True, maybe_created: frozenset[str] = frozenset(),
          ctx: reconcile.Context | None = None) -> reconcile.Context:
    ctx = ctx or reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=FakeTracker(),  # type: ignore[arg-type]
                                   metrics=Metrics(), solo=solo, maybe_created=set(maybe_created))
    tr = {**copy.deepcopy(kube.stored), "spec": {"image": "trainer:1", "experiment": "e",
                                                 "parameters": {"epochs": 1}}}
    asyncio.run(reconcile.ensure_started(ctx, indexed(runs=[tr]), NS, NAME, 0, HANDLED))
    return ctx


def test_the_jobcreated_write_carries_kopfs_diff_base() -> None:
    kube = FakeKube()
    ctx = start(kube)
    assert kube.jobs == 1 and kube.statuses[-1]["reason"] == "JobCreated"
    assert diffbase.carried(kube.stored) == HANDLED and ctx.handled == {UID: HANDLED}


def test_a_crd_that_prunes_it_leaves_kopfs_own_store() -> None:
    kube = FakeKube(prunes=True)
    ctx = start(kube)
    assert kube.statuses[-1]["reason"] == "JobCreated" and not ctx.handled


def searched(ctx: reconcile.Context) -> list[bool]:
    return ctx.tracker.searched  # type: ignore[attr-defined, no-any-return]


def test_a_run_new_to_a_lone_replica_is_created_without_a_search_and_one_status_write() -> None:
    kube = FakeKube()
    ctx = start(kube)
    assert searched(ctx) == [False]
    assert [s["reason"] for s in kube.statuses] == ["JobCreated"]
    assert not ctx.maybe_created  # the status names the MLflow run now


def test_a_run_listed_unrecorded_at_startup_is_searched_for() -> None:
    kube = FakeKube()
    ctx = start(kube, maybe_created=frozenset({UID}))
    assert searched(ctx) == [True] and not ctx.maybe_created


def test_a_second_attempt_of_this_process_searches() -> None:
    """The first attempt made the MLflow run and the Job, and its status write failed: the status names neither."""
    kube = FakeKube()
    kube.refuses = True
    ctx = reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=FakeTracker(),  # type: ignore[arg-type]
                            metrics=Metrics())
    with pytest.raises(ApiError):
        start(kube, ctx=ctx)
    kube.refuses = False
    start(kube, ctx=ctx)
    assert searched(ctx) == [False, True]
    assert kube.stored["status"]["mlflow"]["runId"] == "r1" and kube.jobs == 2 and not ctx.maybe_created


def test_an_ended_run_is_forgotten() -> None:
    ctx = reconcile.Context(settings=OperatorSettings(), kube=FakeKube(), tracker=FakeTracker(),  # type: ignore[arg-type]
                            metrics=Metrics(), maybe_created={UID})
    ctx.wrote(f"{NS}/{NAME}", UID, "2", final=False)
    assert ctx.maybe_created == {UID}
    ctx.wrote(f"{NS}/{NAME}", UID, "3", final=True)
    assert not ctx.maybe_created


def test_with_several_replicas_the_attempt_is_written_before_the_create() -> None:
    kube = FakeKube()
    ctx = start(kube, solo=False)
    assert searched(ctx) == [False]
    assert [s["reason"] for s in kube.statuses] == ["CreatingRun", "JobCreated"]


class ListingKube:
    def __init__(self) -> None:
        self.namespaces: list[str | None] = []

    async def list(self, kind: Any, namespace: str | None) -> list[dict[str, Any]]:
        self.namespaces.append(namespace)
        return [{"metadata": {"uid": "new"}, "status": {}}, {"metadata": {"uid": "older"}},
                {"metadata": {"uid": "retried"}, "status": {"kopf": {"progress": {"start": {"retries": 1}}}}},
                {"metadata": {"uid": "waiting"}, "status": {"phase": "Pending", "reason": "MlflowUnavailable"}},
                {"metadata": {"uid": "recorded"}, "status": {"phase": "Pending", "mlflow": {"runId": "r1"}}}]


def test_at_startup_the_runs_whose_status_names_no_mlflow_run_are_the_ones_maybe_created() -> None:
    """Not only an empty status: kopf's record of a failed start, hidden from the watched copies the start sees."""
    kube = ListingKube()
    assert asyncio.run(context.unrecorded(kube, None)) == {"new", "older", "retried", "waiting"}  # type: ignore[arg-type]
    assert kube.namespaces == [None]
