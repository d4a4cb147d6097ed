"""Tracker against the bed's real MLflow server, over its REST API: idempotent run creation by UID tag, params
once, terminal status only if still active, progress, model registration once (linked to its LoggedModel),
experiments created once under concurrency, deleted experiments refused. MLflow's own client is the observer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kto_operator import naming
from kto_operator.tracking import Closed, RegisterRule, Tracker, TrackingError

pytestmark = pytest.mark.integration

UID = "0f0e0d0c-1111-2222-3333-444455556666"
TAGS = naming.run_tags(namespace="ns", name="run", uid=UID, job="run", image="img:1")


class Blocking:
    """A Tracker called from the synchronous tests: each call runs to its end on the test's one event loop,
    which the tracker's connections belong to."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tracker: Tracker) -> None:
        self.loop, self.tracker = loop, tracker

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.tracker, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))


Fresh = Callable[[], Blocking]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def fresh(loop: asyncio.AbstractEventLoop) -> Iterator[Fresh]:
    """Makes new Trackers (a restarted operator, another replica), closed after the test."""
    made: list[Tracker] = []

    def make() -> Blocking:
        made.append(Tracker())
        return Blocking(loop, made[-1])

    yield make
    for tracker in made:
        loop.run_until_complete(tracker.close())


@pytest.fixture
def tracker(fresh: Fresh) -> Blocking:
    return fresh()


