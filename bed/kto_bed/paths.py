"""Where the bed keeps its state, its cached binaries and its pinned versions."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BED_DIR = PACKAGE_DIR.parent  # bed/ in the repository


def repo_root() -> Path:
    return BED_DIR.parent


def pinned_versions() -> dict[str, str]:
    """Parse bed/versions.sh, the single place where versions are pinned."""
    versions: dict[str, str] = {}
    for line in (BED_DIR / "versions.sh").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class BedPaths:
    """All filesystem locations of one bed instance (state under <repo>/.bed)."""

    root: Path

    @classmethod
    def default(cls) -> BedPaths:
        return cls(Path(os.environ.get("KTO_BED_DIR", repo_root() / ".bed")))

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def images(self) -> Path:
        return self.root / "images.yaml"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"


def cache_dir() -> Path:
    return Path(os.environ.get("KTO_BED_CACHE", Path.home() / ".cache" / "kto-bed"))


def k8s_bin(name: str) -> Path:
    return cache_dir() / f"k8s-{pinned_versions()['K8S_VERSION']}" / name


def minio_bin() -> Path:
    return cache_dir() / f"minio-{pinned_versions()['MINIO_VERSION']}" / "minio"


def containerd_bin(name: str) -> Path:
    return cache_dir() / f"containerd-{pinned_versions()['CONTAINERD_VERSION']}" / name


def coredns_bin() -> Path:
    return cache_dir() / f"coredns-{pinned_versions()['COREDNS_VERSION']}" / "coredns"


def venv_bin() -> Path:
    """The bin/ folder of the interpreter running the bed: pods' `python` resolves here."""
    return Path(sys.executable).parent
