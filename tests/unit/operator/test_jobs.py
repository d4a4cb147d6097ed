"""build_job: the trainer Job as a pure function of the TrainingRun."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kto_operator import jobs, naming
from kto_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(tracking_uri="http://mlflow.default:5000")
IDS = jobs.MlflowIds(run_id="abc123", experiment_id="7", tracking_uri="http://mlflow.default:5000")
SECRET_VALUES = ("minio-secret-value", "AKIAEXAMPLE", "s3cr3t-t0ken")


def make_run(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"image": "kto-trainer:1", "experiment": "cats-dogs"}
    base.update(spec)
    return {
        "apiVersion": "kto.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "cats-1", "namespace": "team", "uid": "11111111-2222-3333-4444-555555555555"},
        "spec": base,
    }


def full_run() -> dict[str, Any]:
    return make_run(
        command=["python", "-m", "kto_trainer"],
        parameters={"split_ratio_train": 0.8, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1,
                    "batch_size": 64, "epochs": 4, "working_dir": "/tmp/w", "augment": True},
        resources={"limits": {"cpu": "1300m", "memory": "4000Mi", "nvidia.com/gpu": 1},
                   "requests": {"cpu": "500m"}},
        env=[{"name": "EXTRA", "value": "1"},
             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}],
        s3={"endpoint": "http://minio:9000", "credentialsSecret": "s3-creds"},
        mlflow={"credentialsSecret": "mlflow-creds"},
        backoffLimit=2, activeDeadlineSeconds=600, ttlSecondsAfterFinished=100,
        nodeSelector={"gpu": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        serviceAccountName="trainer",
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_by_name(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job)["env"]}


def test_identity_labels_and_owner() -> None:
    run = full_run()
    job = jobs.build_job(run, SETTINGS, IDS)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "cats-1"
    assert job["metadata"]["namespace"] == "team"
    assert job["metadata"]["labels"] == job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["labels"][naming.LABEL_TRAININGRUN_UID] == run["metadata"]["uid"]
    assert job["spec"]["template"]["metadata"]["annotations"][naming.ANNOTATION_TRAININGRUN] == "cats-1"
    [owner] = job["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun", "name": "cats-1",
                     "uid": run["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def test_deterministic() -> None:
    assert jobs.build_job(full_run(), SETTINGS, IDS) == jobs.build_job(full_run(), SETTINGS, IDS)


def test_does_not_mutate_the_run() -> None:
    run = full_run()
    before = copy.deepcopy(run)
    job = jobs.build_job(run, SETTINGS, IDS)
    container(job)["env"].append({"name": "X"})
    job["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
    assert run == before


def test_long_name_gives_valid_job_name() -> None:
    run = make_run()
    run["metadata"]["name"] = "a-very-long-trainingrun-name-" + "x" * 80
    name = jobs.build_job(run, SETTINGS, IDS)["metadata"]["name"]
    assert naming.is_dns_label(name)
    assert jobs.build_job(run, SETTINGS, IDS)["spec"]["template"]["metadata"]["labels"][
        naming.LABEL_TRAININGRUN] != run["metadata"]["name"]


def test_args_are_sorted_key_value_pairs() -> None:
    args = container(jobs.build_job(full_run(), SETTINGS, IDS))["args"]
    assert args == ["--augment=true", "--batch_size=64", "--epochs=4", "--split_ratio_evaluate=0.1",
                    "--split_ratio_test=0.1", "--split_ratio_train=0.8", "--working_dir=/tmp/w"]


def test_command_only_when_given() -> None:
    assert container(jobs.build_job(full_run(), SETTINGS, IDS))["command"] == ["python", "-m", "kto_trainer"]
    assert "command" not in container(jobs.build_job(make_run(), SETTINGS, IDS))


@pytest.mark.parametrize(("value", "text"), [(True, "true"), (False, "false"), (4, "4"), (4.0, "4"),
                                             (0.001, "0.001"), ("a b", "a b"), (1e-7, "1e-07")])
def test_render_value(value: Any, text: str) -> None:
    assert jobs.render_value(value) == text


@pytest.mark.parametrize("parameters", [{"nested": {"a": 1}}, {"lst": [1]}, {"none": None},
                                        {"bad key": 1}, {"--x": 1}, {"": 1}])
def test_invalid_parameters(parameters: dict[str, Any]) -> None:
    with pytest.raises(jobs.InvalidSpec):
        jobs.build_job(make_run(parameters=parameters), SETTINGS, IDS)


def test_mlflow_env() -> None:
    env = env_by_name(jobs.build_job(full_run(), SETTINGS, IDS))
    assert env["MLFLOW_RUN_ID"] == {"name": "MLFLOW_RUN_ID", "value": "abc123"}
    assert env["MLFLOW_EXPERIMENT_ID"]["value"] == "7"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.default:5000"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"


def test_credentials_only_by_secret_reference() -> None:
    env = env_by_name(jobs.build_job(full_run(), SETTINGS, IDS))
    for key in jobs.S3_SECRET_KEYS:
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key}}}
    for key in jobs.MLFLOW_SECRET_KEYS:
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-creds", "key": key, "optional": True}
        assert "value" not in env[key]


def test_no_secret_value_anywhere() -> None:
    # Whatever the environment of the operator holds, nothing of it may reach the manifest.
    run = full_run()
    text = json.dumps(jobs.build_job(run, SETTINGS, IDS))
    for secret in SECRET_VALUES:
        assert secret not in text
    literal = [e for e in container(jobs.build_job(run, SETTINGS, IDS))["env"] if "value" in e]
    assert {e["name"] for e in literal} == {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                                            "MLFLOW_S3_ENDPOINT_URL", "EXTRA"}


def test_no_credentials_env_without_secrets() -> None:
    env = env_by_name(jobs.build_job(make_run(), SETTINGS, IDS))
    assert set(env) == {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"}


def test_user_env_after_ours_and_conflicts_refused() -> None:
    names = [e["name"] for e in container(jobs.build_job(full_run(), SETTINGS, IDS))["env"]]
    assert names[:3] == ["MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"]
    assert names[-2:] == ["EXTRA", "TOKEN"]
    clash = full_run()
    clash["spec"]["env"] = [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]
    with pytest.raises(jobs.InvalidSpec, match="AWS_SECRET_ACCESS_KEY"):
        jobs.build_job(clash, SETTINGS, IDS)
    # Without spec.s3.credentialsSecret the user may bring their own reference.
    own = make_run(env=[{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "a", "key": "b"}}}])
    assert "AWS_ACCESS_KEY_ID" in env_by_name(jobs.build_job(own, SETTINGS, IDS))


def test_restricted_security_context_without_fixed_uid() -> None:
    job = jobs.build_job(full_run(), SETTINGS, IDS)
    pod = job["spec"]["template"]["spec"]
    ctx = container(job)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    text = json.dumps(job)
    assert "runAsUser" not in text and "runAsGroup" not in text and "fsGroup" not in text
    assert "privileged" not in text and "hostPath" not in text


def test_job_policy_fields() -> None:
    job = jobs.build_job(full_run(), SETTINGS, IDS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 600, 100)
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"gpu": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "trainer"
    assert container(job)["resources"]["limits"] == {"cpu": "1300m", "memory": "4000Mi", "nvidia.com/gpu": 1}
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_defaults_when_spec_is_minimal() -> None:
    job = jobs.build_job(make_run(), SETTINGS, IDS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["backoffLimit"] == 0
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        assert key not in pod
    assert "resources" not in container(job)
    assert container(job)["args"] == []


def test_default_service_account_from_settings() -> None:
    settings = OperatorSettings(default_service_account="kto-trainer")
    assert jobs.build_job(make_run(), settings, IDS)["spec"]["template"]["spec"]["serviceAccountName"] == "kto-trainer"


def test_tracking_uri_override() -> None:
    run = make_run(mlflow={"trackingUri": "https://mlflow.example.com"})
    assert jobs.tracking_uri(run["spec"], SETTINGS) == "https://mlflow.example.com"
    assert jobs.tracking_uri(make_run()["spec"], SETTINGS) == SETTINGS.tracking_uri


def test_no_api_token_unless_a_service_account_is_named() -> None:
    minimal = jobs.build_job(make_run(), SETTINGS, IDS)["spec"]["template"]["spec"]
    assert minimal["automountServiceAccountToken"] is False
    assert minimal["enableServiceLinks"] is False
    named = jobs.build_job(full_run(), SETTINGS, IDS)["spec"]["template"]["spec"]
    assert "automountServiceAccountToken" not in named
