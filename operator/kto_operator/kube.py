"""The thin Kubernetes API layer of the TrainingRun operator: raw JSON dicts (camelCase) in and out."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import naming


class JobConflict(RuntimeError):
    """A Job with the derived name exists but belongs to something else (e.g. a deleted TrainingRun of
    the same name whose Job the garbage collector has not removed yet)."""


class JobRejected(ValueError):
    """The API server refused the Job as invalid (422): the TrainingRun asks for something its CRD schema
    lets through but a Job cannot hold (an image with spaces, an env name that is no identifier, a bad
    label key in nodeSelector). Retrying cannot help."""


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


def _json(resp: Any) -> Any:
    return json.loads(resp.data)


def _done(resp: Any) -> None:
    """Read an unwanted response body: only a fully read response gives its connection back to the pool.
    Left unread, every write opened a new TLS connection (a handshake on both sides, per request)."""
    resp.data  # noqa: B018  (reading is the point)


@dataclasses.dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    # TrainingRuns ---------------------------------------------------------------------------------
    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(_json(self.custom.get_namespaced_custom_object(
                naming.GROUP, naming.VERSION, namespace, naming.PLURAL, name, _preload_content=False)))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource (missing object: nothing to do, it is gone)."""
        try:
            _done(self.custom.patch_namespaced_custom_object_status(
                naming.GROUP, naming.VERSION, namespace, naming.PLURAL, name, {"status": dict(status)},
                _preload_content=False))
        except ApiException as err:
            if err.status != 404:
                raise

    # Jobs -----------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(_json(self.batch.read_namespaced_job(name, namespace, _preload_content=False)))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_job(self, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        """Create the Job; False if it already exists and is ours (an earlier attempt created it)."""
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        try:
            _done(self.batch.create_namespaced_job(namespace, dict(manifest), _preload_content=False))
            return True
        except ApiException as err:
            if err.status == 422:
                raise JobRejected(_message(err)) from err
            if err.status != 409:
                raise
        existing = self.get_job(namespace, name)
        if existing is None:
            # Deleted between our create and get (foreground deletion finishing): try again later.
            raise JobConflict(f"Job {name} is being deleted")
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            raise JobConflict(f"Job {name} already exists and does not belong to this TrainingRun")
        return False

    def delete_job(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete our Job and, in the background, its pods; False if it was gone (or never ours: a Job
        of the same name that another owner holds is left alone)."""
        existing = self.get_job(namespace, name)
        if existing is None:
            return False
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            return False
        # The UID precondition makes sure the Job deleted is the one just checked.
        options = {"propagationPolicy": "Background", "preconditions": {"uid": existing["metadata"]["uid"]}}
        try:
            _done(self.batch.delete_namespaced_job(name, namespace, body=options, _preload_content=False))
            return True
        except ApiException as err:
            if err.status in (404, 409):
                return False
            raise

    def list_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The trainer pods of TrainingRun `uid` (by label: pods of an older Job never match)."""
        selector = f"{naming.LABEL_TRAININGRUN_UID}={uid}"
        return list(_json(self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False))["items"])
