"""Errors the trainer reports as one readable line (the CLIs turn them into exit code 2)."""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error caused by bad input rather than by a bug in the trainer."""


class ConfigError(TrainerError):
    """An invalid parameter (ratios, epochs, image size, weights...)."""


class DatasetError(TrainerError):
    """A malformed or inconsistent dataset (annotation file, labels, split)."""


class StorageError(TrainerError):
    """S3 could not be reached or answered with an error."""


class ObjectMissingError(StorageError):
    """An object the trainer needs is not in the bucket."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object not found: s3://{bucket}/{key}")
        self.bucket = bucket
        self.key = key
