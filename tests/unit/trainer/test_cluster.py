"""Which workers train together (TF_CONFIG or the operator's worker list), each worker's share of the data,
the global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kto_trainer.cli import main, parse_config
from kto_trainer.cluster import SINGLE, Cluster, cluster_from_env, per_worker_batch, tf_config_json
from kto_trainer.errors import ConfigError

HOSTS = ("run-0.run:2222", "run-1.run:2222")


def test_alone_without_any_cluster_variable() -> None:
    assert cluster_from_env({}) == SINGLE
    assert SINGLE.size == 1 and SINGLE.is_chief


def test_tf_config() -> None:
    env = {"TF_CONFIG": json.dumps({"cluster": {"worker": list(HOSTS)}, "task": {"type": "worker", "index": 1}})}
    cluster = cluster_from_env(env)
    assert cluster == Cluster(HOSTS, 1)
    assert cluster.size == 2 and not cluster.is_chief
    assert json.loads(tf_config_json(cluster)) == json.loads(env["TF_CONFIG"])


def test_the_operators_worker_list_and_the_jobs_index() -> None:
    env = {"KTO_WORKER_HOSTS": ",".join(HOSTS), "JOB_COMPLETION_INDEX": "0"}
    assert cluster_from_env(env) == Cluster(HOSTS, 0)
    assert cluster_from_env(env).is_chief
    # TF_CONFIG, when set, is what TensorFlow itself would read: it wins.
    other = {"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", "index": 2}}
    assert cluster_from_env({**env, "TF_CONFIG": json.dumps(other)}) == Cluster(("a:1", "b:1", "c:1"), 2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TF_CONFIG": "{not json"}, "not a TensorFlow cluster config"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}})}, "only name 'worker' tasks"),
        ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"]}, "task": {"type": "chief"}})}, "only name 'worker'"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"index": 3}})}, "outside the 1 workers"),
        ({"KTO_WORKER_HOSTS": "a:1,b:1"}, "JOB_COMPLETION_INDEX is not"),
        ({"KTO_WORKER_HOSTS": "a:1,b:1", "JOB_COMPLETION_INDEX": "x"}, "must be an integer"),
    ],
)
def test_bad_cluster_configs(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cluster_from_env(env)


def test_batch_size_is_global() -> None:
    assert per_worker_batch(32, Cluster(HOSTS, 0)) == 16
    assert per_worker_batch(7, SINGLE) == 7
    with pytest.raises(ConfigError, match="batch_size 30 is global and must be a multiple of the 4 workers"):
        per_worker_batch(30, Cluster(("a:1", "b:1", "c:1", "d:1"), 0))


def test_a_batch_size_the_workers_cannot_share_is_one_error_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KTO_WORKER_HOSTS", ",".join(HOSTS))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    work = tmp_path / "work"
    code = main(["--batch_size=9", "--weights=none", f"--working_dir={work}", f"--dataset_dir={tmp_path}/none"])
    assert code == 2
    assert capsys.readouterr().err == (
        "kto-train: error: batch_size 9 is global and must be a multiple of the 2 workers\n")
    assert not work.exists()


def test_mixed_precision_flag() -> None:
    assert parse_config([]).mixed_precision is False
    assert parse_config(["--mixed_precision=true"]).mixed_precision is True
    assert parse_config(["--mixed_precision", "false"]).mixed_precision is False
    # Logged as the operator renders the same parameter (MLflow refuses one param with two values).
    assert parse_config(["--mixed_precision=True"]).params()["mixed_precision"] == "true"
    with pytest.raises(SystemExit):
        parse_config(["--mixed_precision=maybe"])
