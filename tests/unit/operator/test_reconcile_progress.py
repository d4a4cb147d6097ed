"""Progress (reconcile.follow): the write that enters Running carries the MLflow run's first figures, so that a
progress pass (the sweep's, every FOLLOW_INTERVAL) writes nothing until they change."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kto_operator import reconcile, times, writes
from kto_operator.metrics import Metrics
from kto_operator.settings import OperatorSettings

from .indexes import indexed
from .test_reconcile_reads import NAME, NS, UID, FakeKube, FakeTracker, run_body


class EpochTracker(FakeTracker):
    def __init__(self) -> None:
        super().__init__()
        self.epochs, self.reads = 0, 0

    async def metrics(self, uri: str, run_id: str) -> dict[str, float]:
        self.reads += 1
        return {"loss": 1.0 / (1 + self.epochs)} if self.epochs else {}

    async def epochs_done(self, uri: str, run_id: str, metrics: Any) -> int:
        return self.epochs


def running_job() -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": NAME, "uid": "job-1"}, "spec": {"completions": 1, "parallelism": 1},
            "status": {"active": 1, "ready": 1}}


def running_pod() -> dict[str, Any]:
    started = times.format_time(times.now())
    return {"metadata": {"name": f"{NAME}-abcde", "creationTimestamp": started},
            "spec": {"containers": [{"name": "trainer"}]},
            "status": {"phase": "Running", "startTime": started, "conditions": [],
                       "containerStatuses": [{"name": "trainer", "state": {"running": {"startedAt": started}}}]}}


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes, "event", lambda *args: None)  # kopf posts Events from its handlers only


def follow(ctx: reconcile.Context, kube: FakeKube, with_progress: bool) -> None:
    watched = copy.deepcopy(kube.stored)
    views = indexed(runs=[watched], jobs={UID: [running_job()]}, pods={UID: [running_pod()]})
    asyncio.run(reconcile.follow(ctx, views, NS, NAME, with_progress=with_progress))


def test_entering_running_writes_the_first_progress_and_a_progress_pass_then_nothing() -> None:
    pending = run_body("7", phase="Pending")
    pending["spec"]["parameters"] = {"epochs": 3}
    kube = FakeKube(pending)
    tracker = EpochTracker()
    ctx = reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=tracker,  # type: ignore[arg-type]
                            metrics=Metrics())
    follow(ctx, kube, with_progress=False)  # a pod event: the trainer runs
    assert kube.stored["status"]["phase"] == "Running"
    assert kube.stored["status"]["progress"] == {"epoch": 0, "epochs": 3}
    writes = len(kube.calls)
    follow(ctx, kube, with_progress=True)  # the sweep's pass, no epoch done since
    assert len(kube.calls) == writes and tracker.reads == 2
    tracker.epochs = 1
    follow(ctx, kube, with_progress=True)
    assert kube.stored["status"]["progress"] == {"epoch": 1, "epochs": 3} and len(kube.calls) == writes + 1
    follow(ctx, kube, with_progress=False)  # a pod event while Running: MLflow is not asked
    assert tracker.reads == 3


def test_a_pass_asked_for_during_a_write_starts_from_that_write_not_the_lagging_watch() -> None:
    """Pod events during the write that enters Running: the next pass must not redo it from the watched copy (a
    second image tag, a conditional write refused, a read)."""
    kube = FakeKube(run_body("7", phase="Pending"))
    tracker = EpochTracker()
    ctx = reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=tracker,  # type: ignore[arg-type]
                            metrics=Metrics())
    watched = run_body("7", phase="Pending")  # the index keeps it: the watch has not shown the write yet
    views = indexed(runs=[watched], jobs={UID: [running_job()]}, pods={UID: [running_pod()]})

    async def scenario() -> None:
        first = asyncio.create_task(reconcile.follow(ctx, views, NS, NAME, with_progress=False))
        await asyncio.sleep(0)  # the first follow holds the run; this event asks it for one more pass
        await reconcile.follow(ctx, views, NS, NAME, with_progress=False)
        await first

    asyncio.run(scenario())
    assert kube.stored["status"]["phase"] == "Running"
    assert kube.calls == [("patch", NAME)] and tracker.reads == 1


@pytest.mark.parametrize(("watched_version", "cancel", "used"), [
    ("7", False, "own"),      # the watch still shows what the previous pass started from
    ("8", False, "watched"),  # it shows the pass's own write
    ("9", True, "watched"),   # it shows a later change (a user's cancel): never hidden behind the own copy
], ids=["lagging", "caught-up", "changed-since"])
def test_the_next_pass_takes_its_own_copy_only_while_the_watch_shows_what_the_last_one_started_from(
        watched_version: str, cancel: bool, used: str) -> None:
    ctx = reconcile.Context(settings=OperatorSettings(), kube=FakeKube(run_body("8")), tracker=EpochTracker(),  # type: ignore[arg-type]
                            metrics=Metrics())
    own = run_body("8")  # what the previous pass wrote (version 8), having started from version 7
    ctx.wrote(f"{NS}/{NAME}", UID, "8", final=False)
    watched = run_body(watched_version)
    watched["spec"]["cancel"] = cancel
    tr, version = reconcile._copy(ctx, indexed(runs=[watched]), NS, NAME, (own, "7"))
    assert tr is not None and version == watched_version
    assert tr["metadata"]["resourceVersion"] == ("8" if used == "own" else watched_version)
    assert bool(tr["spec"].get("cancel")) == cancel


def test_each_step_is_one_operator_log_line_and_a_progress_write_none(caplog: pytest.LogCaptureFixture) -> None:
    pending = run_body("7", phase="Pending")
    kube = FakeKube(pending)
    tracker = EpochTracker()
    ctx = reconcile.Context(settings=OperatorSettings(), kube=kube, tracker=tracker,  # type: ignore[arg-type]
                            metrics=Metrics())
    with caplog.at_level("INFO", logger="kto_operator.writes"):
        follow(ctx, kube, with_progress=False)
        tracker.epochs = 1
        follow(ctx, kube, with_progress=True)  # a write, but no new step
    assert kube.stored["status"]["progress"]["epoch"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "kto_operator.writes"]
    assert len(lines) == 1 and lines[0].startswith(f"{NS}/{NAME}: Running (Running)"), lines
