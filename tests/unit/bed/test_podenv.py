import base64

import pytest
from kto_bed.images import ImageMap, container_argv
from kto_bed.podenv import EnvError, container_env, expand
from kto_bed.quantity import parse_quantity
from kto_bed.volumes import Mounts

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
       "spec": {"nodeName": "n1", "serviceAccountName": "sa"}}


def lookup_from(objects):
    return lambda kind, ns, name: objects.get((kind, ns, name))


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_env_resolves_secret_configmap_field_and_expansion():
    objects = {("Secret", "ns", "s3"): {"data": {"key": b64("sekret")}},
               ("ConfigMap", "ns", "cfg"): {"data": {"mode": "fast"}}}
    container = {"name": "c", "resources": {"limits": {"memory": "4000Mi"}}, "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "key"}}},
        {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
    ]}
    env = container_env(POD, container, lookup_from(objects))
    assert env == {"A": "1", "B": "1-$(MISSING)-$(A)", "S": "sekret", "M": "fast", "P": "p", "L": "x",
                   "MEM": "4000"}


@pytest.mark.parametrize("ref", [{"name": "absent", "key": "k"}, {"name": "s3", "key": "absent"}])
def test_missing_secret_or_key_is_an_error(ref):
    objects = {("Secret", "ns", "s3"): {"data": {"key": b64("v")}}}
    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": ref}}]}
    with pytest.raises(EnvError):
        container_env(POD, container, lookup_from(objects))


def test_optional_missing_secret_is_skipped():
    container = {"name": "c", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}}]}
    assert container_env(POD, container, lookup_from({})) == {}


def test_env_from_with_prefix():
    objects = {("ConfigMap", "ns", "cfg"): {"data": {"a": "1"}}}
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}]}
    assert container_env(POD, container, lookup_from(objects)) == {"P_a": "1"}


def test_expand_escapes():
    assert expand("$$(X) $(X)", {"X": "v"}) == "$(X) v"


@pytest.mark.parametrize(("text", "value"), [("1300m", 1.3), ("4000Mi", 4000 * 2**20), ("2Gi", 2 * 2**30),
                                             ("1k", 1000), ("3", 3), ("1e3", 1000)])
def test_quantities(text, value):
    assert float(parse_quantity(text)) == pytest.approx(value)


def test_bad_quantity():
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_image_map_and_argv_rules():
    images = ImageMap.load()
    py = images.resolve("python:3.11")
    assert py is not None
    assert images.resolve("python") is None or images.resolve("python:latest") is not None
    assert images.resolve("registry.invalid/nope:1") is None
    trainer = images.resolve("quay.io/someone/kto-trainer:0.1")
    assert trainer is not None and trainer.entrypoint == ("python", "-m", "kto_trainer")
    assert container_argv({"args": ["--epochs=1"]}, trainer) == ["python", "-m", "kto_trainer", "--epochs=1"]
    assert container_argv({"command": ["echo"], "args": ["hi"]}, trainer) == ["echo", "hi"]
    assert container_argv({}, py) == ["python3"]


def test_mount_rewrite_only_at_path_boundaries():
    mounts = Mounts((("/data", "/host/vol"),))
    assert mounts.rewrite("/data/x") == "/host/vol/x"
    assert mounts.rewrite("--dir=/data") == "--dir=/host/vol"
    assert mounts.rewrite("/database") == "/database"
    assert mounts.rewrite("s3:/data") == "s3:/host/vol"


def test_mount_rewrite_never_rewrites_a_replaced_path():
    # /tmp is mounted too, and the first mount's host folder itself lives under /tmp.
    mounts = Mounts((("/scripts", "/tmp/bed/vol/scripts"), ("/tmp", "/tmp/bed/vol/tmp")))
    assert mounts.rewrite("/scripts/prepare.py") == "/tmp/bed/vol/scripts/prepare.py"
    assert mounts.rewrite("/tmp/x") == "/tmp/bed/vol/tmp/x"
    assert mounts.rewrite("--a=/scripts,/tmp") == "--a=/tmp/bed/vol/scripts,/tmp/bed/vol/tmp"
