"""Which workers train together, from the environment: TensorFlow's `TF_CONFIG`, or the worker list the kto
operator gives an Indexed Job's pods (`KTO_WORKER_HOSTS`) plus the pod's own `JOB_COMPLETION_INDEX`.

Pure (no TensorFlow import): the CLI and the tests read it without paying for TensorFlow's start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

ENV_TF_CONFIG = "TF_CONFIG"
ENV_WORKER_HOSTS = "KTO_WORKER_HOSTS"
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
WORKER = "worker"


@dataclass(frozen=True)
class Cluster:
    """The workers (host:port each, in index order) and this process's index among them."""

    workers: tuple[str, ...]
    index: int

    def __post_init__(self) -> None:
        if not self.workers:
            raise ConfigError("a cluster needs at least one worker")
        if not 0 <= self.index < len(self.workers):
            raise ConfigError(f"worker index {self.index} is outside the {len(self.workers)} workers")

    @property
    def size(self) -> int:
        return len(self.workers)

    @property
    def is_chief(self) -> bool:
        # MultiWorkerMirroredStrategy's own rule without a "chief" task: worker 0 is the chief.
        return self.index == 0

    def tf_config(self) -> dict[str, Any]:
        return {"cluster": {WORKER: list(self.workers)}, "task": {"type": WORKER, "index": self.index}}


SINGLE = Cluster(("localhost:0",), 0)


def _from_tf_config(text: str) -> Cluster:
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config.get("task") or {}
        workers = tuple(str(w) for w in cluster.get(WORKER) or [])
        index = int(task.get("index", 0))
        task_type = task.get("type", WORKER)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ConfigError(f"{ENV_TF_CONFIG} is not a TensorFlow cluster config: {error}") from None
    # The trainer's collectives are MultiWorkerMirroredStrategy's: workers only (no chief, ps or evaluator task).
    others = sorted(set(cluster) - {WORKER})
    if others or task_type != WORKER:
        raise ConfigError(f"{ENV_TF_CONFIG} may only name 'worker' tasks, got {', '.join(others) or task_type}")
    return Cluster(workers, index)


def _from_worker_hosts(hosts: str, index: str | None) -> Cluster:
    workers = tuple(h.strip() for h in hosts.split(",") if h.strip())
    if index is None:
        raise ConfigError(f"{ENV_WORKER_HOSTS} is set but {ENV_COMPLETION_INDEX} is not (not an Indexed Job pod?)")
    try:
        return Cluster(workers, int(index))
    except ValueError:
        raise ConfigError(f"{ENV_COMPLETION_INDEX} must be an integer, got {index!r}") from None


def cluster_from_env(env: Mapping[str, str]) -> Cluster:
    """This process's cluster: TF_CONFIG when set, else KTO_WORKER_HOSTS + JOB_COMPLETION_INDEX, else one
    worker alone (SINGLE)."""
    if env.get(ENV_TF_CONFIG):
        return _from_tf_config(env[ENV_TF_CONFIG])
    if env.get(ENV_WORKER_HOSTS):
        return _from_worker_hosts(env[ENV_WORKER_HOSTS], env.get(ENV_COMPLETION_INDEX))
    return SINGLE


def tf_config_json(cluster: Cluster) -> str:
    """`TF_CONFIG` for this cluster, as MultiWorkerMirroredStrategy reads it from the environment."""
    return json.dumps(cluster.tf_config(), separators=(",", ":"))


def per_worker_batch(batch_size: int, cluster: Cluster) -> int:
    """`batch_size` is global (images per step over all workers): each worker's share, which must be whole."""
    if batch_size % cluster.size:
        raise ConfigError(f"batch_size {batch_size} is global and must be a multiple of the {cluster.size} workers")
    return batch_size // cluster.size
