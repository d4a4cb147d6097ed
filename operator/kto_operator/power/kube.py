"""The thin API layer of the power module: raw JSON in and out (camelCase dicts), nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kto_operator.kube_rest import MERGE_PATCH, ApiError, Client, Resource
from kto_operator.naming import GROUP, PLURAL, POWER_PLURAL, VERSION
from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, STATEFULSET

POWERS = Resource(GROUP, VERSION, POWER_PLURAL)
RUNS = Resource(GROUP, VERSION, PLURAL)
WORKLOADS = {
    DEPLOYMENT: Resource("apps", "v1", "deployments"),
    STATEFULSET: Resource("apps", "v1", "statefulsets"),
    CRONJOB: Resource("batch", "v1", "cronjobs"),
}

Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


class Conflict(RuntimeError):
    """The object changed since it was read (409): read again and recompute."""


@dataclass(frozen=True)
class Kube:
    api: Client

    # PowerSchedules -------------------------------------------------------------------------------
    def list_powers(self, ns: str) -> list[dict[str, Any]]:
        try:
            return list(self.api.request("GET", POWERS.path(ns))["items"])
        except ApiError as err:
            if err.status == 404:  # CRD not installed: no PowerSchedule
                return []
            raise

    def patch_power_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        self.api.request("PATCH", POWERS.path(ns, name, "status"), body={"status": status}, content_type=MERGE_PATCH)

    # TrainingRuns -----------------------------------------------------------------------------------
    def list_runs(self, ns: str) -> list[dict[str, Any]]:
        try:
            return list(self.api.request("GET", RUNS.path(ns))["items"])
        except ApiError as err:
            if err.status == 404:  # TrainingRun CRD not installed: no run can be active
                return []
            raise

    # Workloads --------------------------------------------------------------------------------------
    def list_workloads(self, kind: str, ns: str) -> list[dict[str, Any]]:
        return list(self.api.request("GET", WORKLOADS[kind].path(ns))["items"])

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.request("GET", WORKLOADS[kind].path(ns, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def patch_workload(self, kind: str, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a merge patch; the patched object, None if it is gone, Conflict on a 409."""
        try:
            return self.api.request("PATCH", WORKLOADS[kind].path(ns, name), body=patch, content_type=MERGE_PATCH)
        except ApiError as err:
            if err.status == 404:
                return None
            if err.status == 409:
                raise Conflict(f"{kind}/{name} changed while being patched") from err
            raise
