"""Image → local program mapping for the node agent."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .paths import PACKAGE_DIR, minio_bin, venv_bin

DEFAULT_MAP = PACKAGE_DIR / "images.default.yaml"


@dataclass(frozen=True)
class ImageSpec:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageMap:
    rules: tuple[tuple[tuple[str, ...], ImageSpec], ...]

    @classmethod
    def load(cls, path: Path | None = None) -> ImageMap:
        raw = yaml.safe_load((path or DEFAULT_MAP).read_text()) or {}
        subst = {"venv_bin": str(venv_bin()), "minio_dir": str(minio_bin().parent)}

        def fill(values: list[str] | None) -> tuple[str, ...]:
            return tuple(v.format(**subst) for v in values or [])

        rules = []
        for rule in raw.get("images", []):
            match = rule["match"]
            patterns = (match,) if isinstance(match, str) else tuple(match)
            spec = ImageSpec(
                entrypoint=fill(rule.get("entrypoint")), cmd=fill(rule.get("cmd")),
                path=fill(rule.get("path")),
                env={k: str(v).format(**subst) for k, v in (rule.get("env") or {}).items()},
            )
            rules.append((patterns, spec))
        return cls(tuple(rules))

    def resolve(self, image: str) -> ImageSpec | None:
        ref = image if ":" in image.rsplit("/", 1)[-1] or "@" in image else f"{image}:latest"
        for patterns, spec in self.rules:
            if any(fnmatch.fnmatchcase(ref, p) for p in patterns):
                return spec
        return None


class LiveImageMap:
    """The image map, re-read when its file changes: edit images.yaml without restarting the agent."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or DEFAULT_MAP
        self._mtime = -1.0
        self._map = ImageMap(())

    def resolve(self, image: str) -> ImageSpec | None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = self._mtime
        if mtime != self._mtime:
            self._map = ImageMap.load(self.path)
            self._mtime = mtime
        return self._map.resolve(image)


def container_argv(container: dict, spec: ImageSpec) -> list[str]:
    """Docker/kubelet rule: command replaces ENTRYPOINT (and drops CMD); args replace CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*spec.entrypoint, *(args if args is not None else spec.cmd)]
