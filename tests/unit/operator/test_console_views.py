"""The console's pure shaping: run rows and a run's page, the power view with its waking progress, the metric
history of the chart, and what cancel, switch and run again write."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kto_operator import naming
from kto_operator.console import views

NOW = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)


def tr(name: str = "r1", created: str = "2026-11-26T07:58:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "uid": "u-1"},
            "spec": {"image": "img", "experiment": "exp", "parameters": {"epochs": 4, "lr": 0.1}},
            "status": status}


@pytest.mark.parametrize(("status", "expected"), [
    ({}, {"phase": "Pending", "progress": None, "cancellable": True, "message": ""}),
    ({"phase": "Running", "progress": {"epoch": 2, "epochs": 4}},
     {"phase": "Running", "progress": {"epoch": 2, "epochs": 4, "percent": 50}, "cancellable": True}),
    ({"phase": "Running", "progress": {"epoch": 9, "epochs": 4}},  # a trainer logging extra steps
     {"progress": {"epoch": 4, "epochs": 4, "percent": 100}}),
    ({"phase": "Running", "progress": {"epochs": 0}}, {"progress": None}),
    ({"phase": "Succeeded", "primaryMetric": "test_accuracy=0.912", "message": "done"},
     {"primaryMetric": "test_accuracy=0.912", "cancellable": False, "message": ""}),
    ({"phase": "Failed", "reason": "OOMKilled", "message": "trainer was killed"},
     {"reason": "OOMKilled", "message": "trainer was killed", "cancellable": False}),
    ({"phase": "Cancelled"}, {"cancellable": False}),
    ({"phase": "Running", "mlflow": {"url": "http://mlflow/#/experiments/1/runs/abc"}},
     {"mlflowUrl": "http://mlflow/#/experiments/1/runs/abc"}),
])
def test_run_row(status: dict[str, Any], expected: dict[str, Any]) -> None:
    row = views.run_row(tr(**status), NOW)
    assert {k: row[k] for k in expected} == expected
    assert (row["name"], row["ageSeconds"], row["experiment"]) == ("r1", 120, "exp")


def test_a_cancel_asked_for_is_no_longer_cancellable() -> None:
    run = tr(phase="Running")
    run["spec"]["cancel"] = True
    row = views.run_row(run, NOW)
    assert (row["cancelRequested"], row["cancellable"]) == (True, False)


def test_rows_newest_first() -> None:
    rows = views.run_rows([tr("old", "2026-11-25T00:00:00Z"), tr("new", "2026-11-26T07:00:00Z")], NOW)
    assert [r["name"] for r in rows] == ["new", "old"]


def test_run_detail_has_conditions_parameters_metrics_and_the_chart_metric() -> None:
    run = tr(phase="Succeeded", metrics={"loss": 0.3, "test_accuracy": 0.9, "accuracy": 0.95},
             primaryMetric="test_accuracy=0.900", mlflow={"runId": "abc"},
             conditions=[{"type": "Succeeded", "status": "True", "reason": "Completed"}])
    detail = views.run_detail(run, NOW)
    assert detail["parameters"] == {"epochs": 4, "lr": 0.1}
    assert list(detail["metrics"]) == ["accuracy", "loss", "test_accuracy"]
    assert detail["conditions"][0]["reason"] == "Completed"
    assert (detail["chartMetric"], detail["mlflowRunId"]) == ("test_accuracy", "abc")


@pytest.mark.parametrize(("metrics", "register", "primary", "expected"), [
    ({}, None, "", None),
    ({"loss": 1.0, "accuracy": 0.5}, None, "", "accuracy"),
    ({"loss": 1.0, "f1": 0.5}, "f1", "", "f1"),
    ({"loss": 1.0, "val_auc": 0.5}, None, "val_auc=0.5", "val_auc"),
    ({"b": 1.0, "a": 2.0}, None, "", "a"),
])
def test_chart_metric(metrics: dict[str, float], register: str | None, primary: str, expected: str | None) -> None:
    run = tr(metrics=metrics, primaryMetric=primary)
    if register:
        run["spec"]["registerModel"] = {"metric": register}
    assert views.chart_metric(run) == expected


def test_history_points_by_step_latest_value_wins_and_junk_dropped() -> None:
    history: list[dict[str, Any]] = [
        {"step": "1", "value": 0.5, "timestamp": 10}, {"step": 0, "value": 0.2, "timestamp": 5},
        {"step": 1, "value": 0.6, "timestamp": 11}, {"step": 2, "value": "NaN", "timestamp": 12},
        {"step": 3}]
    assert views.history_points(history) == [{"step": 0, "value": 0.2}, {"step": 1, "value": 0.6}]


def test_cancel_patch_sets_the_only_mutable_field() -> None:
    assert views.cancel_patch() == {"spec": {"cancel": True}}


def test_power_patch_is_what_kubectl_patch_writes_plus_a_request_when_already_set() -> None:
    assert views.power_patch({"spec": {"schedule": {}}}, "off", NOW) == {"spec": {"state": "off"}}
    again = views.power_patch({"spec": {"state": "on"}}, "on", NOW)
    assert again == {"spec": {"state": "on"},
                     "metadata": {"annotations": {naming.ANNOTATION_WAKE_REQUESTED_AT: "2026-11-26T08:00:00Z"}}}
    assert naming.ANNOTATION_SLEEP_REQUESTED_AT in views.power_patch({"spec": {"state": "off"}}, "off", NOW)[
        "metadata"]["annotations"]
    with pytest.raises(views.InputError):
        views.power_patch({}, "maybe", NOW)


@pytest.mark.parametrize("raw", [[], {"a": [1]}, {"a": {"b": 1}}, {"bad key": 1}, {"": 1}, {"x": None},
                                 {f"k{i}": i for i in range(65)}])
def test_parameters_refused(raw: Any) -> None:
    with pytest.raises(views.InputError):
        views.parameters(raw)


def test_rerun_body_copies_the_spec_with_new_parameters_and_no_cancel() -> None:
    run = tr("Cats_Dogs.1" + "x" * 60)
    run["spec"]["cancel"] = True
    body = views.rerun_body(run, views.parameters({"epochs": 8, "lr": 0.01, "note": "again", "aug": True}))
    assert body["spec"] == {"image": "img", "experiment": "exp",
                            "parameters": {"epochs": 8, "lr": 0.01, "note": "again", "aug": True}}
    meta = body["metadata"]
    assert meta["generateName"].startswith("cats-dogs-1x") and meta["generateName"].endswith("-")
    assert len(meta["generateName"]) <= 41 and meta["namespace"] == "ns"
    assert meta["annotations"] == {naming.ANNOTATION_RERUN_OF: run["metadata"]["name"]}
    assert run["spec"]["cancel"] is True  # the original is left as it was
    assert "parameters" not in views.rerun_body(run, {})["spec"]


def workload(kind: str, name: str, replicas: int, ready: int, saved: int | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    ann = {naming.ANNOTATION_SAVED_REPLICAS: str(saved), naming.ANNOTATION_SET_REPLICAS: "0"} if saved else {}
    return {"kind": kind, "metadata": {"name": name, "annotations": ann, "generation": 2,
                                       "labels": {"app.kubernetes.io/part-of": "kto-mlflow", **(labels or {})}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": 2, "replicas": ready, "readyReplicas": ready}}


def power(name: str = "platform", created: str = "2026-01-01T00:00:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"state": "on", "selector": {"matchLabels": {"app.kubernetes.io/part-of": "kto-mlflow"}}},
            "status": status}


def test_no_power_schedule_no_power_view() -> None:
    assert views.power_view([], {}) is None


def test_power_view_of_a_sleeping_platform() -> None:
    by_kind = {"StatefulSet": [workload("StatefulSet", "mysql", 0, 0, saved=1)],
               "Deployment": [workload("Deployment", "mlflow", 0, 0, saved=2),
                              workload("Deployment", "minio", 0, 0, saved=1),
                              workload("Deployment", "kto-operator", 1, 1,
                                       labels={naming.LABEL_NAME: naming.OPERATOR_NAME})],
               "CronJob": []}
    view = views.power_view([power(state="Off", reason="Manual", nextOn="2026-11-27T07:00:00Z")], by_kind)
    assert view is not None
    assert (view["name"], view["state"], view["on"], view["nextOn"]) == ("platform", "Off", False,
                                                                         "2026-11-27T07:00:00Z")
    rows = {w["name"]: w for w in view["workloads"]}
    assert list(rows) == ["mysql", "minio", "mlflow"]  # the wake order; the operator is never managed
    assert (rows["mlflow"]["replicas"], rows["mlflow"]["savedReplicas"], rows["mlflow"]["asleep"]) == (0, 2, True)
    assert view["waking"] == []


def test_waking_progress_in_wake_order() -> None:
    by_kind = {"StatefulSet": [workload("StatefulSet", "mysql", 1, 1)],  # restored and Ready
               "Deployment": [workload("Deployment", "minio", 1, 0),  # restored, starting
                              workload("Deployment", "mlflow", 0, 0, saved=1)]}  # not yet restored
    restoring = [{"kind": "Deployment", "name": "mlflow"}, {"kind": "Deployment", "name": "minio"},
                 {"kind": "StatefulSet", "name": "mysql"}]
    view = views.power_view([power(state="WakingUp", workloads=restoring)], by_kind)
    assert view is not None and view["on"] is True
    assert [(s["name"], s["state"]) for s in view["waking"]] == [
        ("mysql", "done"), ("minio", "starting"), ("mlflow", "waiting")]


def test_the_oldest_power_schedule_governs() -> None:
    view = views.power_view([power("newer", "2026-02-01T00:00:00Z", state="On"),
                             power("older", "2026-01-01T00:00:00Z", state="Off")], {})
    assert view is not None and (view["name"], view["state"]) == ("older", "Off")
