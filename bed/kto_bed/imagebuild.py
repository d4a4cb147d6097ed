"""Builds the bed's container images and serves them from its registry (kto_bed.registry, 127.0.0.1:5000).

    python -m kto_bed.imagebuild [--list] [NAME ...]      (default: every image)

- base images no registry here serves, made locally: Debian minbase (mmdebstrap) as debian:bookworm-slim,
  python:3.11-slim on it, pause and CoreDNS (static binaries FROM scratch), MinIO and a MySQL stand-in;
- our images from Dockerfile.operator, Dockerfile.trainer and Dockerfile.mlflow as they are, and the test
  image kto-standin-trainer (tests/images/standin-trainer).

Each image goes to the registry under the repository path it has upstream (docker.io/library/python:3.11-slim
-> library/python:3.11-slim). Cache: an image's inputs (Dockerfile, the files its COPY/ADD lines bring in,
its base's digest, its recipe) hash to a tag ctx-<hash16>; when the registry has that tag nothing is built,
the product tags are just pointed at its manifest. Digests of the product tags go to <state>/images.json.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import buildtools as tools
from . import node, registry
from .paths import BED_DIR, BedPaths, cache_dir, coredns_bin, minio_bin, pinned_versions, repo_root

# Bump when a build step changes in a way the hashed inputs do not show (all images rebuild).
RECIPE_VERSION = "1"
IMAGES = BED_DIR / "images"
PAUSE_TAG = "3.10.2"
MINIO_TAG = "RELEASE.2025-09-07T16-13-09Z"  # the tag manifests/platform/base/kustomization.yaml uses
OUR_TAG = "0.1.0"  # manifests/*/kustomization.yaml: kto-operator, kto-trainer, kto-mlflow
# The host's CA bundle holds the egress proxy's CA: mounted while RUN steps reach PyPI, never in a layer.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# What the repository's .dockerignore leaves out of the directories the Dockerfiles COPY (a pattern added
# there and not here only makes the key cover a file the image lacks: a needless rebuild, never a stale image).
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".egg-info")


@dataclass(frozen=True)
class Image:
    """One image: how to build it and under which references the registry serves it."""

    name: str
    refs: tuple[str, ...]  # product references; all in one repository
    dockerfile: Path
    # The build context used as is (the repository root for our Dockerfiles). None: a temporary folder
    # with the Dockerfile's folder, `files` and what `generate` writes.
    context: Path | None = None
    bases: tuple[str, ...] = ()  # images (by name) this one is built FROM: built first, digests in the key
    files: dict[str, Path] = field(default_factory=dict)  # name in the context -> file elsewhere in the repo
    generated: tuple[str, ...] = ()  # context files `generate` writes; `recipe` stands for them in the key
    generate: Callable[[Path], None] | None = None
    recipe: Callable[[], Sequence[str]] = lambda: ()
    pypi: bool = False  # RUN steps install from PyPI (through the TLS-intercepting egress proxy)

    @property
    def repo(self) -> str:
        return registry.split_ref(self.refs[0])[0]


def _debian_rootfs(ctx: Path) -> None:
    tools.debian_rootfs(ctx / "rootfs.tar")


def _pause(ctx: Path) -> None:
    tools.pause_binary(ctx / "pause", f"v{PAUSE_TAG}-kto")


def _copy_binary(component: str, binary: Callable[[], Path], name: str) -> Callable[[Path], None]:
    def generate(ctx: Path) -> None:
        shutil.copy2(tools.cached_binary(component, binary()), ctx / name)
    return generate


def catalog() -> list[Image]:
    """Every image, bases before the images built on them."""
    v = pinned_versions()
    root = repo_root()
    ours = [Image(n, (f"docker.io/library/kto-{n}:{OUR_TAG}",), root / f"Dockerfile.{n}", context=root,
                  bases=("python",), pypi=True) for n in ("operator", "trainer", "mlflow")]
    return [
        Image("debian", ("docker.io/library/debian:bookworm-slim",), IMAGES / "debian/Dockerfile",
              generated=("rootfs.tar",), generate=_debian_rootfs, recipe=tools.mmdebstrap_recipe),
        Image("python", ("docker.io/library/python:3.11-slim", "docker.io/library/python:3.11"),
              IMAGES / "python/Dockerfile", bases=("debian",)),
        Image("pause", (f"registry.k8s.io/pause:{PAUSE_TAG}",), IMAGES / "pause/Dockerfile",
              generated=("pause",), generate=_pause, recipe=lambda: tools.pause_recipe(f"v{PAUSE_TAG}-kto")),
        Image("coredns", (f"registry.k8s.io/coredns/coredns:{v['COREDNS_VERSION']}",), IMAGES / "coredns/Dockerfile",
              generated=("coredns",), generate=_copy_binary("coredns", coredns_bin, "coredns"),
              recipe=lambda: [f"coredns {v['COREDNS_VERSION']}", "CGO_ENABLED=0"]),
        Image("minio", (f"quay.io/minio/minio:{MINIO_TAG}",), IMAGES / "minio/Dockerfile", bases=("debian",),
              generated=("minio",), generate=_copy_binary("minio", minio_bin, "minio"),
              recipe=lambda: [f"minio {v['MINIO_VERSION']}"]),
        Image("mysql", ("quay.io/sclorg/mysql-80-c9s:c9s",), IMAGES / "mysql/Dockerfile", bases=("debian",),
              files={"mysqld_local.py": IMAGES / "mysql/mysqld_local.py"}),
        *ours,
        Image("standin-trainer", (f"docker.io/library/kto-standin-trainer:{OUR_TAG}",),
              root / "tests/images/standin-trainer/Dockerfile", bases=("python",), pypi=True,
              files={"standin_trainer.py": BED_DIR / "kto_bed/standin_trainer.py"}),
    ]


def _instructions(dockerfile: Path) -> Iterator[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    current = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        yield current + stripped
        current = ""
    if current:
        yield current


def copy_sources(dockerfile: Path) -> list[str]:
    """Context paths the COPY/ADD lines bring in (not those copied --from another stage or image)."""
    sources: list[str] = []
    for instruction in _instructions(dockerfile):
        word, _, rest = instruction.partition(" ")
        if word.upper() not in ("COPY", "ADD"):
            continue
        words = json.loads(rest) if rest.lstrip().startswith("[") else shlex.split(rest)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def _ignored(path: Path) -> bool:
    return any(part in IGNORED_PARTS or part.endswith(IGNORED_SUFFIXES) for part in path.parts)


def _context_files(image: Image) -> list[tuple[str, Path]]:
    """(context name, file) for every file the Dockerfile copies in, generated ones excepted."""
    base = image.context or image.dockerfile.parent
    found: list[tuple[str, Path]] = []
    for source in copy_sources(image.dockerfile):
        name = source.removeprefix("./") or "."
        if name in image.generated:
            continue
        origin = image.files.get(name, base / name)
        matches = sorted(base.glob(name)) if any(c in name for c in "*?[") else [origin]
        for match in matches:
            if not match.exists():
                raise tools.BuildError(f"{image.dockerfile}: COPY source {source} not found ({match})")
            files = sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match]
            found += [(f"{name}/{f.relative_to(match)}" if match.is_dir() else name, f)
                      for f in files if not _ignored(f.relative_to(match.parent))]
    return found


def context_key(image: Image, base_digests: dict[str, str]) -> str:
    """sha256 of everything that decides the image: recipe version, Dockerfile, copied files, bases."""
    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    feed("recipe-version", RECIPE_VERSION.encode())
    feed("dockerfile", image.dockerfile.read_bytes())
    for name, path in _context_files(image):
        mode = "x" if path.stat().st_mode & 0o111 else "-"
        feed(f"file {name} {mode}", path.read_bytes())
    for item in image.recipe():
        feed("recipe", item.encode())
    for base in image.bases:
        feed(f"base {base}", base_digests[base].encode())
    return h.hexdigest()


def _with_bases(images: list[Image], names: Iterable[str]) -> list[Image]:
    by_name = {i.name: i for i in images}
    unknown = sorted(set(names) - by_name.keys())
    if unknown:
        raise ValueError(f"unknown image(s): {', '.join(unknown)}; known: {', '.join(by_name)}")
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += by_name[name].bases
    return [i for i in images if i.name in wanted]


def _build(image: Image, key_tag: str, buildah: tools.Buildah) -> None:
    """Build in a temporary context and push to the registry under key_tag."""
    local = f"localhost/kto-bed-build/{image.name}:{key_tag}"
    with tempfile.TemporaryDirectory(prefix=f"kto-image-{image.name}-") as tmp:
        context = image.context
        dockerfile = image.dockerfile
        if context is None:
            context = Path(tmp) / "context"
            shutil.copytree(image.dockerfile.parent, context)
            for name, source in image.files.items():
                shutil.copy2(source, context / name)
            if image.generate is not None:
                image.generate(context)
            dockerfile = context / image.dockerfile.name
        volumes = [f"{HOST_CA}:{HOST_CA}:ro"] if image.pypi else []
        buildah.build(dockerfile, context, local, volumes)
    try:
        buildah.push(local, image.repo, key_tag)
    finally:
        buildah("rmi", "--force", local)


def _size(manifest: registry.Manifest) -> str:
    size = manifest.size
    return f"{size / 1e6:.0f} MB" if size >= 1e7 else f"{size / 1e3:.0f} kB"


def build_one(image: Image, base_digests: dict[str, str], buildah: tools.Buildah) -> dict[str, str]:
    """Make sure the registry serves the image under its product references; return {ref: digest}."""
    key_tag = "ctx-" + context_key(image, base_digests)[:16]
    t0 = time.monotonic()
    cached = registry.digest_of(image.repo, key_tag) is not None
    if not cached:
        print(f"{image.refs[0]}: building ({key_tag}) ...", flush=True)
        _build(image, key_tag, buildah)
    manifests = [registry.retag(image.repo, key_tag, registry.split_ref(ref)[1]) for ref in image.refs]
    manifest = manifests[0]  # the same manifest under every product tag
    how = "cached" if cached else f"built in {time.monotonic() - t0:.0f} s"
    print(f"{image.refs[0]}: {how}, {_size(manifest)}, {key_tag}, {manifest.digest}", flush=True)
    base_digests[image.name] = manifest.digest
    return {ref: manifest.digest for ref in image.refs}


def _write_digests(paths: BedPaths, digests: dict[str, str]) -> None:
    out = paths.root / "images.json"
    known = json.loads(out.read_text()) if out.exists() else {}
    known.update(digests)
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(known.items())), indent=2) + "\n")
    tmp.replace(out)


def build_all(paths: BedPaths, only: Iterable[str] | None = None) -> dict[str, str]:
    """Build (or find cached) the images named in `only` (default: all) and their bases; {ref: digest}."""
    images = catalog()
    selected = _with_bases(images, only) if only else images
    registry.ensure_registry(paths)
    buildah = tools.Buildah(paths)
    lock_file = cache_dir() / "imagebuild.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    base_digests: dict[str, str] = {}
    # One build at a time per machine: two would race for the same tags and both cores.
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for image in selected:
                digests.update(build_one(image, base_digests, buildah))
        finally:
            _write_digests(paths, digests)
            buildah.clean()
    return digests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kto_bed.imagebuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="images to build (with their bases); default: all")
    parser.add_argument("--list", action="store_true", help="list the images and exit")
    args = parser.parse_args(argv)
    if args.list:
        for image in catalog():
            print(f"{image.name:16} {' '.join(image.refs)}")
        return 0
    paths = BedPaths.default()
    try:
        build_all(paths, args.names or None)
        for name in node.forget_stale_images(paths):
            print(f"{name}: dropped from the running node (rebuilt; the kubelet pulls the new one)")
    except (tools.BuildError, registry.RegistryError, subprocess.CalledProcessError, OSError, ValueError) as err:
        print(f"imagebuild: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
