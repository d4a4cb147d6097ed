"""Tracker against a real MLflow store (SQLite file in tmp_path, no server): idempotent run creation by
UID tag, params once, terminal status only if still active, progress, model registration once."""

from __future__ import annotations

import pytest
from kto_operator import naming
from kto_operator.tracking import MlflowUnavailable, RegisterRule, Tracker, TrackingError, redact

UID = "0f0e0d0c-1111-2222-3333-444455556666"
TAGS = naming.run_tags(namespace="ns", name="run", uid=UID, job="run", image="img:1")


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


def test_ensure_run_is_idempotent(tracker: Tracker, uri: str) -> None:
    first, created = tracker.ensure_run(uri, "exp-a", UID, "run", TAGS)
    assert created is True
    # A fresh Tracker (a restarted operator) finds the same run by its UID tag.
    again, created = Tracker().ensure_run(uri, "exp-a", UID, "run", TAGS)
    assert created is False
    assert again.run_id == first.run_id and again.experiment_id == first.experiment_id
    assert first.status == "RUNNING"
    run = tracker.client(uri).get_run(first.run_id)
    assert run.data.tags[naming.TAG_UID] == UID and run.data.tags[naming.TAG_JOB] == "run"
    assert tracker.lookup_run(uri, "exp-a", UID) == again
    assert tracker.lookup_run(uri, "no-such-experiment", UID) is None


def test_without_search_a_second_run_would_be_created(tracker: Tracker, uri: str) -> None:
    # Why the operator only skips the search when the status proves no earlier attempt.
    uid = "aaaaaaaa-0000-0000-0000-000000000009"
    first, _ = tracker.ensure_run(uri, "exp-s", uid, "r", {naming.TAG_UID: uid}, search=False)
    second, created = tracker.ensure_run(uri, "exp-s", uid, "r", {naming.TAG_UID: uid}, search=False)
    assert created and second.run_id != first.run_id


def test_params_logged_once_and_completed(tracker: Tracker, uri: str) -> None:
    uid = "aaaaaaaa-0000-0000-0000-000000000001"
    run, _ = tracker.ensure_run(uri, "exp-b", uid, "r", {naming.TAG_UID: uid})
    tracker.log_params(uri, run.run_id, {"a": "1"}, fresh=True)
    tracker.log_params(uri, run.run_id, {"a": "1", "b": "2"}, fresh=False)  # after a restart: the missing one
    tracker.log_params(uri, run.run_id, {"a": "1", "b": "2"}, fresh=False)  # nothing left to log
    assert tracker.client(uri).get_run(run.run_id).data.params == {"a": "1", "b": "2"}
    with pytest.raises(TrackingError):  # MLflow refuses another text for a logged param
        tracker.log_params(uri, run.run_id, {"a": "2"}, fresh=True)


def test_terminate_only_an_active_run(tracker: Tracker, uri: str) -> None:
    run, _ = tracker.ensure_run(uri, "exp-c", "aaaaaaaa-0000-0000-0000-000000000002", "r", {})
    assert tracker.terminate(uri, run.run_id, "FAILED") is True
    assert tracker.terminate(uri, run.run_id, "FINISHED") is False
    assert tracker.status(uri, run.run_id) == "FAILED"


def test_metrics_and_epochs_done(tracker: Tracker, uri: str) -> None:
    run, _ = tracker.ensure_run(uri, "exp-d", "aaaaaaaa-0000-0000-0000-000000000003", "r", {})
    client = tracker.client(uri)
    for step in range(4):
        client.log_metric(run.run_id, "loss", 1 / (step + 1), step=step)
        client.log_metric(run.run_id, "accuracy", 0.5 + step / 10, step=step)
    metrics = tracker.metrics(uri, run.run_id)
    assert metrics["loss"] == pytest.approx(0.25)
    assert tracker.epochs_done(uri, run.run_id, metrics) == 4
    assert tracker.epochs_done(uri, run.run_id, {}) == 0


def test_register_once_per_run(tracker: Tracker, uri: str) -> None:
    run, _ = tracker.ensure_run(uri, "exp-e", "aaaaaaaa-0000-0000-0000-000000000004", "r", {})
    rule = RegisterRule(name="cats", metric="test_accuracy", threshold=0.9)
    assert tracker.register(uri, run.run_id, run.experiment_id, rule) == "1"
    assert tracker.register(uri, run.run_id, run.experiment_id, rule) == "1"  # a retry adds nothing
    other, _ = tracker.ensure_run(uri, "exp-e", "aaaaaaaa-0000-0000-0000-000000000005", "r", {})
    assert tracker.register(uri, other.run_id, other.experiment_id, rule) == "2"


def test_deleted_experiment_is_a_tracking_error(tracker: Tracker, uri: str) -> None:
    experiment_id = tracker.experiment_id(uri, "exp-gone")
    tracker.client(uri).delete_experiment(experiment_id)
    # The cached id is stale: the create fails, the fresh look-up explains why.
    with pytest.raises(TrackingError, match="deleted"):
        tracker.ensure_run(uri, "exp-gone", "aaaaaaaa-0000-0000-0000-000000000006", "r", {})


def test_unreachable_server_is_unavailable(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(MlflowUnavailable):
        tracker.experiment_id("http://127.0.0.1:9", "x")  # the discard port: nothing listens


@pytest.mark.parametrize(("greater", "value", "passes"), [(True, 0.9, True), (True, 0.89, False),
                                                          (False, 0.1, True), (False, 0.2, False)])
def test_register_rule(greater: bool, value: float, passes: bool) -> None:
    threshold = 0.9 if greater else 0.1
    rule = RegisterRule.from_spec({"name": "m", "metric": "x", "threshold": threshold, "greaterIsBetter": greater})
    assert rule is not None and rule.passes(value) is passes
    assert rule.artifact_path == "model"
    assert RegisterRule.from_spec(None) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("to https://bob:s3cret@mlflow.example.com/api failed", "to https://***@mlflow.example.com/api failed"),
    ("http://mlflow:5000/x", "http://mlflow:5000/x"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
