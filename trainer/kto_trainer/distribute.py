"""Training on one process or on several workers: the tf.distribute strategy, the share of the data each
worker reads, the devices and the precision a run trained with.

With more than one worker: `MultiWorkerMirroredStrategy`, one replica per device of each worker, gradients
all-reduced every step. `batch_size` stays the global batch (one optimizer step sees `batch_size` images
whatever the number of workers), so a run's hyperparameters mean the same with 1 or N workers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from .cluster import WORKER, Cluster
from .data import make_dataset

MIXED_GPU = "mixed_float16"
# bfloat16 keeps float32's exponent range (no loss scaling) and is what CPUs accelerate (AVX512_BF16, AMX).
MIXED_CPU = "mixed_bfloat16"
FULL = "float32"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def make_strategy(cluster: Cluster) -> tf.distribute.Strategy:
    """The default strategy alone; MultiWorkerMirroredStrategy for a cluster. Must run before any other
    TensorFlow op of the process (the strategy configures the collective ops of the eager context)."""
    if cluster.size == 1:
        return tf.distribute.get_strategy()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({WORKER: list(cluster.workers)}), task_type=WORKER, task_id=cluster.index,
        rpc_layer="grpc",
    )
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this container may use by its cgroup's CFS quota (cgroup v2 or v1); None when unlimited."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def fit_threads_to_cpu_limit(env: Mapping[str, str], root: Path = CGROUP_ROOT) -> int | None:
    """Size TensorFlow's thread pools to the container's CPU limit (whole CPUs, at least 1); the thread count,
    or None when left as it is (no limit, or TF_NUM_INTRAOP_THREADS set). Before any TensorFlow op.

    TensorFlow sizes them by the machine's CPUs, not the container's: a worker limited to 1 CPU on a bigger
    node runs more threads than its quota, the kernel throttles it for the rest of each period, and in a
    cluster every other worker waits for it at the next all-reduce."""
    if env.get("TF_NUM_INTRAOP_THREADS"):
        return None
    limit = cpu_limit(root)
    if limit is None:
        return None
    threads = max(1, int(limit))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return threads


def worker_dataset(
    strategy: tf.distribute.Strategy, cluster: Cluster, paths: Sequence[str], labels: Sequence[int],
    image_size: int, batch_size: int, *, shuffle: bool, seed: int,
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """One split as this worker trains on it: the whole split alone; in a cluster, every N-th image from the
    worker's index (each worker decodes only its own share) in per-replica batches of the global batch, as
    (images, labels, weights) (see `shard`)."""
    if cluster.size == 1:
        return make_dataset(paths, labels, image_size, batch_size, shuffle=shuffle, seed=seed)

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        own = shard(paths, labels, context.input_pipeline_id, context.num_input_pipelines)
        per_replica = context.get_per_replica_batch_size(batch_size)
        return make_dataset(own.paths, own.labels, image_size, per_replica, shuffle=shuffle, seed=seed,
                            weights=own.weights)

    return strategy.distribute_datasets_from_function(per_worker)


@dataclasses.dataclass(frozen=True)
class Shard:
    paths: list[str]
    labels: list[int]
    weights: list[float]


def shard(paths: Sequence[str], labels: Sequence[int], index: int, count: int) -> Shard:
    """Every `count`-th image from `index`, padded to the longest shard's length with weight-0 copies.

    Every worker must run the same number of steps on batches of the same size: a worker whose shard ran out
    would be given empty batches, and TensorFlow's CPU convolutions fail on those ("input depth must be
    evenly divisible by filter depth", seen with 5 and 4 images per worker). A weight-0 image counts in
    no loss, gradient or metric."""
    own_paths, own_labels = list(paths)[index::count], list(labels)[index::count]
    length = -(-len(paths) // count)
    missing = length - len(own_paths)
    return Shard(own_paths + [paths[0]] * missing, own_labels + [labels[0]] * missing,
                 [1.0] * len(own_paths) + [0.0] * missing)


def local_copy(model: keras.Model, rebuild: Callable[[], keras.Model]) -> keras.Model:
    """The trained model outside the strategy (same weights): what the chief evaluates, saves and logs once
    the other workers are gone (a distributed model's predict gathers from every worker)."""
    copy = rebuild()
    copy.set_weights(model.get_weights())
    return copy


def set_precision(mixed: bool) -> str:
    """Keras' global dtype policy for the layers built next: float32, or mixed (float16 compute on a GPU,
    bfloat16 on CPUs); the policy's name."""
    policy = FULL
    if mixed:
        policy = MIXED_GPU if tf.config.list_physical_devices("GPU") else MIXED_CPU
    keras.mixed_precision.set_global_policy(policy)
    return policy


def device_names() -> list[str]:
    """The devices this process trains on: each GPU with its model name, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return ["CPU"]
    names = []
    for index, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(f"GPU:{index} {details.get('device_name', 'unknown')}".strip())
    return names