@pytest.fixture
def mlflow(mlflow_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def exp() -> Iterator[str]:
    """A fresh experiment name (the bed's MLflow is shared and keeps everything)."""
    yield f"it-tracking-{uuid.uuid4().hex[:10]}"


def uid() -> str:
    return str(uuid.uuid4())


def test_ensure_run_is_idempotent(tracker: Blocking, fresh: Fresh, mlflow_uri: str, mlflow: Any,
                                  exp: str) -> None:
    tags = {**TAGS, naming.TAG_UID: (run_uid := uid())}
    first, created = tracker.ensure_run(mlflow_uri, exp, run_uid, "run", tags)
    assert created is True and first.status == "RUNNING"
    # A fresh Tracker (a restarted operator) finds the same run by its UID tag; a trailing slash is the same server.
    again, created = fresh().ensure_run(mlflow_uri + "/", exp, run_uid, "run", tags)
    assert created is False
    assert again.run_id == first.run_id and again.experiment_id == first.experiment_id
    run = mlflow.get_run(first.run_id)
    assert run.data.tags[naming.TAG_UID] == run_uid and run.data.tags[naming.TAG_JOB] == "run"
    assert run.info.run_name == "run" and run.info.experiment_id == first.experiment_id
    assert tracker.lookup_run(mlflow_uri, exp, run_uid) == again
    assert tracker.lookup_run(mlflow_uri, exp, uid()) is None
    assert tracker.lookup_run(mlflow_uri, f"{exp}-none", run_uid) is None  # no such experiment: nothing created
    assert mlflow.get_experiment_by_name(f"{exp}-none") is None


def test_without_search_a_second_run_would_be_created(tracker: Blocking, mlflow_uri: str, exp: str) -> None:
    # Why the operator only skips the search when the status proves no earlier attempt.
    run_uid = uid()
    first, _ = tracker.ensure_run(mlflow_uri, exp, run_uid, "r", {naming.TAG_UID: run_uid}, search=False)
    second, created = tracker.ensure_run(mlflow_uri, exp, run_uid, "r", {naming.TAG_UID: run_uid}, search=False)
    assert created and second.run_id != first.run_id
    # Should two exist, every look-up picks the same one: the earliest.
    assert tracker.find_run(mlflow_uri, first.experiment_id, run_uid) == first


def test_the_close_logs_only_the_params_the_trainer_did_not(tracker: Blocking, mlflow_uri: str, mlflow: Any,
                                                            exp: str) -> None:
    run, _ = tracker.ensure_run(mlflow_uri, exp, (run_uid := uid()), "r", {naming.TAG_UID: run_uid})
    mlflow.log_param(run.run_id, "a", "1.0")  # the trainer's, in its own spelling
    assert tracker.terminate(mlflow_uri, run.run_id, "FINISHED", params={"a": "1", "b": "2"}) == Closed(True)
    assert mlflow.get_run(run.run_id).data.params == {"a": "1.0", "b": "2"}
    assert tracker.terminate(mlflow_uri, run.run_id, "FINISHED", params={"a": "1", "b": "2"}) == Closed(False)
    assert mlflow.get_run(run.run_id).info.status == "FINISHED"


def test_a_param_mlflow_refuses_never_keeps_the_run_open(tracker: Blocking, mlflow_uri: str, mlflow: Any,
                                                         exp: str) -> None:
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    closed = tracker.terminate(mlflow_uri, run.run_id, "FAILED", params={"a": "1", "k" * 300: "1"})  # keys: <= 250
    assert closed.status_set and "INVALID_PARAMETER_VALUE" in closed.params_refused
    got = mlflow.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.params == {"a": "1"}


def test_more_params_than_one_batch_takes(tracker: Blocking, mlflow_uri: str, mlflow: Any, exp: str) -> None:
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    params = {f"p{i:03d}": str(i) for i in range(130)}  # MLflow takes at most 100 per log-batch
    tracker.terminate(mlflow_uri, run.run_id, "KILLED", params=params)
    assert mlflow.get_run(run.run_id).data.params == params


def test_terminate_only_an_active_run(tracker: Blocking, mlflow_uri: str, mlflow: Any, exp: str) -> None:
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    assert tracker.terminate(mlflow_uri, run.run_id, "FAILED").status_set is True
    assert tracker.terminate(mlflow_uri, run.run_id, "FINISHED").status_set is False
    assert mlflow.get_run(run.run_id).info.status == "FAILED"
    info = mlflow.get_run(run.run_id).info
    assert info.status == "FAILED" and info.end_time >= info.start_time


def test_terminate_replaces_only_the_final_statuses_it_is_told(tracker: Blocking, mlflow_uri: str, mlflow: Any,
                                                               exp: str) -> None:
    """A run of several workers: the operator's FAILED overwrites the KILLED of a worker stopped because another
    failed (MLflow's server accepts a new status on a finished run), never a FINISHED."""
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    mlflow.set_terminated(run.run_id, "KILLED")
    assert tracker.terminate(mlflow_uri, run.run_id, "FAILED").status_set is False
    assert tracker.terminate(mlflow_uri, run.run_id, "FAILED", frozenset({"KILLED", "FAILED"})).status_set is True
    assert mlflow.get_run(run.run_id).info.status == "FAILED"
    assert tracker.terminate(mlflow_uri, run.run_id, "FAILED", frozenset({"KILLED", "FAILED"})).status_set is False
    mlflow.set_terminated(run.run_id, "FINISHED")
    assert tracker.terminate(mlflow_uri, run.run_id, "KILLED", frozenset({"KILLED", "FAILED"})).status_set is False
    assert mlflow.get_run(run.run_id).info.status == "FINISHED"


def test_metrics_and_epochs_done(tracker: Blocking, mlflow_uri: str, mlflow: Any, exp: str) -> None:
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    for step in range(4):
        mlflow.log_metric(run.run_id, "loss", 1 / (step + 1), step=step)
        mlflow.log_metric(run.run_id, "accuracy", 0.5 + step / 10, step=step)
    mlflow.log_metric(run.run_id, "diverged", float("nan"))
    metrics = tracker.metrics(mlflow_uri, run.run_id)
    assert metrics["loss"] == pytest.approx(0.25) and metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["diverged"] != metrics["diverged"]  # NaN comes back as NaN (the reconciler drops it)
    assert tracker.epochs_done(mlflow_uri, run.run_id, metrics) == 4  # steps 0..3 of `loss`
    assert tracker.epochs_done(mlflow_uri, run.run_id, {}) == 0


def test_register_once_per_run(tracker: Blocking, fresh: Fresh, mlflow_uri: str, mlflow: Any,
                               exp: str) -> None:
    name = f"{exp}-model"
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    rule = RegisterRule(name=name, metric="test_accuracy", threshold=0.9)
    assert tracker.register(mlflow_uri, run.run_id, run.experiment_id, rule) == "1"
    assert tracker.register(mlflow_uri, run.run_id, run.experiment_id, rule) == "1"  # a retry adds nothing
    assert mlflow.get_model_version(name, "1").source == f"runs:/{run.run_id}/model"
    other, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    assert tracker.register(mlflow_uri, other.run_id, other.experiment_id, rule) == "2"
    assert fresh().register(mlflow_uri, run.run_id, run.experiment_id, rule) == "1"  # after a restart too


def test_register_links_the_runs_logged_model(tracker: Blocking, mlflow_uri: str, mlflow: Any, exp: str) -> None:
    name = f"{exp}-model"
    run, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    other, _ = tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    mlflow.create_logged_model(run.experiment_id, name="model", source_run_id=other.run_id)  # not this run's
    model = mlflow.create_logged_model(run.experiment_id, name="model", source_run_id=run.run_id)
    version = tracker.register(mlflow_uri, run.run_id, run.experiment_id, RegisterRule(name, "m", 0.5))
    registered = mlflow.get_model_version(name, version)
    # (The server stores the link as the source; its model-version API gives no model_id back, for
    # MLflow's own client either.)
    assert registered.source == f"models:/{model.model_id}" and registered.run_id == run.run_id


def test_concurrent_creators_share_one_experiment(loop: asyncio.AbstractEventLoop, fresh: Fresh, mlflow_uri: str,
                                                   mlflow: Any, exp: str) -> None:
    # Separate Trackers: several operator replicas (or a restart) racing on a new experiment's name.
    trackers = [fresh().tracker for _ in range(6)]
    async def race() -> list[str]:
        return await asyncio.gather(*(t.experiment_id(mlflow_uri, exp) for t in trackers))

    ids = set(loop.run_until_complete(race()))
    assert ids == {mlflow.get_experiment_by_name(exp).experiment_id}


def test_deleted_experiment_is_a_tracking_error(tracker: Blocking, fresh: Fresh, mlflow_uri: str, mlflow: Any,
                                               exp: str) -> None:
    experiment_id = tracker.experiment_id(mlflow_uri, exp)
    mlflow.delete_experiment(experiment_id)
    # The cached id is stale: the create fails, the fresh look-up explains why.
    with pytest.raises(TrackingError, match="deleted"):
        tracker.ensure_run(mlflow_uri, exp, uid(), "r", {})
    with pytest.raises(TrackingError, match="deleted"):
        fresh().experiment_id(mlflow_uri, exp)


def test_unknown_run_is_a_tracking_error(tracker: Blocking, mlflow_uri: str) -> None:
    with pytest.raises(TrackingError, match="RESOURCE_DOES_NOT_EXIST") as caught:
        tracker.metrics(mlflow_uri, uuid.uuid4().hex)
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
