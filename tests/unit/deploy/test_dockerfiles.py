"""Static checks of the images' Dockerfiles and build context (no Docker engine here): parsed with
dockerfile-parse, then held to the deployables' rules: pinned slim Python base, numeric non-root USER in
group 0 with a group-0-writable HOME, no secret-looking ARG/ENV, no world-writable chmod, the operator
image without TensorFlow, dependencies only from the packages' own pyproject, every COPY source present
and not ignored by .dockerignore, entrypoints equal to the bed's image mapping."""

from __future__ import annotations

import io
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[3]
IMAGES = {
    "Dockerfile.operator": {"project": "operator", "entrypoint": ["python", "-m", "kto_operator"]},
    "Dockerfile.trainer": {"project": "trainer", "entrypoint": ["python", "-m", "kto_trainer"]},
    "Dockerfile.mlflow": {"project": None, "entrypoint": ["mlflow"]},
}
SECRET_WORDS = re.compile(r"(PASS(WORD|WD)?|SECRET|TOKEN|CREDENTIAL|PRIVATE|ACCESS_KEY|API_?KEY|AWS_)", re.I)
MLFLOW_PIN = re.compile(r"^mlflow(?:-skinny)?(?:\[[^\]]*\])?==([0-9][0-9.]*)$")


@dataclass(frozen=True)
class Instr:
    name: str
    value: str


def parser_of(name: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((REPO / name).read_bytes()))


def parse(name: str) -> list[Instr]:
    return [Instr(i["instruction"], i["value"]) for i in parser_of(name).structure if i["instruction"] != "COMMENT"]


def exec_form(value: str) -> list[str]:
    import json

    return list(json.loads(value))


def pip_installs(instrs: list[Instr]) -> list[str]:
    """Every requirement argument of every `pip install` in RUN instructions."""
    found: list[str] = []
    for ins in instrs:
        if ins.name != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", ins.value):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if (words[i] == "pip" and words[i + 1] == "install") or words[i:i + 3] == ["-m", "pip", "install"]:
                    start = i + 2 if words[i] == "pip" else i + 3
                    found += [w for w in words[start:] if not w.startswith("-")]
                    break
    return found


