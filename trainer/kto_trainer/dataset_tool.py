"""`python -m kto_trainer.dataset_tool` / `kto-dataset`: upload a dataset to S3 in the course layout.

Sources: `synthetic` (3 learnable classes, any count and size) or `digits` (scikit-learn's digits; three
digits stand for cat, dog and other). `--out DIR` writes the same layout to a local folder instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .config import DEFAULT_BUCKET
from .datasets import DEFAULT_DIGITS, Images, digits_images, layout_objects, synthetic_images, write_layout
from .errors import TrainerError
from .s3io import ensure_bucket, make_client, upload_objects

PROG = "kto-dataset"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _digits(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected digits like 0,1,2, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", choices=("synthetic", "digits"), default="synthetic")
    parser.add_argument("--count", type=int, default=300, help="number of images (balanced over 3 classes)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="created if missing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits", type=_digits, default=DEFAULT_DIGITS, help="digits for cat,dog,other")
    parser.add_argument("--workers", type=int, default=16, help="concurrent uploads")
    parser.add_argument("--out", type=Path, default=None, help="write to this local folder instead of S3")
    return parser


def generate(source: str, count: int, size: int, seed: int, digits: Sequence[int] = DEFAULT_DIGITS) -> Images:
    if source == "digits":
        return digits_images(count, size, seed, digits)
    return synthetic_images(count, size, seed)


def upload_dataset(client: object, bucket: str, images: Images, workers: int = 16) -> int:
    """Create the bucket if needed and upload the annotation file and every image; returns the object count."""
    ensure_bucket(client, bucket)
    return upload_objects(client, bucket, layout_objects(images), workers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        images = generate(args.source, args.count, args.size, args.seed, args.digits)
        if args.out is not None:
            written = write_layout(args.out, images)
            print(f"{PROG}: wrote {written} files ({len(images)} images) under {args.out}")
        else:
            client = make_client(max_connections=max(10, args.workers))
            uploaded = upload_dataset(client, args.bucket, images, args.workers)
            print(f"{PROG}: uploaded {uploaded} objects ({len(images)} images) to s3://{args.bucket}/dataset/")
    except TrainerError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
