"""The shipped Role (manifests/operator/role.yaml) against the operator's source: every Kubernetes API call
the code makes (kubernetes client methods) and every watch/patch/event kopf makes for its handlers is
granted, and nothing else is. Catches a new API call in the operator before a 403 does at run time;
tests/integration/test_deployables_rbac.py then proves the flows on a real apiserver."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
SOURCE = REPO / "operator/kto_operator"
CUSTOM = ("trainingruns", "powerschedules")  # every custom-object call is counted for both (over-approximation)
RESOURCES = {"deployment": ("apps", "deployments"), "stateful_set": ("apps", "statefulsets"),
             "cron_job": ("batch", "cronjobs"), "job": ("batch", "jobs"), "pod": ("", "pods"),
             "event": ("", "events"), "secret": ("", "secrets"), "config_map": ("", "configmaps"),
             "service_account": ("", "serviceaccounts"), "namespace": ("", "namespaces")}
VERBS = {"read": "get", "get": "get", "list": "list", "create": "create", "delete": "delete", "patch": "patch",
         "replace": "update"}
CLIENT_CALL = re.compile(r"\.(?:core|batch|apps|custom|events|rbac)\.([a-z_]+)")
METHOD = re.compile(r"^(read|get|list|create|delete|patch|replace)_namespaced_([a-z_]+?)(_status)?$")
KOPF = re.compile(r"@kopf\.(on\.[a-z_]+|timer|daemon)\(([^)]*)\)")
KOPF_EVENTS = re.compile(r"kopf\.(event|info|warn|exception)\(")

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted(SOURCE.rglob("*.py")))


def client_calls(text: str) -> set[Perm]:
    perms: set[Perm] = set()
    for name in set(CLIENT_CALL.findall(text)):
        m = METHOD.match(name)
        assert m, f"unrecognised API client method {name}: extend this test's table"
        verb, kind, status = VERBS[m.group(1)], m.group(2), m.group(3) or ""
        targets = [("kto.dev", r) for r in CUSTOM] if kind == "custom_object" else [RESOURCES[kind]]
        perms |= {(group, resource + ("/status" if status else ""), verb) for group, resource in targets}
    return perms


def _kopf_resource(args: str) -> tuple[str, str] | None:
    if "*TR" in args or "RUNS_PLURAL" in args:
        return ("kto.dev", "trainingruns")
    if "PLURAL" in args:
        return ("kto.dev", "powerschedules")
    quoted = re.findall(r'"([^"]*)"', args)
    if len(quoted) >= 2:  # (group, version, plural) or (version, plural)
        group = quoted[0] if len(quoted) >= 3 else ""
        return (group, quoted[2] if len(quoted) >= 3 else quoted[1])
    return None  # startup/cleanup handlers: no resource


def kopf_needs(text: str) -> set[Perm]:
    perms: set[Perm] = set()
    for kind, args in KOPF.findall(text):
        target = _kopf_resource(args)
        if target is None:
            continue
        group, resource = target
        perms |= {(group, resource, "list"), (group, resource, "watch")}
        if kind != "on.event":  # change handlers, timers, daemons: finalizers and progress annotations
            perms.add((group, resource, "patch"))
    if KOPF_EVENTS.search(text):
        perms.add(("", "events", "create"))
    # A child with blockOwnerDeletion on its TrainingRun owner: OwnerReferencesPermissionEnforcement
    # (on in OpenShift) requires `update` on the owner's finalizers subresource.
    if '"blockOwnerDeletion": True' in text:
        perms.add(("kto.dev", "trainingruns/finalizers", "update"))
    return perms


def role_grants() -> set[Perm]:
    role = yaml.safe_load((REPO / "manifests/operator/role.yaml").read_text())
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_role_grants_every_call_the_operator_makes() -> None:
    needed = client_calls(_sources()) | kopf_needs(_sources())
    missing = sorted(needed - role_grants())
    assert not missing, f"the operator calls these without a grant (403 at run time): {missing}"


def test_role_grants_nothing_the_operator_does_not_use() -> None:
    needed = client_calls(_sources()) | kopf_needs(_sources())
    extra = sorted(role_grants() - needed)
    assert not extra, f"granted but never used: {extra}"


def test_the_scan_sees_what_it_should() -> None:
    """The scanner itself: known calls of the operator are found (guards against a silently empty scan)."""
    needed = client_calls(_sources()) | kopf_needs(_sources())
    assert {("batch", "jobs", "create"), ("kto.dev", "trainingruns/status", "patch"), ("", "pods", "watch"),
            ("apps", "deployments", "patch"), ("", "events", "create")} <= needed
    assert client_calls("x = self.core.read_namespaced_secret(n, ns)") == {("", "secrets", "get")}