def project_deps(project: str) -> list[str]:
    data = tomllib.loads((REPO / project / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


# .dockerignore: Docker's rules (Go filepath.Match per pattern, `**` for any depth, `!` re-includes,
# the last matching line wins, a match on a parent folder covers what is inside).
def _ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _match(pattern: str, path: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    regex = regex.replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None


def ignored(path: str) -> bool:
    parts = path.strip("/").split("/")
    result = False
    for negate, pattern in _ignore_rules():
        if any(_match(pattern, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_base_image_is_pinned_slim_python(name: str) -> None:
    froms = [i.value for i in parse(name) if i.name == "FROM"]
    assert froms == ["python:3.11-slim"], froms


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_user_is_numeric_non_root_in_group_0(name: str) -> None:
    users = [i.value for i in parse(name) if i.name == "USER"]
    assert users, f"{name}: no USER (would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]!r} must be a numeric non-root UID"
    assert gid == "0", f"{name}: USER {users[-1]!r}: group 0, as OpenShift's arbitrary UIDs have"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_home_is_group_0_writable(name: str) -> None:
    parser = parser_of(name)
    home = parser.envs.get("HOME")
    assert home and home != "/", f"{name}: set HOME (an arbitrary UID has no passwd entry)"
    runs = " && ".join(i.value for i in parse(name) if i.name == "RUN")
    assert re.search(rf"chgrp -R 0 {re.escape(home)}(\s|$)", runs), f"{name}: {home} not group 0"
    assert re.search(rf"chmod -R g=u {re.escape(home)}(\s|$)", runs), f"{name}: {home} not group-writable"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_secret_looking_arg_or_env(name: str) -> None:
    parser = parser_of(name)
    names = list(parser.envs) + list(parser.args)
    assert not [n for n in names if SECRET_WORDS.search(n)], f"{name}: credentials never go into an image"
    for ins in parse(name):
        if ins.name in ("ARG", "ENV"):
            assert not SECRET_WORDS.search(ins.value), f"{name}: {ins.name} {ins.value}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_world_writable_chmod(name: str) -> None:
    for ins in parse(name):
        if ins.name == "RUN":
            assert not re.search(r"chmod\s+(-\w+\s+)*(0?777|a\+w|o\+w|\S*o=\S*w)", ins.value), ins.value


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint(name: str) -> None:
    entry = [i.value for i in parse(name) if i.name == "ENTRYPOINT"]
    assert entry and exec_form(entry[-1]) == IMAGES[name]["entrypoint"]


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.trainer"])
def test_installs_exactly_its_own_project(name: str) -> None:
    """Dependencies come from the package's pyproject (pip resolves them from the copied project): no
    other package is pip-installed beside it, and what is copied is that project's pyproject + package."""
    project = IMAGES[name]["project"]
    instrs = parse(name)
    assert pip_installs(instrs) == [f"/src/{project}"]
    copies = [i.value.split() for i in instrs if i.name == "COPY"]
    assert [f"{project}/pyproject.toml", f"/src/{project}/pyproject.toml"] in copies
    assert [f"{project}/kto_{project}", f"/src/{project}/kto_{project}"] in copies


def test_operator_image_has_no_tensorflow() -> None:
    text = " ".join(i.value for i in parse("Dockerfile.operator")).lower()
    assert "tensorflow" not in text and "keras" not in text and "trainer" not in text
    deps = " ".join(project_deps("operator")).lower()
    assert "tensorflow" not in deps and "keras" not in deps


def test_trainer_image_has_tensorflow_cpu_and_mlproject() -> None:
    assert any(d.startswith("tensorflow-cpu") for d in project_deps("trainer"))
    copied = [s for i in parse("Dockerfile.trainer") if i.name == "COPY" for s in i.value.split()[:-1]]
    assert "trainer/MLproject" in copied


def test_mlflow_image_pins_the_projects_mlflow_version() -> None:
    wanted = {m.group(1) for d in project_deps("operator") + project_deps("trainer") if (m := MLFLOW_PIN.match(d))}
    assert len(wanted) == 1, f"operator and trainer pin different MLflow versions: {wanted}"
    installed = pip_installs(parse("Dockerfile.mlflow"))
    pins = {m.group(1) for p in installed if (m := MLFLOW_PIN.match(p))}
    assert pins == wanted
    names = {re.split(r"[<>=\[]", p)[0].lower() for p in installed}
    assert {"pymysql", "boto3", "cryptography"} <= names  # MySQL backend store, MinIO artifacts


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_copy_sources_exist_and_are_in_the_build_context(name: str) -> None:
    for ins in parse(name):
        if ins.name not in ("COPY", "ADD"):
            continue
        words = [w for w in ins.value.split() if not w.startswith("--")]
        for src in words[:-1]:
            assert (REPO / src).exists(), f"{name}: COPY source {src} missing"
            assert not ignored(src), f"{name}: COPY source {src} is excluded by .dockerignore"
            for file in (REPO / src).rglob("*.py") if (REPO / src).is_dir() else []:
                rel = file.relative_to(REPO).as_posix()
                if "__pycache__" not in rel:
                    assert not ignored(rel), f"{rel} excluded from the build context"


@pytest.mark.parametrize("path", [
    ".bed/kubeconfig", ".bed/secrets.json", ".venv/bin/python", "manifests/platform/secrets/secrets.env",
    "tests/conftest.py", "operator/kto_operator/__pycache__/main.cpython-311.pyc", ".git/config",
    "trainer/kto_trainer.egg-info/PKG-INFO", "bed/kto_bed/node.py",
])
def test_dockerignore_keeps_local_state_and_secrets_out(path: str) -> None:
    assert ignored(path)


def test_dockerignore_matcher_follows_last_match_and_parent_rules() -> None:
    assert not ignored("operator/kto_operator/main.py")
    assert not ignored("trainer/MLproject")
    assert ignored("operator/README.md")


COURSE_STYLE = """FROM tensorflow/tensorflow:latest
ARG AWS_SECRET_ACCESS_KEY
ENV MLFLOW_S3_ENDPOINT_URL=http://minio:9000 AWS_ACCESS_KEY_ID=minio AWS_SECRET_ACCESS_KEY=minio123
RUN pip install mlflow boto3 && chmod -R 777 /app
USER root
"""


def test_the_checks_catch_a_course_style_dockerfile() -> None:
    """Negative control: the course's Dockerfile (credentials baked in, root, chmod 777) fails them all."""
    parser = DockerfileParser(fileobj=io.BytesIO(COURSE_STYLE.encode()))
    names = list(parser.envs) + list(parser.args)
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} <= {n for n in names if SECRET_WORDS.search(n)}
    runs = [i["value"] for i in parser.structure if i["instruction"] == "RUN"]
    assert re.search(r"chmod\s+(-\w+\s+)*(0?777|a\+w|o\+w|\S*o=\S*w)", runs[0])
    user = [i["value"] for i in parser.structure if i["instruction"] == "USER"][-1]
    assert not user.partition(":")[0].isdigit()
    instrs = [Instr(i["instruction"], i["value"]) for i in parser.structure]
    assert pip_installs(instrs) == ["mlflow", "boto3"]
