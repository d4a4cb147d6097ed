"""The shipped Role (manifests/operator/role.yaml) against the operator's source: every Kubernetes API call
the code makes (`kto_operator.api` calls on a resource constant) and every watch/patch/event kopf makes for its
handlers is granted, and nothing else is. Catches a new API call in the operator before a 403 does at run time;
tests/integration/test_deployables_rbac.py then proves the flows on a real apiserver."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
SOURCE = REPO / "operator/kto_operator"
CUSTOM = ("trainingruns", "powerschedules")  # every custom-object call is counted for both (over-approximation)
# kube.VERB(RESOURCE, ...) or kube.VERB(RESOURCES[kind], ...) on the Api (`kube`, `self.kube`, `ctx.kube`, `api`):
# RESOURCE a constant made by create_namespaced_resource / create_global_resource, or a dict of such constants.
REQUEST = re.compile(r"\b(?:kube|api)\.(get|list|create|patch|delete|create_owned|delete_owned)\("
                     r"\s*(?:\w+\.)?([A-Z][A-Z_]*)(\[\w+\])?([^\n]*)")
RESOURCE = re.compile(r'create_(?:namespaced|global)_resource\(\s*("[^"]*"|[\w.]+),\s*("[^"]*"|[\w.]+),'
                      r'\s*("[^"]*"|[\w.]+),\s*("[^"]*"|[\w.]+)')
VERBS = {"get": {"get"}, "list": {"list"}, "create": {"create"}, "patch": {"patch"}, "delete": {"delete"},
         # create, then on a 409 read whose it is; read whose it is, then delete
         "create_owned": {"create", "get"}, "delete_owned": {"get", "delete"}}
KOPF = re.compile(r"@kopf\.(on\.[a-z_]+|timer|daemon|index)\(([^)]*)\)")
KOPF_EVENTS = re.compile(r"kopf\.(event|info|warn|exception)\(")

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)


# `python -m kto_operator.power` (Sandbox mode) runs in its own pods under manifests/sandbox/power's Role, never
# in the operator's process; tests/unit/operator/test_power_cli.py checks its calls against that Role.
# The web console's calls are made with the signed-in user's token (`Api.for_token`), never the operator's: the
# user's RBAC grants them, not this Role.
ONE_SHOT = {"power/cli.py", "console/userapi.py"}


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted(SOURCE.rglob("*.py"))
                     if p.relative_to(SOURCE).as_posix() not in ONE_SHOT)


def _plural(literal: str, text: str) -> str:
    """A Resource argument: a string literal, or a constant (PLURAL = "...") of the same sources."""
    if literal.startswith('"'):
        return literal.strip('"')
    m = re.search(rf'^{re.escape(literal.split(".")[-1])} = "([^"]*)"', text, re.M)
    assert m, f"cannot resolve {literal}: extend this test"
    return m.group(1)


def _resources(name: str, indexed: bool, text: str) -> list[tuple[str, str]]:
    """(group, plural) of constant `name`: a create_*_resource(...), or (indexed) every resource of a dict."""
    m = re.search(rf"^{name}(?:: [^=]+)? = (create_\w+_resource\([^)]*\)|\{{[^}}]*\}})", text, re.M | re.S)
    assert m and (indexed or m.group(1).startswith("create_")), f"unrecognised resource {name}: extend this test"
    if indexed:
        return [r for value in re.findall(r":\s*(?:\w+\.)?([A-Z][A-Z_]*)", m.group(1))
                for r in _resources(value, False, text)]
    found = [(_plural(g, text), _plural(p, text)) for g, _v, _k, p in RESOURCE.findall(m.group(1))]
    return [("kto.dev", r) for r in CUSTOM] if any(g == "kto.dev" for g, _ in found) else found


# Granted to every authenticated user by the default ClusterRole system:basic-user: never in our Role.
EVERYONE = {("authentication.k8s.io", "selfsubjectreviews", "create")}


def client_calls(text: str) -> set[Perm]:
    perms: set[Perm] = set()
    for method, name, index, rest in set(REQUEST.findall(text)):
        status = "/status" if "status=True" in rest else ""
        perms |= {(group, plural + status, verb) for group, plural in _resources(name, bool(index), text)
                  for verb in VERBS[method]}
    return perms - EVERYONE


def _kopf_resource(args: str) -> tuple[str, str] | None:
    if "*TR" in args:
        return ("kto.dev", "trainingruns")
    if "*POWER" in args:
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
        if kind not in ("on.event", "index"):  # change handlers, timers, daemons: finalizers and progress annotations
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
    sample = 'SECRETS = create_namespaced_resource("", "v1", "Secret", "secrets")\nx = await self.kube.get(SECRETS, n)'
    assert client_calls(sample) == {("", "secrets", "get")}
