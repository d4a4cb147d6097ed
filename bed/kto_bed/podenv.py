"""Container environment as the kubelet builds it: env, envFrom, valueFrom refs and $(VAR) expansion."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

# (kind, namespace, name) -> object dict or None when it does not exist
Lookup = Callable[[str, str, str], dict[str, Any] | None]


class EnvError(Exception):
    """A reference could not be resolved: the kubelet reports CreateContainerConfigError."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known variables are replaced, unknown left as is, $$ escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(sub, value)


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def _resource_ref(container: dict[str, Any], ref: dict[str, Any]) -> str:
    from .quantity import parse_quantity

    kind, _, name = ref["resource"].partition(".")
    value = (container.get("resources", {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    divisor = parse_quantity(str(ref.get("divisor", "1")))
    q = parse_quantity(str(value)) / divisor
    return str(int(-(-q // 1)))  # kubelet rounds up


def _key_ref(lookup: Lookup, ns: str, kind: str, ref: dict[str, Any]) -> str | None:
    obj = lookup(kind, ns, ref["name"])
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise EnvError(f'{kind.lower()} "{ref["name"]}" not found')
    key = ref["key"]
    if kind == "Secret":
        data = obj.get("data") or {}
        if key in data:
            return base64.b64decode(data[key]).decode()
    else:
        data = obj.get("data") or {}
        if key in data:
            return str(data[key])
    if optional:
        return None
    raise EnvError(f'couldn\'t find key {key} in {kind} {ns}/{ref["name"]}')


def container_env(pod: dict[str, Any], container: dict[str, Any], lookup: Lookup) -> dict[str, str]:
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key not in source:
                continue
            ref = source[key]
            obj = lookup(kind, ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{ref["name"]}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode() if kind == "Secret" else str(v)
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        src = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in src:
            value = _key_ref(lookup, ns, "Secret", src["secretKeyRef"])
        elif "configMapKeyRef" in src:
            value = _key_ref(lookup, ns, "ConfigMap", src["configMapKeyRef"])
        elif "fieldRef" in src:
            value = _field_ref(pod, src["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in src:
            value = _resource_ref(container, src["resourceFieldRef"])
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(src)}")
        if value is not None:
            env[name] = value
    return env
