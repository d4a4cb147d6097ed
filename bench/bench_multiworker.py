"""Training speed with 1 and 2 workers on this machine, and what the all-reduce costs.

    .venv/bin/python bench/bench_multiworker.py [--size 32] [--count 531] [--batch 32] [--epochs 3] [--json out.json]
        [--single] [--mixed_precision]      (--single: 1 worker's fit only, as bench/gpu_check.sh uses it)

The trainer's own pieces on scikit-learn's digits (`--count` images of 0/1/2, `--size` px, weights none), the
train split (70 %) only, no validation:
  - 1 worker, fit: one process, Keras' fit on the trainer's tf.data pipeline, as train() runs it alone;
  - 1 worker, loop: one process, the multi-worker loop (kto_trainer.multiworker) without a cluster: the loop's
    own cost next to fit's;
  - 2 workers: two processes on this machine with KTO_WORKER_HOSTS (MultiWorkerMirroredStrategy over gRPC on
    loopback), each on its half of the images, the global batch `--batch` as with 1 worker.
Each: one untimed epoch (tracing, decoding into the cache), then `--epochs` timed epochs; images/s = train
images x epochs / their time. All-reduce: in the 2-worker cluster, the mean time of 200 all-reduces of a payload
shaped like the model's trainable weights (the gradients each step sums), and its share of a training step.

On 2 cores no speed-up is expected: both workers share the same two cores, each step waits for the slower worker,
and every step adds an all-reduce. The figures say how much the distribution costs here, not what more machines
would give. Figures are informational (the shared machine's load moves them); not wired into run_all.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TRAIN_SHARE = 0.7
ALLREDUCE_ROUNDS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One process's figures (role: fit, loop, or a worker of the cluster named by KTO_WORKER_HOSTS)."""
    import keras
    import tensorflow as tf
    from kto_trainer import distribute, multiworker
    from kto_trainer.cluster import cluster_from_env
    from kto_trainer.config import TrainConfig
    from kto_trainer.data import list_split_files, make_dataset
    from kto_trainer.model import build_model
    from kto_trainer.s3io import DirStore
    from kto_trainer.train import fetch_dataset

    cluster = cluster_from_env(os.environ)
    strategy = distribute.make_strategy(cluster)
    precision = distribute.set_precision(args.mixed_precision)
    data = Path(args.data)
    config = TrainConfig(split_ratio_train=TRAIN_SHARE, split_ratio_evaluate=0.15, split_ratio_test=0.15,
                         batch_size=args.batch, image_size=args.size, weights="none", seed=0,
                         working_dir=str(Path(args.work) / f"w{cluster.index}"), dataset_dir=str(data))
    config.work_path.mkdir(parents=True, exist_ok=True)
    classes, _ = fetch_dataset(config, DirStore(data), record=False)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(len(classes), args.size)
    paths, labels = list_split_files(config.split_dir("train"), classes)
    train = distribute.worker_dataset(strategy, cluster, paths, labels, args.size, args.batch, shuffle=True, seed=0)
    if args.role == "loop":  # the loop's batches carry weights (a cluster's shards do)
        own = distribute.shard(paths, labels, 0, 1)
        train = make_dataset(own.paths, own.labels, args.size, args.batch, shuffle=True, seed=0, weights=own.weights)
    times: list[float] = []
    if args.role == "fit":
        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter() - self.started)

        model.fit(train, epochs=args.epochs + 1, verbose=0, callbacks=[Timer()])
    else:
        multiworker.fit_cluster(model, strategy, train, [], epochs=args.epochs + 1, global_batch=args.batch,
                                on_epoch=lambda epoch, logs: times.append(logs["seconds"]),
                                stop_requested=lambda: False, stop=lambda: None)
    result: dict[str, Any] = {"role": args.role, "index": cluster.index, "images": len(paths),
                              "devices": distribute.device_names(), "precision": precision,
                              "first_epoch_s": round(times[0], 2), "epoch_s": [round(t, 2) for t in times[1:]],
                              "img_s": len(paths) * args.epochs / sum(times[1:])}
    if cluster.size > 1:
        payload = [tf.zeros_like(v) + 1.0 for v in model.trainable_variables]

        def replica_sum() -> Any:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, payload)

        @tf.function
        def all_reduce() -> Any:
            return strategy.run(replica_sum)

        all_reduce()  # traced, and the first collective's set-up, outside the timing
        started = time.perf_counter()
        for _ in range(ALLREDUCE_ROUNDS):
            all_reduce()
        result["allreduce_ms"] = (time.perf_counter() - started) / ALLREDUCE_ROUNDS * 1000
        result["payload_floats"] = int(sum(int(tf.size(v)) for v in model.trainable_variables))
        # Each worker: its shard (every other image, padded to one length) in batches of half the global batch.
        shard = math.ceil(len(paths) / cluster.size)
        result["steps_per_epoch"] = math.ceil(shard / (args.batch // cluster.size))
    return result


def run_role(args: argparse.Namespace, role: str, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--role", role, "--size", str(args.size), "--count", str(args.count),
           "--batch", str(args.batch), "--epochs", str(args.epochs), "--data", args.data, "--work", args.work,
           "--json", str(out), *(["--mixed_precision"] if args.mixed_precision else [])]
    return subprocess.Popen(cmd, env={**os.environ, **env})


def drive(args: argparse.Namespace) -> dict[str, Any]:
    from kto_trainer.datasets import digits_images, write_layout

    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        args.data, args.work = str(Path(tmp) / "digits"), str(Path(tmp) / "work")
        write_layout(Path(args.data), digits_images(args.count, args.size, seed=0))
        results: dict[str, Any] = {}
        for role in ("fit",) if args.single else ("fit", "loop"):
            out = Path(tmp) / f"{role}.json"
            if run_role(args, role, {}, out).wait() != 0:
                raise SystemExit(f"the {role} run failed")
            results[role] = json.loads(out.read_text())
            print(f"1 worker, {role} on {', '.join(results[role]['devices'])} ({results[role]['precision']}): "
                  f"{results[role]['img_s']:.1f} images/s (epochs {results[role]['epoch_s']} s)", flush=True)
        if args.single:
            return {"size": args.size, "batch": args.batch, "epochs": args.epochs, "cpus": os.cpu_count(),
                    "one_worker_fit_img_s": round(results["fit"]["img_s"], 1), "runs": results}
        hosts = f"localhost:{free_port()},localhost:{free_port()}"
        procs = [run_role(args, "worker", {"KTO_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": str(i)},
                          Path(tmp) / f"worker{i}.json") for i in range(2)]
        if [p.wait() for p in procs] != [0, 0]:
            raise SystemExit("a worker of the 2-worker run failed")
        workers = [json.loads((Path(tmp) / f"worker{i}.json").read_text()) for i in range(2)]
    # Both workers step together through the whole split (each on its half): the split's images over the chief's
    # epoch time.
    chief = workers[0]
    two = chief["img_s"]
    step_ms = sum(chief["epoch_s"]) / args.epochs / chief["steps_per_epoch"] * 1000
    summary = {
        "size": args.size, "batch": args.batch, "epochs": args.epochs, "train_images": results["fit"]["images"],
        "cpus": os.cpu_count(),
        "one_worker_fit_img_s": round(results["fit"]["img_s"], 1),
        "one_worker_loop_img_s": round(results["loop"]["img_s"], 1),
        "two_workers_img_s": round(two, 1),
        "two_vs_one": round(two / results["fit"]["img_s"], 2),
        "two_workers_step_ms": round(step_ms, 1),
        "allreduce_ms": round(chief["allreduce_ms"], 2),
        "allreduce_share_of_step": round(chief["allreduce_ms"] / step_ms, 3),
        "allreduce_payload_floats": chief["payload_floats"],
        "runs": {"fit": results["fit"], "loop": results["loop"], "workers": workers},
    }
    print(f"2 workers: {summary['two_workers_img_s']:.1f} images/s ({summary['two_vs_one']}x one worker's fit); "
          f"a step {summary['two_workers_step_ms']} ms, of which an all-reduce of {chief['payload_floats']} floats "
          f"takes {summary['allreduce_ms']} ms ({summary['allreduce_share_of_step']:.1%})", flush=True)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--count", type=int, default=531)
    parser.add_argument("--batch", type=int, default=32, help="global batch (each of 2 workers takes half)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one untimed)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--single", action="store_true", help="1 worker's fit only (bench/gpu_check.sh)")
    parser.add_argument("--mixed_precision", action="store_true", help="as the trainer's --mixed_precision=true")
    parser.add_argument("--role", choices=("fit", "loop", "worker"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 1 or args.batch % 2:
        parser.error("--epochs must be >= 1 and --batch even (two workers share it)")
    result = measure(args) if args.role else drive(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
