"""Where kopf keeps a TrainingRun's last handled spec (its "diff base", to tell a spec change from an echo):
in the status, carried by the start handler's own status write.

kopf's default stores it in an annotation, with a patch of its own after the create handler: one API request
and one watch event more per run. Here the start handler writes it with the run's JobCreated status (the last
step of a successful start: kopf retries a failed handler only while the diff base differs), and kopf's
store finds nothing left to send. kopf writes it itself after any other handling (a spec change, a resume).
An entry of `written` lives until a watch event shows the status it was written with (a run deleted at once
shows it in its DELETED event; the deletion handler drops it too). This holds while `start` is the
TrainingRun's only creation handler: a second one that failed would not be retried once the start's write
made the diff base current. The operator's own annotations (kto.dev/, e.g. a wake request on a
PowerSchedule) are left out of the essence, as kopf leaves out those of a prefix it marks as its own.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any, cast

import kopf

from . import naming

# Status field of the diff base (kopf's JSON text of the object's essence: spec, labels, annotations).
FIELD = ("status", "kopf", "lastHandledConfiguration")


def encode(essence: Any) -> str:
    """The diff base as kopf stores it (compact JSON)."""
    return json.dumps(essence, separators=(",", ":"))


def status_field(encoded: str) -> dict[str, Any]:
    """The status fields that carry `encoded`."""
    return {FIELD[1]: {FIELD[2]: encoded}}


def carried(body: Mapping[str, Any] | None) -> str | None:
    """The diff base a stored object carries in its status."""
    return ((((body or {}).get(FIELD[0]) or {}).get(FIELD[1])) or {}).get(FIELD[2])


def kept_by_kopf(body: Mapping[str, Any], extra_fields: Collection[Any]) -> dict[str, Any]:
    """The part of `body` kopf's essence is built from (its build deep-copies what it is given, then drops the
    rest): not the metadata but its labels and annotations (managedFields go), not the status; a stanza an
    extra field reaches into is kept whole."""
    whole = {field.split(".")[0] if isinstance(field, str) else next(iter(field))
             for field in extra_fields if field}
    kept = {key: value for key, value in body.items() if key not in ("metadata", "status") or key in whole}
    meta = body.get("metadata")
    if "metadata" not in whole and isinstance(meta, Mapping):
        kept["metadata"] = {key: meta[key] for key in ("labels", "annotations") if key in meta}
    return kept


class StatusDiffBase(kopf.StatusDiffBaseStorage):
    """kopf's diff base in `status.kopf.lastHandledConfiguration`. `written` (UID -> JSON text, shared with
    reconcile.Context.handled) holds what the start handler wrote with a status of its own: kopf's store of
    the same is skipped, and until a watch event shows it, an older event's body (queued while the handler
    ran) is read with it, not taken for a new creation. Reads the annotation an older operator wrote when
    the status has none."""

    def __init__(self, written: dict[str, str]) -> None:
        super().__init__(field=".".join(FIELD))
        self.written = written
        self.legacy = kopf.AnnotationsDiffBaseStorage(prefix=naming.KOPF_PREFIX)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        uid = body.metadata.uid or ""
        if stored is not None:
            self.written.pop(uid, None)  # the watch has caught up: the status says it from now on
            return stored
        if uid in self.written:
            essence: kopf.BodyEssence = json.loads(self.written[uid])
            return essence
        return self.legacy.fetch(body=body)

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        fields = list(extra_fields or ())  # read twice: here and by kopf's build
        essence = super().build(body=kopf.Body(cast(kopf.RawBody, kept_by_kopf(body, fields))), extra_fields=fields)
        annotations = essence.get("metadata", {}).get("annotations")
        if annotations:
            for key in [k for k in annotations if k.startswith(f"{naming.KOPF_PREFIX}/")]:
                del annotations[key]
            if not annotations:
                del essence["metadata"]["annotations"]
            if not essence["metadata"]:
                del essence["metadata"]
        return essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if self.written.get(body.metadata.uid or "") == encode(essence):
            return
        super().store(body=body, patch=patch, essence=essence)
