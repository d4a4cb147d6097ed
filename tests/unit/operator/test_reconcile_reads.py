"""When a final decision reads the TrainingRun first (reconcile.follow): a watched copy at this replica's own last
write is used as is; any other copy, or any copy under peering, is read from the API server first."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kto_operator import naming, reconcile, writes
from kto_operator.metrics import Metrics
from kto_operator.settings import OperatorSettings
from kto_operator.tracking import Closed

from .indexes import indexed

NS, NAME, UID = "ns", "run", "uid-1"


class FakeKube:
    """The API server as far as a follow sees it: one stored TrainingRun, its version bumped by each write."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored, self.calls = stored, []  # type: ignore[var-annotated]

    async def get(self, kind: Any, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return copy.deepcopy(self.stored)

    async def patch(self, kind: Any, namespace: str, name: str, body: dict[str, Any], *,
                    status: bool = False) -> dict[str, Any]:
        self.calls.append(("patch", name))
        await asyncio.sleep(0)  # a request: other handlers run meanwhile
        expected = (body.get("metadata") or {}).get("resourceVersion")
        assert expected in (None, self.stored["metadata"]["resourceVersion"]), "a conditional write on a stale copy"
        self.stored["status"] = {**self.stored.get("status", {}), **body["status"]}
        self.stored["metadata"]["resourceVersion"] = str(int(self.stored["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.stored)


class FakeTracker:
    def __init__(self) -> None:
        self.terminated: list[str] = []
        self.params: list[Any] = []

    async def terminate(self, uri: str, run_id: str, status: str, overrides: Any = frozenset(),
                        params: Any = None) -> Closed:
        self.terminated.append(status)
        self.params.append(params)
        return Closed(True)

    async def metrics(self, uri: str, run_id: str) -> dict[str, float]:
        return {}

    async def epochs_done(self, uri: str, run_id: str, metrics: Any) -> int:
        return 0


def run_body(version: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": NAME, "uid": UID, "generation": 1, "resourceVersion": version},
            "spec": {"image": "trainer:1", "experiment": "e"},
            "status": {"phase": phase, "reason": phase, "message": "m", "jobName": NAME, "observedGeneration": 1,
                       "mlflow": {"runId": "r1", "experimentId": "1"}}}


def finished_job(uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": NAME, "uid": f"job-of-{uid}",
                         "labels": {naming.LABEL_TRAININGRUN_UID: uid}},
            "spec": {"completions": 1, "parallelism": 1},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes, "event", lambda *args: None)  # kopf posts Events from its handlers only


def follow(ctx: reconcile.Context, watched: dict[str, Any]) -> None:
    uid = watched["metadata"]["uid"]
    views = indexed(runs=[watched], jobs={uid: [finished_job(uid)]})
    asyncio.run(reconcile.follow(ctx, views, NS, NAME, with_progress=False))


def context(kube: FakeKube, solo: bool, own_write: str | None) -> reconcile.Context:
    ctx = reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=FakeTracker(),  # type: ignore[arg-type]
                            metrics=Metrics(), solo=solo)
    if own_write is not None:
        ctx.wrote(f"{NS}/{NAME}", UID, own_write, final=False)
    return ctx


def test_a_copy_at_our_own_last_write_ends_the_run_without_a_read() -> None:
    kube = FakeKube(run_body("7"))
    ctx = context(kube, solo=True, own_write="7")
    follow(ctx, run_body("7"))
    assert kube.calls == [("patch", NAME)]
    assert kube.stored["status"]["phase"] == "Succeeded"
    assert ctx.tracker.terminated == ["FINISHED"]  # type: ignore[attr-defined]
    assert not ctx.own_writes  # a final write ends what is kept for the run


@pytest.mark.parametrize(("solo", "own_write"), [(True, None), (True, "6"), (False, "7")],
                         ids=["never-written", "other-version", "peering"])
def test_any_other_copy_is_read_before_the_end(solo: bool, own_write: str | None) -> None:
    kube = FakeKube(run_body("7"))
    ctx = context(kube, solo=solo, own_write=own_write)
    follow(ctx, run_body("7"))
    assert kube.calls == [("get", NAME), ("patch", NAME)]
    assert kube.stored["status"]["phase"] == "Succeeded"


def test_a_run_already_ended_is_not_closed_again() -> None:
    """The watch lags our own final write: the copy says Running, the API server Succeeded."""
    kube = FakeKube(run_body("8", phase="Succeeded"))
    ctx = context(kube, solo=True, own_write=None)
    follow(ctx, run_body("7"))
    assert kube.calls == [("get", NAME)]
    assert ctx.tracker.terminated == []  # type: ignore[attr-defined]


def test_a_pass_asked_for_during_the_end_reads_nothing_more() -> None:
    kube = FakeKube(run_body("7"))
    ctx = context(kube, solo=True, own_write="7")
    watched = run_body("7")
    views = indexed(runs=[watched], jobs={UID: [finished_job()]})

    async def scenario() -> None:
        first = asyncio.create_task(reconcile.follow(ctx, views, NS, NAME, with_progress=False))
        await asyncio.sleep(0)  # the first follow holds the run; this event only asks it for one more pass
        await reconcile.follow(ctx, views, NS, NAME, with_progress=False)
        await first

    asyncio.run(scenario())
    assert kube.calls == [("patch", NAME)]  # the extra pass would have found the lagging copy and read it
    assert ctx.coalescer.enter(f"{NS}/{NAME}", False)  # the key is released


def test_a_later_event_before_the_watch_caught_up_reads_nothing() -> None:
    kube = FakeKube(run_body("7"))
    ctx = context(kube, solo=True, own_write="7")
    follow(ctx, run_body("7"))
    follow(ctx, run_body("7"))  # the Job's next event; the index still holds the Running copy
    assert kube.calls == [("patch", NAME)]
    recreated = run_body("9")
    recreated["metadata"]["uid"] = "uid-2"  # the same name again: a new run, followed as any other
    kube.stored = copy.deepcopy(recreated)
    follow(ctx, recreated)
    assert kube.calls[1:] == [("get", NAME), ("patch", NAME)]


def test_the_close_hands_mlflow_the_spec_parameters_the_trainer_may_not_have_logged() -> None:
    kube = FakeKube(run_body("7"))
    ctx = context(kube, solo=True, own_write="7")
    watched = run_body("7")
    watched["spec"]["parameters"] = {"epochs": 2, "learning_rate": 0.001}
    follow(ctx, watched)
    assert ctx.tracker.params == [{"epochs": "2", "learning_rate": "0.001"}]  # type: ignore[attr-defined]
