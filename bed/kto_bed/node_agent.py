"""The bed's node agent: the one stand-in for a kubelet + container runtime.

It registers a Ready Node, keeps its Lease and heartbeat, runs every pod bound to it as local processes
(see pod_runner), serves container logs to the apiserver like a kubelet, and provisions hostPath
PersistentVolumes for claims of its StorageClass. Everything else is real Kubernetes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from . import procs
from .controlplane import Ports
from .images import LiveImageMap
from .paths import BedPaths, pinned_versions, venv_bin
from .pod_runner import NodeContext, PodRunner

log = logging.getLogger("kto_bed.node")

NODE_NAME = "kto-bed-node"
STORAGE_CLASS = "kto-bed-local"
PROVISIONER = "kto.dev/bed-local"
HEARTBEAT = 10.0


def _iso(t: dt.datetime | None = None) -> str:
    return (t or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    def __init__(self, paths: BedPaths, ports: Ports) -> None:
        self.paths = paths
        self.ports = ports
        config.load_kube_config(str(paths.kubeconfig))
        api = client.ApiClient()
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.runners: dict[str, PodRunner] = {}
        self.stopping = threading.Event()
        images = LiveImageMap(paths.images if paths.images.exists() else None)
        base_env = {
            "PATH": os.pathsep.join([str(venv_bin()), "/usr/local/bin", "/usr/bin", "/bin"]),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(ports.apiserver),
            "LANG": "C.UTF-8",
            procs.MARKER: str(paths.root),
        }
        self.ctx = NodeContext(
            node_name=NODE_NAME, images=images, pods_root=paths.pods, pvc_root=paths.data / "pvc",
            base_env=base_env, lookup=self._lookup, token=self._token,
            kubeconfig_for_token=self._kubeconfig_for_token,
            patch_status=self._patch_status, finalize=self._finalize,
        )

    # -- API helpers given to the pod runners ---------------------------------------------
    def _lookup(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            if kind == "Secret":
                obj = self.core.read_namespaced_secret(name, ns)
            else:
                obj = self.core.read_namespaced_config_map(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(obj))

    def _token(self, ns: str, sa: str, projection: dict[str, Any]) -> str:
        spec = client.V1TokenRequestSpec(
            audiences=[projection["audience"]] if projection.get("audience") else [],
            expiration_seconds=int(projection.get("expirationSeconds", 3607)),
        )
        resp = self.core.create_namespaced_service_account_token(sa, ns, client.AuthenticationV1TokenRequest(spec=spec))
        return str(resp.status.token)

    def _kubeconfig_for_token(self, token_file: str, path: Path) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": f"https://127.0.0.1:{self.ports.apiserver}",
                "certificate-authority": str(self.paths.pki / "ca.crt")}}],
            "users": [{"name": "sa", "user": {"tokenFile": token_file}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "sa"}}],
            "current-context": "in-cluster",
        }
        path.write_text(yaml.safe_dump(cfg))

    def _patch_status(self, ns: str, name: str, body: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, ns, body)

    def _finalize(self, ns: str, name: str, uid: str) -> None:
        """Remove a deleted pod whose processes are gone; retried, then left to the periodic sweep."""
        for attempt in range(5):
            try:
                self.core.delete_namespaced_pod(
                    name, ns, grace_period_seconds=0,
                    body=client.V1DeleteOptions(grace_period_seconds=0,
                                                preconditions=client.V1Preconditions(uid=uid)),
                )
                break
            except ApiException as exc:
                if exc.status in (404, 409):
                    break
                log.warning("finalizing pod %s/%s (try %d): %s", ns, name, attempt + 1, exc.reason)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("finalizing pod %s/%s (try %d): %s", ns, name, attempt + 1, exc)
            time.sleep(2 ** attempt)
        self.runners.pop(uid, None)

    def sweep_deleted(self) -> None:
        """Pods marked for deletion that no runner owns any more (a finalize that failed, a missed event)."""
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items
        for pod in pods:
            meta = pod.metadata
            if meta.deletion_timestamp and meta.uid not in self.runners:
                self._finalize(meta.namespace, meta.name, meta.uid)

    # -- the node ---------------------------------------------------------------------------
    def node_status(self) -> dict[str, Any]:
        cpu = str(os.cpu_count() or 1)
        mem = f"{psutil.virtual_memory().total // 1024}Ki"
        disk = f"{psutil.disk_usage(str(self.paths.root)).total // 1024}Ki"
        t = _iso()
        conds = [
            ("Ready", "True", "KubeletReady", "kto-bed node agent is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "enough disk"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
        ]
        version = pinned_versions()["K8S_VERSION"]
        return {
            "capacity": {"cpu": cpu, "memory": mem, "pods": "250", "ephemeral-storage": disk},
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "250", "ephemeral-storage": disk},
            "conditions": [{"type": k, "status": s, "reason": r, "message": m,
                            "lastHeartbeatTime": t, "lastTransitionTime": t} for k, s, r, m in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": NODE_NAME}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.ports.kubelet}},
            "nodeInfo": {
                "machineID": "kto-bed", "systemUUID": "kto-bed", "bootID": str(psutil.boot_time()),
                "kernelVersion": platform.release(), "osImage": "kto-bed node agent (local processes)",
                "containerRuntimeVersion": "kto-bed://0.1", "kubeletVersion": version,
                "kubeProxyVersion": version, "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "kto-bed"}}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(NODE_NAME, {"status": self.node_status()})
        sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
              "metadata": {"name": STORAGE_CLASS,
                           "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
              "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
        try:
            self.storage.create_storage_class(sc)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT):
            try:
                self.core.patch_node_status(NODE_NAME, {"status": self.node_status()})
                self._renew_lease()
                self.sweep_deleted()
            except ApiException as exc:
                log.warning("heartbeat failed: %s", exc.reason)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("heartbeat failed: %s", exc)

    def _renew_lease(self) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40, "renewTime": now}}
        try:
            self.coord.patch_namespaced_lease(NODE_NAME, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    # -- pods -------------------------------------------------------------------------------
    def on_pod(self, pod: dict[str, Any], deleted: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if runner is not None:
            runner.update(pod)
            if deleted:
                runner.deleting.set()
            return
        if deleted:
            return
        phase = (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp") and phase in (None, "Pending", "Succeeded", "Failed"):
            self._finalize(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
            return
        if phase in ("Succeeded", "Failed"):
            return  # finished before this agent started; nothing to run
        runner = PodRunner(self.ctx, pod)
        self.runners[uid] = runner
        runner.start()

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={NODE_NAME}"
        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                    rv = listing.metadata.resource_version
                    for item in listing.items:
                        self.on_pod(self.api.sanitize_for_serialization(item))
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=rv, timeout_seconds=60, allow_watch_bookmarks=True,
                                   _preload_content=True):
                    obj = ev["object"]
                    if ev["type"] == "BOOKMARK":
                        rv = obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else \
                            obj.metadata.resource_version
                        continue
                    pod = self.api.sanitize_for_serialization(obj)
                    rv = pod["metadata"]["resourceVersion"]
                    self.on_pod(pod, deleted=ev["type"] == "DELETED")
                    if self.stopping.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                else:
                    log.warning("pod watch: %s", exc.reason)
                    time.sleep(1)
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                # The apiserver went away mid-stream (restart): list again and watch from there.
                log.warning("pod watch broke: %s", exc)
                rv = None
                time.sleep(1)

    # -- PersistentVolumes for claims of our StorageClass -----------------------------------
    def provision_loop(self) -> None:
        while not self.stopping.wait(2.0):
            try:
                self._provision_once()
            except ApiException as exc:
                log.warning("provisioner: %s", exc.reason)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("provisioner: %s", exc)

    def _provision_once(self) -> None:
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
            ns, name = pvc.metadata.namespace, pvc.metadata.name
            host = self.paths.data / "pvc" / ns / name
            host.mkdir(parents=True, exist_ok=True)
            size = (pvc.spec.resources.requests or {}).get("storage", "1Gi")
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": f"pvc-{pvc.metadata.uid}",
                               "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                  "spec": {"capacity": {"storage": size}, "accessModes": pvc.spec.access_modes,
                           "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                           "hostPath": {"path": str(host)},
                           "claimRef": {"namespace": ns, "name": name, "uid": pvc.metadata.uid}}}
            try:
                self.core.create_persistent_volume(pv)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        from .kubelet_server import serve_logs

        self.paths.pods.mkdir(parents=True, exist_ok=True)
        self.register()
        self._renew_lease()
        serve_logs(self, self.ports.kubelet)
        for target in (self.heartbeat_loop, self.provision_loop):
            threading.Thread(target=target, daemon=True).start()
        self.watch_pods()

    def shutdown(self) -> None:
        self.stopping.set()
        runners = list(self.runners.values())
        for runner in runners:
            runner.agent_stopping.set()
        for runner in runners:
            runner._terminate_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    paths = BedPaths(args.state) if args.state else BedPaths.default()
    agent = NodeAgent(paths, Ports.from_env())

    def stop(*_: Any) -> None:
        agent.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()


if __name__ == "__main__":
    main()
