"""S3 fetch of N small images from the bed's MinIO: the course's one-at-a-time loop vs concurrent GETs.

    .venv/bin/python bench/bench_s3_fetch.py [--count 2000] [--size 32] [--workers 16]

Needs the bed's MinIO (`.bed/env` gives MLFLOW_S3_ENDPOINT_URL and the credentials). Uploads the images once
to a fresh bucket in the course layout, then downloads all of them, into fresh folders, three ways:
  1. course: `client.download_file(bucket, key, path)` in a for loop (the course's s3_wrapper + split.py);
  2. sequential GET: kto_trainer's one-GET-per-object download, workers=1 (isolates the per-call overhead);
  3. concurrent: kto_trainer.s3io.download_extract (ThreadPoolExecutor, one GET per object).
All three run against the same MinIO in one process; ratios are computed from these same measurements.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from kto_trainer.annotations import parse_annotations
from kto_trainer.config import ANNOTATION_KEY, EXTRACT_PREFIX
from kto_trainer.dataset_tool import upload_dataset
from kto_trainer.datasets import synthetic_images
from kto_trainer.s3io import S3Settings, S3Store, download_extract, make_client
from trainer_bench_common import cpu_note, load_bed_env, timer


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
    args = parser.parse_args()
    if not load_bed_env():
        print("no .bed/env: start the bed first (make bed)", file=sys.stderr)
        return 2

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
    results: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}  # this process's CPU per image: the client's cost, whatever the load
    try:
        # Warm-up: connections, credentials, MinIO caches, for every method alike.
        warm = dict(list(extract.items())[:20])
        course_loop(course_client(), bucket, warm, work / "warm-course")
        download_extract(store, warm, work / "warm-ours", workers=args.workers)

        course_label = "course loop (download_file, 1 at a time)"
        runs = [
            (course_label, lambda d: course_loop(course_client(), bucket, extract, d)),
            ("sequential GET (workers=1)", lambda d: download_extract(store, extract, d, workers=1)),
            (f"concurrent GET (workers={args.workers})",
             lambda d: download_extract(store, extract, d, workers=args.workers)),
            # The course loop again: on a shared machine the load drifts; the mean of the two brackets the rest.
            (course_label, lambda d: course_loop(course_client(), bucket, extract, d)),
        ]
        course_times = []
        for index, (label, run) in enumerate(runs):
            directory = work / f"run{index}"
            cpu_start = time.process_time()
            with timer() as elapsed:
                run(directory)
            cpu_ms[label] = (time.process_time() - cpu_start) * 1000 / len(extract)
            assert count_files(directory) == len(extract), f"{label}: incomplete download"
            if label == course_label:
                course_times.append(elapsed())
                results[label] = sum(course_times) / len(course_times)
            else:
                results[label] = elapsed()
        print(f"course loop: {course_times[0]:.2f} s before, {course_times[1]:.2f} s after")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            keys = [ANNOTATION_KEY, *(EXTRACT_PREFIX + name for name in extract)]
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
            client.delete_bucket(Bucket=bucket)

    course = next(iter(results.values()))
    sequential = list(results.values())[1]
    print(f"{'method':45s} {'seconds':>8s} {'images/s':>9s} {'vs course':>9s} {'client CPU/image':>17s}")
    for label, seconds in results.items():
        print(f"{label:45s} {seconds:8.2f} {len(extract) / seconds:9.0f} {course / seconds:8.1f}x "
              f"{cpu_ms[label]:14.2f} ms")
    concurrent = list(results.values())[2]
    print(f"RATIO concurrent vs course loop: {course / concurrent:.1f}x (target >= 8x); "
          f"concurrent vs sequential GET: {sequential / concurrent:.1f}x; "
          f"sequential GET vs course loop: {course / sequential:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
