"""The thin API layer of the power module: raw JSON in and out (camelCase dicts), nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, STATEFULSET

GROUP = "kto.dev"
VERSION = "v1alpha1"
PLURAL = "powerschedules"
KIND = "PowerSchedule"
RUNS_PLURAL = "trainingruns"
MERGE = "application/merge-patch+json"

Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


class Conflict(RuntimeError):
    """The object changed since it was read (409): read again and recompute."""


def _json(resp: Any) -> Any:
    return json.loads(resp.data)


@dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    # PowerSchedules -------------------------------------------------------------------------------
    def list_powers(self, ns: str) -> list[dict[str, Any]]:
        try:
            return list(_json(self.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, _preload_content=False))["items"])
        except ApiException as err:
            if err.status == 404:  # CRD not installed: no PowerSchedule
                return []
            raise

    def patch_power_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, {"status": status}, _content_type=MERGE)

    # TrainingRuns -----------------------------------------------------------------------------------
    def list_runs(self, ns: str) -> list[dict[str, Any]]:
        try:
            return list(_json(self.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, RUNS_PLURAL, _preload_content=False))["items"])
        except ApiException as err:
            if err.status == 404:  # TrainingRun CRD not installed: no run can be active
                return []
            raise

    # Workloads --------------------------------------------------------------------------------------
    def list_workloads(self, kind: str, ns: str) -> list[dict[str, Any]]:
        lister = {
            DEPLOYMENT: self.apps.list_namespaced_deployment,
            STATEFULSET: self.apps.list_namespaced_stateful_set,
            CRONJOB: self.batch.list_namespaced_cron_job,
        }[kind]
        return list(_json(lister(ns, _preload_content=False))["items"])

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        reader = {
            DEPLOYMENT: self.apps.read_namespaced_deployment,
            STATEFULSET: self.apps.read_namespaced_stateful_set,
            CRONJOB: self.batch.read_namespaced_cron_job,
        }[kind]
        try:
            return dict(_json(reader(name, ns, _preload_content=False)))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_workload(self, kind: str, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a merge patch; the patched object, None if it is gone, Conflict on a 409."""
        patcher = {
            DEPLOYMENT: self.apps.patch_namespaced_deployment,
            STATEFULSET: self.apps.patch_namespaced_stateful_set,
            CRONJOB: self.batch.patch_namespaced_cron_job,
        }[kind]
        try:
            return dict(_json(patcher(name, ns, patch, _content_type=MERGE, _preload_content=False)))
        except ApiException as err:
            if err.status == 404:
                return None
            if err.status == 409:
                raise Conflict(f"{kind}/{name} changed while being patched") from err
            raise
