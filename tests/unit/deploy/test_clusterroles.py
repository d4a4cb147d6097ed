"""crds/clusterroles.yaml: kto-edit and kto-view aggregated to the built-in namespace roles, and enough for a
namespace admin to create the operator's Role (the API server grants nobody rights they lack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def roles() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all((REPO / "crds/clusterroles.yaml").read_text())}


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_aggregated_to_the_built_in_roles() -> None:
    found = roles()
    assert set(found) == {"kto-edit", "kto-view"}
    labels = {name: {k for k, v in role["metadata"]["labels"].items() if v == "true"} for name, role in found.items()}
    assert labels["kto-edit"] == {"rbac.authorization.k8s.io/aggregate-to-admin",
                                  "rbac.authorization.k8s.io/aggregate-to-edit"}
    assert labels["kto-view"] == {"rbac.authorization.k8s.io/aggregate-to-view"}
    assert all(d["kind"] == "ClusterRole" for d in found.values())


def test_edit_holds_every_right_the_operators_role_grants_on_our_resources() -> None:
    role = yaml.safe_load((REPO / "manifests/operator/role.yaml").read_text())
    ours = {p for p in grants(role) if p[0] == "kto.dev"}
    assert ours and not ours - grants(roles()["kto-edit"]), sorted(ours - grants(roles()["kto-edit"]))


def test_edit_can_run_and_cancel_and_view_only_reads() -> None:
    edit, view = grants(roles()["kto-edit"]), grants(roles()["kto-view"])
    for plural in ("trainingruns", "powerschedules"):
        assert {("kto.dev", plural, v) for v in ("create", "patch", "delete", "list", "watch")} <= edit
        assert {("kto.dev", plural, v) for v in ("get", "list", "watch")} <= view
    assert not {v for _, _, v in view} & WRITE_VERBS
    assert {g for g, _, _ in edit | view} == {"kto.dev"}
