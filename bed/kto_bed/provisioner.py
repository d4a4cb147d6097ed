"""The bed's storage: a default StorageClass whose claims get hostPath volumes under .bed/data/pvc.

The one stand-in for a CSI driver (a real cluster has one; the kubelet mounts these volumes for real).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .paths import BedPaths

log = logging.getLogger("kto_bed.provisioner")

STORAGE_CLASS = "kto-bed-local"
PROVISIONER = "kto.dev/bed-local"
PERIOD = 2.0


def storage_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}


def persistent_volume(pvc: Any, host: Path) -> dict[str, Any]:
    size = (pvc.spec.resources.requests or {}).get("storage", "1Gi")
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{pvc.metadata.uid}",
                         "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {"capacity": {"storage": size}, "accessModes": pvc.spec.access_modes,
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                     "hostPath": {"path": str(host), "type": "Directory"},
                     "claimRef": {"namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                                  "uid": pvc.metadata.uid}}}


class Provisioner:
    def __init__(self, paths: BedPaths) -> None:
        self.root = paths.data / "pvc"
        self.core = client.CoreV1Api(config.new_client_from_config(str(paths.kubeconfig)))
        self.storage = client.StorageV1Api(self.core.api_client)

    def ensure_class(self) -> None:
        try:
            self.storage.create_storage_class(storage_class())
        except ApiException as exc:
            if exc.status != 409:
                raise

    def once(self) -> None:
        for pv in self.core.list_persistent_volume().items:
            # reclaimPolicy Delete: a released volume of ours goes, with its folder.
            if pv.spec.storage_class_name == STORAGE_CLASS and pv.status.phase == "Released":
                shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
                try:
                    self.core.delete_persistent_volume(pv.metadata.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            sc = pvc.spec.storage_class_name
            if pvc.spec.volume_name or pvc.status.phase == "Bound" or sc not in (None, STORAGE_CLASS):
                continue
            host = self.root / pvc.metadata.namespace / pvc.metadata.name
            host.mkdir(parents=True, exist_ok=True)
            # hostPath volumes ignore fsGroup: any UID a pod runs as (arbitrary, group 0) may write.
            host.chmod(0o777)
            try:
                self.core.create_persistent_volume(persistent_volume(pvc, host))
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def run(self, stopping: threading.Event) -> None:
        self.ensure_class()
        while not stopping.wait(PERIOD):
            try:
                self.once()
            except ApiException as exc:
                log.warning("provisioner: %s", exc.reason)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("provisioner: %s", exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    Provisioner(BedPaths(args.state) if args.state else BedPaths.default()).run(stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
