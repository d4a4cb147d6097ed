"""The tools behind kto_bed.imagebuild: buildah with the bed's own storage and registry mirrors, Debian root
filesystems from mmdebstrap, and the binaries that go into images (pause, CoreDNS, MinIO).

Binaries are cached under ~/.cache/kto-bed/<component>-<version>/ like bed/build.sh's. Go builds take both
cores of a small machine, so one starts only when no other Go build (bed/build.sh) is running.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from . import registry
from .paths import BED_DIR, BedPaths, cache_dir, pinned_versions

SUITE = "bookworm"
# The host's Debian sources (the mirror apt uses here); deb.debian.org when there is none.
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# Slim like the official debian:*-slim images: no manuals, docs (but copyrights) or translations. The
# options stay in the image (/etc/dpkg/dpkg.cfg.d, /etc/apt/apt.conf.d), so images built on it keep slim.
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    # merged /usr made by mmdebstrap's hook, not by the usrmerge package (which pulls in perl).
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--skip=output/dev",
    # mmdebstrap copies the host's resolver and name in; the runtime provides both.
    '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
    '--aptopt=APT::Install-Recommends "false"',
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static")


class BuildError(RuntimeError):
    """A build step failed (the message says which, with the end of its output)."""


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        quiet: bool = True, label: str | None = None) -> str:
    """Run a build step niced (the machine is shared with other builds); its output only on failure."""
    done = subprocess.run(["nice", "-n", "10", *argv], env=env, cwd=cwd, text=True, check=False,
                          stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if done.returncode != 0:
        tail = (done.stdout or "")[-3000:]
        raise BuildError(f"{label or ' '.join(argv[:3])} failed with exit code {done.returncode}\n{tail}")
    return done.stdout or ""


class Buildah:
    """buildah with its storage under ~/.cache/kto-bed/buildah and the bed's registry as every mirrored one."""

    def __init__(self, paths: BedPaths) -> None:
        self.store = cache_dir() / "buildah"
        self.used = False
        conf = registry.config_dir(paths) / "registries.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # As containerd is set up: docker.io, quay.io and registry.k8s.io are served by the local registry,
        # so `FROM python:3.11-slim` pulls the bed's own base and nothing reaches the internet.
        lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"', ""]
        for prefix in (*registry.MIRRORED, registry.HOST):
            lines += ["[[registry]]", f'prefix = "{prefix}"', f'location = "{registry.HOST}"', "insecure = true", ""]
        conf.write_text("\n".join(lines))
        self.env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}

    def __call__(self, *args: str, quiet: bool = True) -> str:
        self.used = True
        argv = ["buildah", "--root", str(self.store / "storage"), "--runroot", str(self.store / "run"),
                "--storage-driver", "overlay", *args]
        return run(argv, env=self.env, quiet=quiet, label=f"buildah {' '.join(args[:1])}")

    def build(self, dockerfile: Path, context: Path, tag: str, volumes: Sequence[str] = ()) -> None:
        vols = [arg for v in volumes for arg in ("--volume", v)]
        # --pull: the FROM image is checked against the registry (a rebuilt base is picked up). Working
        # containers a failed step leaves go in clean() (buildah 1.28 has --force-rm only with --layers).
        self("bud", "--isolation", "chroot", "--pull", "--format", "oci", *vols,
             "-f", str(dockerfile), "-t", tag, str(context))

    def push(self, image: str, repo: str, tag: str) -> None:
        self("push", "--tls-verify=false", "--quiet", image, f"docker://{registry.HOST}/{repo}:{tag}")

    def clean(self) -> None:
        """Nothing stays in buildah's storage: the registry holds every image, pulls from it are local."""
        if not self.used:
            return
        try:
            self("rm", "--all")
            self("rmi", "--all", "--force")
        except BuildError as err:  # leftovers cost disk only; the next clean retries
            print(f"  warning: cleaning buildah storage failed: {err}", flush=True)


def debian_rootfs(out: Path, packages: Sequence[str] = ()) -> None:
    """A Debian minbase root filesystem as a tarball (apt uses the host's mirror)."""
    mirror = str(HOST_SOURCES) if HOST_SOURCES.exists() else "http://deb.debian.org/debian"
    include = [f"--include={','.join(packages)}"] if packages else []
    run(["mmdebstrap", *MMDEBSTRAP_OPTIONS, *include, "--format=tar", SUITE, str(out), mirror])


def mmdebstrap_recipe(packages: Sequence[str] = ()) -> list[str]:
    """What decides a root filesystem (its cache key): suite, options, packages."""
    return [SUITE, *MMDEBSTRAP_OPTIONS, *sorted(packages)]


def _go_env() -> dict[str, str]:
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


def pause_source() -> Path:
    """build/pause/linux/pause.c of the pinned Kubernetes release (its Go module holds it)."""
    version = pinned_versions()["K8S_VERSION"]
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True,
                              env=_go_env()).stdout.strip()
    source = Path(modcache) / f"k8s.io/kubernetes@{version}" / "build/pause/linux/pause.c"
    if not source.exists():
        run(["go", "mod", "download", f"k8s.io/kubernetes@{version}"], env=_go_env(), cwd=cache_dir())
    return source


def pause_recipe(version: str) -> list[str]:
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, check=True).stdout.strip()
    return [pause_source().read_text(), *PAUSE_CFLAGS, f"-DVERSION={version}", f"gcc {gcc}"]


def pause_binary(out: Path, version: str) -> None:
    """Static pause as Kubernetes' build/pause/Makefile makes it (gcc, then strip)."""
    run(["gcc", *PAUSE_CFLAGS, f"-DVERSION={version}", "-o", str(out), str(pause_source())])
    run(["strip", str(out)])


def _go_builds() -> list[str]:
    """Go builds running now (ours excepted): `go build|install`, or bed/build.sh between two of them."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.pid == os.getpid() or not cmd:
            continue
        is_go = Path(cmd[0]).name == "go" and len(cmd) > 1 and cmd[1] in ("build", "install")
        if is_go or any(arg.endswith("bed/build.sh") or arg == "build.sh" for arg in cmd[:3]):
            found.append(" ".join(cmd)[:100])
    return found


def wait_for_go_builds(poll: float = 15.0) -> None:
    said = False
    while busy := _go_builds():
        if not said:
            print(f"  waiting for running Go builds to finish: {busy[0]} ...", flush=True)
            said = True
        time.sleep(poll)


def cached_binary(component: str, binary: Path) -> Path:
    """A binary bed/build.sh builds and caches (`bed/build.sh <component>`), built here when missing,
    once no other Go build runs."""
    if not binary.exists():
        wait_for_go_builds()
        t0 = time.monotonic()
        run([str(BED_DIR / "build.sh"), component], quiet=False)
        print(f"  built {component} in {time.monotonic() - t0:.0f} s", flush=True)
    return binary
