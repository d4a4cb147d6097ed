"""Pod volumes as host folders, and the mountPath → folder rewrite that stands in for bind mounts.

There is no mount namespace here: a container sees the host filesystem. A volume is materialised as a
host folder and every occurrence of its mountPath at the start of a path-like token in the command,
args, env values and workingDir is rewritten to that folder.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .podenv import Lookup

TokenFn = Callable[[str, str, dict[str, Any]], str]  # (namespace, serviceAccount, projection) -> JWT


class VolumeError(Exception):
    """A volume's source is missing: the kubelet reports the pod as ContainerCreating with an event."""


@dataclass(frozen=True)
class Mounts:
    """mountPath → host folder (or file for subPath), longest mountPath first."""

    table: tuple[tuple[str, str], ...]

    def rewrite(self, text: str) -> str:
        """One pass over all mounts (longest first), so a replaced path is never rewritten again."""
        if not self.table:
            return text
        hosts = {mount.rstrip("/") or "/": host for mount, host in self.table}
        alternatives = "|".join(re.escape(m) for m in sorted(hosts, key=len, reverse=True))
        pattern = re.compile(r"(?:^|(?<=[=:,]))(" + alternatives + r")(?=/|$|[,:])")
        return pattern.sub(lambda m: hosts[m.group(1)], text)


def _write_items(target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    chosen = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    for key, rel in chosen.items():
        if key not in data:
            continue
        f = target / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data[key])


def _object_data(kind: str, obj: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _source(lookup: Lookup, ns: str, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
    obj = lookup(kind, ns, name)
    if obj is None:
        if optional:
            return None
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    return _object_data(kind, obj)


def materialise(pod: dict[str, Any], pod_dir: Path, pvc_root: Path, lookup: Lookup,
                token: TokenFn) -> dict[str, Path]:
    """Create a host folder for every volume of the pod; return volume name → folder."""
    ns = pod["metadata"]["namespace"]
    sa = pod["spec"].get("serviceAccountName", "default")
    result: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        target = pod_dir / "volumes" / name
        if "emptyDir" in vol:
            target.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in vol:
            target = Path(vol["hostPath"]["path"])
        elif "persistentVolumeClaim" in vol:
            target = pvc_root / ns / vol["persistentVolumeClaim"]["claimName"]
            target.mkdir(parents=True, exist_ok=True)
        elif "secret" in vol:
            src = vol["secret"]
            data = _source(lookup, ns, "Secret", src["secretName"], bool(src.get("optional")))
            _write_items(target, data or {}, src.get("items"))
        elif "configMap" in vol:
            src = vol["configMap"]
            data = _source(lookup, ns, "ConfigMap", src["name"], bool(src.get("optional")))
            _write_items(target, data or {}, src.get("items"))
        elif "projected" in vol:
            target.mkdir(parents=True, exist_ok=True)
            for s in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in s:
                    proj = s["serviceAccountToken"]
                    (target / proj["path"]).write_text(token(ns, sa, proj))
                elif "configMap" in s:
                    c = s["configMap"]
                    _write_items(target, _source(lookup, ns, "ConfigMap", c["name"],
                                                 bool(c.get("optional"))) or {}, c.get("items"))
                elif "secret" in s:
                    c = s["secret"]
                    _write_items(target, _source(lookup, ns, "Secret", c["name"],
                                                 bool(c.get("optional"))) or {}, c.get("items"))
                elif "downwardAPI" in s:
                    _downward(pod, target, s["downwardAPI"].get("items") or [])
        elif "downwardAPI" in vol:
            target.mkdir(parents=True, exist_ok=True)
            _downward(pod, target, vol["downwardAPI"].get("items") or [])
        else:
            target.mkdir(parents=True, exist_ok=True)
        result[name] = target
    return result


def _downward(pod: dict[str, Any], target: Path, items: list[dict[str, Any]]) -> None:
    from .podenv import _field_ref

    for item in items:
        if "fieldRef" in item:
            (target / item["path"]).write_text(_field_ref(pod, item["fieldRef"]["fieldPath"]))


def mounts_for(container: dict[str, Any], volumes: dict[str, Path]) -> Mounts:
    table = []
    for m in container.get("volumeMounts") or []:
        host = volumes.get(m["name"])
        if host is None:
            continue
        if m.get("subPath"):
            host = host / m["subPath"]
            if not host.suffix:
                host.mkdir(parents=True, exist_ok=True)
        table.append((m["mountPath"], str(host)))
    table.sort(key=lambda t: len(t[0]), reverse=True)
    return Mounts(tuple(table))
