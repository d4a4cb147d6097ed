"""The bed's image builder (kto_bed.imagebuild): which files decide an image's cache key, the catalog's
references against the manifests, and the registry's configuration. Nothing is built here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from kto_bed import registry
from kto_bed.imagebuild import Image, catalog, context_key, copy_sources

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("ref", "expected"), [
    ("docker.io/library/python:3.11-slim", ("library/python", "3.11-slim")),
    ("python:3.11", ("library/python", "3.11")),
    ("kto-operator:0.1.0", ("library/kto-operator", "0.1.0")),
    ("quay.io/sclorg/mysql-80-c9s:c9s", ("sclorg/mysql-80-c9s", "c9s")),
    ("registry.k8s.io/coredns/coredns:v1.15.0", ("coredns/coredns", "v1.15.0")),
    ("127.0.0.1:5000/library/kto-trainer:0.1.0", ("library/kto-trainer", "0.1.0")),
])
def test_split_ref_gives_the_upstream_repository_path(ref: str, expected: tuple[str, str]) -> None:
    assert registry.split_ref(ref) == expected


def test_copy_sources_of_our_dockerfiles() -> None:
    assert copy_sources(REPO / "Dockerfile.trainer") == [
        "trainer/pyproject.toml", "trainer/kto_trainer", "trainer/MLproject", "trainer/python_env.yaml"]
    assert copy_sources(REPO / "Dockerfile.mlflow") == []


def test_copy_sources_skips_other_stages_and_reads_json_form(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM x\n# COPY no /\nCOPY --chown=1:0 a \\\n  b /d/\n'
                          'COPY --from=build /x /y\nADD ["c", "/e"]\n')
    assert copy_sources(dockerfile) == ["a", "b", "c"]


def _image(tmp_path: Path) -> Image:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/mod.py").write_text("x = 1\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY pkg /src/pkg\nCOPY gen /gen\n")
    return Image("t", ("t:1",), tmp_path / "Dockerfile", context=tmp_path, bases=("python",), generated=("gen",))


def test_context_key_follows_copied_files_and_bases_only(tmp_path: Path) -> None:
    image = _image(tmp_path)
    key = context_key(image, {"python": "sha256:a"})
    (tmp_path / "pkg/__pycache__").mkdir()
    (tmp_path / "pkg/__pycache__/mod.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "unrelated.txt").write_text("not copied")
    assert context_key(image, {"python": "sha256:a"}) == key
    assert context_key(image, {"python": "sha256:b"}) != key
    assert context_key(dataclasses.replace(image, recipe=lambda: ["v2"]), {"python": "sha256:a"}) != key
    (tmp_path / "pkg/mod.py").write_text("x = 2\n")
    assert context_key(image, {"python": "sha256:a"}) != key


def test_catalog_serves_the_tags_the_manifests_use() -> None:
    refs = {ref for image in catalog() for ref in image.refs}
    platform = yaml.safe_load((REPO / "manifests/platform/base/kustomization.yaml").read_text())
    for entry in platform["images"]:
        name = entry.get("newName", f"docker.io/library/{entry['name']}")
        assert f"{name}:{entry['newTag']}" in refs
    for folder, name in (("operator", "kto-operator"), ("examples", "kto-trainer")):
        kustomization = yaml.safe_load((REPO / f"manifests/{folder}/kustomization.yaml").read_text())
        tag = next(e["newTag"] for e in kustomization["images"] if e["name"] == name)
        assert f"docker.io/library/{name}:{tag}" in refs


def test_catalog_builds_bases_first_in_one_repository_each() -> None:
    seen: set[str] = set()
    for image in catalog():
        assert set(image.bases) <= seen, image.name
        assert len({registry.split_ref(r)[0] for r in image.refs}) == 1
        assert image.dockerfile.exists()
        seen.add(image.name)


def test_registry_listens_on_loopback_only() -> None:
    config = yaml.safe_load(registry.render_config(Path("/cache/registry")))
    assert config["http"]["addr"] == "127.0.0.1:5000"
    assert "debug" not in config["http"] and "debug" not in config
    assert config["storage"]["filesystem"]["rootdirectory"] == "/cache/registry"
