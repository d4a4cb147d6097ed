"""The bed's image registry: Debian's docker-registry (distribution v2.8) on 127.0.0.1:5000 only.

containerd mirrors docker.io, quay.io and registry.k8s.io to it, so an image lives here under the
repository path it has upstream (``docker.io/library/python:3.11-slim`` -> ``library/python:3.11-slim``).
Its storage is a cache under ~/.cache/kto-bed/registry (it survives ``down``); only its config and log
live in the bed's state folder.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import procs
from .paths import BedPaths, cache_dir

HOST = "127.0.0.1:5000"
# Registries whose images the bed serves from here (the containerd mirror list and buildah's).
MIRRORED = ("docker.io", "quay.io", "registry.k8s.io")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
_ACCEPT = ", ".join(MANIFEST_TYPES)
# Never through a proxy: the registry is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RegistryError(RuntimeError):
    """The registry did not start or refused a request."""


def storage_dir() -> Path:
    return cache_dir() / "registry"


def config_dir(paths: BedPaths) -> Path:
    return paths.root / "registry"


def render_config(storage: Path) -> str:
    # No `debug:` section: distribution then opens no debug/metrics listener, so 127.0.0.1:5000 is the
    # only port. No auth: only local processes reach loopback. The secret only signs upload state.
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: {HOST}\n  secret: {secrets.token_hex(16)}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )


def _request(method: str, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to the registry: (status, headers, body); 404 is an answer, not an error."""
    req = urllib.request.Request(f"http://{HOST}{path}", data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return 404, dict(err.headers.items()), b""
        raise RegistryError(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from err


def is_up() -> bool:
    try:
        status, headers, _ = _request("GET", "/v2/", timeout=2.0)
    except (urllib.error.URLError, OSError, RegistryError):
        return False
    # The API version header tells a registry from another server that took the port.
    return status == 200 and "registry/2.0" in headers.get("Docker-Distribution-Api-Version", "")


def _alive(pid: int) -> bool:
    # By pid, not procs.is_running: right after the fork the child's environment lacks the bed's marker.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ensure_registry(paths: BedPaths) -> None:
    """Start the registry detached (stopped by `down` like every bed process) unless it answers already."""
    if is_up():
        return
    conf = config_dir(paths) / "config.yml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    storage_dir().mkdir(parents=True, exist_ok=True)
    conf.write_text(render_config(storage_dir()))
    pid = procs.start(paths, "registry", ["docker-registry", "serve", str(conf)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if is_up():
            return
        if not _alive(pid):
            break
        time.sleep(0.2)
    log = paths.logs / "registry.log"
    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
    raise RegistryError(f"registry on {HOST} did not come up; {log}:\n{tail}")


def split_ref(ref: str) -> tuple[str, str]:
    """'docker.io/library/python:3.11-slim' -> ('library/python', '3.11-slim'): the path served here."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        raise ValueError(f"image reference needs a tag: {ref}")
    first, _, rest = name.partition("/")
    if first in MIRRORED or first == HOST:
        name = rest
    elif "/" not in name:
        name = f"library/{name}"  # Docker Hub's short names
    return name, tag


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        """Bytes to pull: config plus (compressed) layers."""
        doc = json.loads(self.body)
        return int(doc["config"]["size"]) + sum(int(layer["size"]) for layer in doc["layers"])


def digest_of(repo: str, tag: str) -> str | None:
    status, headers, _ = _request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": _ACCEPT})
    return headers.get("Docker-Content-Digest") if status == 200 else None


def get_manifest(repo: str, reference: str) -> Manifest | None:
    status, headers, body = _request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": _ACCEPT})
    if status != 200:
        return None
    return Manifest(body, headers["Content-Type"], headers["Docker-Content-Digest"])


def put_manifest(repo: str, tag: str, manifest: Manifest) -> str:
    _status, headers, _ = _request("PUT", f"/v2/{repo}/manifests/{tag}", data=manifest.body,
                                   headers={"Content-Type": manifest.media_type})
    return headers.get("Docker-Content-Digest", manifest.digest)


def retag(repo: str, source_tag: str, target_tag: str) -> Manifest:
    """Point target_tag at source_tag's manifest (same bytes, so the same digest); no-op when it does."""
    manifest = get_manifest(repo, source_tag)
    if manifest is None:
        raise RegistryError(f"{HOST}/{repo}:{source_tag} does not exist")
    if digest_of(repo, target_tag) != manifest.digest:
        put_manifest(repo, target_tag, manifest)
    return manifest
