"""spec.workers: the Indexed Job, its headless Service and the TF_CONFIG each worker ends up with (pure builders)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kto_operator import indexed, jobs, naming
from kto_operator.settings import OperatorSettings
from kto_trainer.cluster import Cluster, cluster_from_env

from .test_jobs import IDS, SETTINGS, container, env_by_name, full_run, make_run

GPU = {"limits": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}}


def two_workers(**spec: Any) -> dict[str, Any]:
    return make_run(workers=2, resources=GPU, **spec)


def kubelet_env(job: dict[str, Any], index: int) -> dict[str, str]:
    """The literal environment a worker's container gets: fieldRef of the completion index resolved, then
    `$(VAR)` references expanded from the variables defined before (what the kubelet does)."""
    resolved: dict[str, str] = {"JOB_COMPLETION_INDEX": str(index)}
    for item in container(job)["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if ref == f"metadata.annotations['{indexed.COMPLETION_INDEX_ANNOTATION}']":
                resolved[item["name"]] = str(index)
            continue
        resolved[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: resolved.get(m.group(1), m.group(0)), item["value"])
    return resolved


def test_one_worker_is_exactly_the_plain_job() -> None:
    plain = jobs.build_job(full_run(), SETTINGS, IDS)
    explicit = jobs.build_job({**full_run(), "spec": {**full_run()["spec"], "workers": 1}}, SETTINGS, IDS)
    assert explicit == plain
    assert "completionMode" not in plain["spec"] and "podFailurePolicy" not in plain["spec"]
    assert (plain["spec"]["completions"], plain["spec"]["parallelism"]) == (1, 1)
    assert "subdomain" not in plain["spec"]["template"]["spec"]
    assert not set(env_by_name(plain)) & {"TF_CONFIG", "KTO_WORKER_HOSTS", "KTO_WORKER_INDEX"}
    assert "ports" not in container(plain)
    assert indexed.build_service(plain, jobs.owner_reference(full_run())) is None


def test_n_workers_make_an_indexed_job_with_pod_dns_names() -> None:
    job = jobs.build_job(make_run(workers=3), SETTINGS, IDS)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (3, 3, 0)
    assert spec["template"]["spec"]["subdomain"] == job["metadata"]["name"] == "cats-1"
    assert container(job)["ports"] == [{"name": "tf-worker", "containerPort": 2222, "protocol": "TCP"}]
    env = env_by_name(job)
    assert env["KTO_WORKER_HOSTS"]["value"] == "cats-1-0.cats-1:2222,cats-1-1.cats-1:2222,cats-1-2.cats-1:2222"
    assert env["KTO_WORKER_INDEX"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    names = [e["name"] for e in container(job)["env"]]
    # A $(VAR) reference only sees variables defined earlier in the list.
    assert names.index("KTO_WORKER_INDEX") < names.index("TF_CONFIG")
    # The operator's own variables are still there, once.
    assert len(names) == len(set(names)) and {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI"} <= set(names)


def test_one_failing_worker_fails_the_job() -> None:
    policy = jobs.build_job(two_workers(), SETTINGS, IDS)["spec"]["podFailurePolicy"]
    assert policy == {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": "trainer", "operator": "NotIn", "values": [0]}}]}


def test_resources_and_gpus_pass_through_to_every_worker() -> None:
    job = jobs.build_job(two_workers(nodeSelector={"gpu": "true"}), SETTINGS, IDS)
    assert container(job)["resources"] == GPU  # one template: every worker gets one GPU
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "true"}


@pytest.mark.parametrize("count", [2, 3])
def test_each_worker_gets_its_tf_config(count: int) -> None:
    job = jobs.build_job(make_run(workers=count), SETTINGS, IDS)
    hosts = [f"cats-1-{i}.cats-1:2222" for i in range(count)]
    for index in range(count):
        env = kubelet_env(job, index)
        assert json.loads(env["TF_CONFIG"]) == {"cluster": {"worker": hosts},
                                                "task": {"type": "worker", "index": index}}
        # What the trainer makes of it, from TF_CONFIG or from the worker list and the Job's index alike.
        assert cluster_from_env(env) == Cluster(tuple(hosts), index)
        del env["TF_CONFIG"]
        assert cluster_from_env(env) == Cluster(tuple(hosts), index)


def test_headless_service_named_after_the_job_and_owned_by_the_run() -> None:
    run = two_workers()
    job = jobs.build_job(run, SETTINGS, IDS)
    service = indexed.build_service(job, jobs.owner_reference(run))
    assert service is not None
    assert service["metadata"]["name"] == job["metadata"]["name"] == job["spec"]["template"]["spec"]["subdomain"]
    assert service["metadata"]["namespace"] == "team"
    assert service["metadata"]["ownerReferences"] == [jobs.owner_reference(run)]
    assert service["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGED_BY
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    # Selects this run's pods only, which carry that label from the Job's template.
    assert spec["selector"] == {naming.LABEL_TRAININGRUN_UID: run["metadata"]["uid"]}
    template_labels = job["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= template_labels.items()
    assert spec["ports"][0]["port"] == container(job)["ports"][0]["containerPort"]


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("2-workers", {}, "starting with a letter"),
        ("w" * 62, {}, "would exceed 63 characters"),
        ("cats-1", {"backoffLimit": 1}, "backoffLimit must be 0"),
        ("cats-1", {"env": [{"name": "TF_CONFIG", "value": "{}"}]}, "env TF_CONFIG is set by the operator"),
    ],
)
def test_what_n_workers_cannot_do_is_invalid_spec(name: str, spec: dict[str, Any], message: str) -> None:
    run = make_run(workers=2, **spec)
    run["metadata"]["name"] = name
    with pytest.raises(jobs.InvalidSpec, match=message):
        jobs.build_job(run, SETTINGS, IDS)
    # The same TrainingRun with one worker is fine.
    run["spec"]["workers"] = 1
    jobs.build_job(run, OperatorSettings(tracking_uri="http://m"), IDS)


def test_longest_name_that_fits_ten_workers() -> None:
    run = make_run(workers=10)
    run["metadata"]["name"] = "w" * 61  # hostname w...w-9: 63 characters
    job = jobs.build_job(run, SETTINGS, IDS)
    assert env_by_name(job)["KTO_WORKER_HOSTS"]["value"].split(",")[-1].split(".")[0] == "w" * 61 + "-9"
