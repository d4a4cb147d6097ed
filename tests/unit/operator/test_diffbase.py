"""kopf's diff base in the status, carried by the start handler's own write (kto_operator.diffbase)."""

from __future__ import annotations

from typing import Any

import kopf
from kto_operator import diffbase, naming

ESSENCE: Any = {"spec": {"image": "trainer:1", "experiment": "e"}}


def body(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun",
                      "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "annotations": annotations or {}},
                      "spec": ESSENCE["spec"], "status": status or {}})


def test_a_store_the_start_handler_already_wrote_sends_nothing() -> None:
    written = {"u1": diffbase.encode(ESSENCE)}
    storage = diffbase.StatusDiffBase(written)
    patch = kopf.Patch()
    storage.store(body=body(), patch=patch, essence=ESSENCE)
    assert not patch


def test_an_event_from_before_the_handlers_write_is_not_a_new_creation() -> None:
    written = {"u1": diffbase.encode(ESSENCE)}
    storage = diffbase.StatusDiffBase(written)
    assert storage.fetch(body=body(status={"phase": "Pending", "reason": "CreatingRun"})) == ESSENCE
    assert written  # kept until an event shows the status it was written with
    assert storage.fetch(body=body(status=diffbase.status_field(diffbase.encode(ESSENCE)))) == ESSENCE
    assert not written


def test_any_other_store_is_kopfs_own_status_patch() -> None:
    written = {"u1": diffbase.encode({"spec": {"image": "trainer:0"}})}  # written for another essence
    storage = diffbase.StatusDiffBase(written)
    patch = kopf.Patch()
    storage.store(body=body(), patch=patch, essence=ESSENCE)
    assert patch == {"status": diffbase.status_field(diffbase.encode(ESSENCE))}
    patch = kopf.Patch()
    storage.store(body=body(), patch=patch, essence=ESSENCE)  # nothing written by the handler
    assert patch == {"status": diffbase.status_field(diffbase.encode(ESSENCE))}


def test_fetch_reads_the_status_then_an_older_operators_annotation() -> None:
    storage = diffbase.StatusDiffBase({})
    assert storage.fetch(body=body()) is None  # never handled: kopf's creation
    assert storage.fetch(body=body(status=diffbase.status_field(diffbase.encode(ESSENCE)))) == ESSENCE
    legacy = {f"{naming.KOPF_PREFIX}/last-handled-configuration": diffbase.encode(ESSENCE)}
    assert storage.fetch(body=body(annotations=legacy)) == ESSENCE


def test_the_essence_leaves_the_operators_own_annotations_out() -> None:
    storage = diffbase.StatusDiffBase({})
    wake = body(annotations={f"{naming.KOPF_PREFIX}/wake-requested-at": "2026-12-02T03:00:00Z"})
    assert storage.build(body=wake) == storage.build(body=body()) == ESSENCE  # no change for kopf, no write
    team = body(annotations={f"{naming.KOPF_PREFIX}/x": "1", "team": "a"})
    assert storage.build(body=team) == {**ESSENCE, "metadata": {"annotations": {"team": "a"}}}


def test_carried_reads_what_the_api_server_stored() -> None:
    encoded = diffbase.encode(ESSENCE)
    assert diffbase.carried({"status": diffbase.status_field(encoded)}) == encoded
    assert diffbase.carried({"status": {"phase": "Pending"}}) is None  # pruned by a CRD without status.kopf
    assert diffbase.carried(None) is None


def test_the_essence_is_kopfs_own_built_from_less() -> None:
    """kopf's build from the trimmed body equals its build from the whole one: managedFields, other metadata and
    the status never reach the essence; other top-level fields and extra fields (the spec handler's `spec`, a
    status field) still do."""
    full: dict[str, Any] = {
        "apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": 2, "finalizers": [naming.FINALIZER],
                     "labels": {"team": "a"},
                     "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}",
                                     f"{naming.KOPF_PREFIX}/last-handled-configuration": "{}"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"image": "trainer:1", "experiment": "e", "parameters": {"epochs": 2}},
        "data": {"note": "a top-level field beside the spec"},
        "status": {"phase": "Running", "mlflow": {"runId": "r1"},
                   "kopf": {"lastHandledConfiguration": diffbase.encode(ESSENCE)}}}
    ours, theirs = diffbase.StatusDiffBase({}), kopf.StatusDiffBaseStorage(field=".".join(diffbase.FIELD))
    for extra in ([], [("spec",)], ["status.phase"], [("metadata", "generation")]):
        # Ours is given the fields once only (an iterator): it reads them twice, its build and kopf's.
        ours_essence = ours.build(body=kopf.Body(full), extra_fields=iter(extra))
        kopf_essence = theirs.build(body=kopf.Body(full), extra_fields=extra)
        annotations = kopf_essence.get("metadata", {}).get("annotations", {})
        annotations.pop(f"{naming.KOPF_PREFIX}/last-handled-configuration", None)  # ours leaves kto.dev/ out
        assert ours_essence == kopf_essence, extra
    assert "managedFields" not in diffbase.kept_by_kopf(full, [])["metadata"]
    assert "status" not in diffbase.kept_by_kopf(full, [("spec",)])
