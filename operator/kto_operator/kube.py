"""The thin Kubernetes API layer of the TrainingRun operator: raw JSON dicts (camelCase) in and out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from . import naming
from .kube_rest import MERGE_PATCH, ApiError, Client, Resource

RUNS = Resource(naming.GROUP, naming.VERSION, naming.PLURAL)
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
EVENTS = Resource("", "v1", "events")


class JobConflict(RuntimeError):
    """A Job with the derived name exists but belongs to something else (e.g. a deleted TrainingRun of
    the same name whose Job the garbage collector has not removed yet)."""


class JobRejected(ValueError):
    """The API server refused the Job as invalid (422): the TrainingRun asks for something its CRD schema
    lets through but a Job cannot hold (an image with spaces, an env name that is no identifier, a bad
    label key in nodeSelector). Retrying cannot help."""


@dataclasses.dataclass(frozen=True)
class Kube:
    api: Client

    # TrainingRuns ---------------------------------------------------------------------------------
    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.request("GET", RUNS.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def patch_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource (missing object: nothing to do, it is gone)."""
        try:
            self.api.request("PATCH", RUNS.path(namespace, name, "status"), body={"status": dict(status)},
                             content_type=MERGE_PATCH)
        except ApiError as err:
            if err.status != 404:
                raise

    # Jobs -----------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.request("GET", JOBS.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create_job(self, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        """Create the Job; False if it already exists and is ours (an earlier attempt created it)."""
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        try:
            self.api.request("POST", JOBS.path(namespace), body=manifest)
            return True
        except ApiError as err:
            if err.status == 422:
                raise JobRejected(err.message) from err
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
            self.api.request("DELETE", JOBS.path(namespace, name), body=options)
            return True
        except ApiError as err:
            if err.status in (404, 409):
                return False
            raise

    # Services ---------------------------------------------------------------------------------------
    def create_service(self, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        """Create the workers' headless Service; False if it exists and is ours (an earlier attempt's).
        JobConflict / JobRejected as for the Job: the Service is part of starting it."""
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        try:
            self.api.request("POST", SERVICES.path(namespace), body=manifest)
            return True
        except ApiError as err:
            if err.status == 422:
                raise JobRejected(err.message) from err
            if err.status != 409:
                raise
        try:
            existing = self.api.request("GET", SERVICES.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                raise JobConflict(f"Service {name} is being deleted") from err
            raise
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            raise JobConflict(f"Service {name} already exists and does not belong to this TrainingRun")
        return False

    def list_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The trainer pods of TrainingRun `uid` (by label: pods of an older Job never match)."""
        selector = f"{naming.LABEL_TRAININGRUN_UID}={uid}"
        pods = self.api.request("GET", PODS.path(namespace), params={"labelSelector": selector})
        return list(pods["items"])

    def list_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The Events about object `uid` (e.g. a Job's FailedCreate), by the server's field selector."""
        events = self.api.request("GET", EVENTS.path(namespace), params={"fieldSelector": f"involvedObject.uid={uid}"})
        return list(events["items"])
