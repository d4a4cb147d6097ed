"""`python -m kto_bed up|down|status|env`: start and stop the whole local bed."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import psutil

from . import controlplane, network, node, procs, registry, services
from .controlplane import Ports, wait
from .paths import BedPaths, k8s_bin

ORDER_DOWN = ("provisioner", "kube-proxy", "kubelet", "containerd", "mlflow", "minio", "registry",
              "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
# One bed per machine: the bridge, the routing table, the firewall chain and the node's ports are global.
OWNER_FILE = Path("/run/kto-bed.owner")


def env_lines(paths: BedPaths, ports: Ports, creds: services.Credentials) -> dict[str, str]:
    return {
        "KUBECONFIG": str(paths.kubeconfig),
        "MLFLOW_TRACKING_URI": services.tracking_uri(ports),
        "MLFLOW_S3_ENDPOINT_URL": services.s3_endpoint(ports),
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "KTO_BED_DIR": str(paths.root),
    }


def node_ready(paths: BedPaths) -> bool:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from .network import NODE_NAME

    try:
        api = config.new_client_from_config(str(paths.kubeconfig))
        node = client.CoreV1Api(api).read_node(NODE_NAME)
    except (ApiException, OSError):
        return False
    conds = {c.type: c.status for c in node.status.conditions or []}
    taints = [t.key for t in node.spec.taints or []]
    return conds.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints


def default_sa_ready(paths: BedPaths) -> bool:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        api = config.new_client_from_config(str(paths.kubeconfig))
        client.CoreV1Api(api).read_namespaced_service_account("default", "default")
        return True
    except (ApiException, OSError):
        return False


def dns_ready(paths: BedPaths) -> bool:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        api = config.new_client_from_config(str(paths.kubeconfig))
        dep = client.AppsV1Api(api).read_namespaced_deployment("coredns", "kube-system")
    except (ApiException, OSError):
        return False
    return bool(dep.status.available_replicas)


def claim_machine(paths: BedPaths) -> None:
    """Refuse to start a second bed on this machine. A stale claim (a bed whose processes were killed without
    `down`) is taken over after clearing what it left: pod network namespaces, mounts, its network."""
    try:
        other = BedPaths(Path(OWNER_FILE.read_text().strip()))
    except OSError:
        other = paths
    if other.root != paths.root:
        if procs.marked_processes(other):
            raise RuntimeError(f"a bed from {other.root} is running on this machine (one bed per machine: its "
                               f"network {network.POD_CIDR} and node ports are global); run `make bed-down` there "
                               "first")
        node.stop(other)
        network.down()
    OWNER_FILE.write_text(str(paths.root))


def up(paths: BedPaths, ports: Ports) -> None:
    t0 = time.monotonic()
    paths.root.mkdir(parents=True, exist_ok=True)
    claim_machine(paths)
    creds = services.Credentials.ensure(paths.secrets)
    network.up()
    registry.ensure_registry(paths)
    controlplane.start(paths, ports)
    services.start_minio(paths, ports, creds)
    node.start(paths, ports)
    node.forget_stale_images(paths)
    _start_provisioner(paths)
    services.start_mlflow(paths, ports, creds)
    wait(lambda: node_ready(paths), 120, f"node {network.NODE_NAME}", paths.logs / "kubelet.log")
    wait(lambda: default_sa_ready(paths), 60, "default ServiceAccount", paths.logs / "kube-controller-manager.log")
    node.apply_cluster_addons(paths)
    wait(lambda: dns_ready(paths), 180, "CoreDNS (kube-system/coredns)", paths.logs / "kubelet.log")
    env = env_lines(paths, ports, creds)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    # kubectl of the pinned release first on PATH, so `. .bed/env && kubectl ...` talks to this bed.
    text += f'export PATH={shlex.quote(str(k8s_bin("kubectl").parent))}:"$PATH"\n'
    paths.env_file.write_text(text)
    paths.env_file.chmod(0o600)
    print(f"bed ready in {time.monotonic() - t0:.1f} s — state in {paths.root}; `. {paths.env_file}` to use it")


def _held(paths: BedPaths, name: str) -> Path:
    return paths.pids / f"{name}.held"


def held_down(paths: BedPaths, name: str) -> bool:
    """Stopped on purpose by a live fault-injection test (which starts it again). Another test session
    that saw the bed "down" meanwhile would start the bed over it, then stop the whole bed at its end."""
    try:
        return psutil.pid_exists(int(_held(paths, name).read_text()))
    except (OSError, ValueError):
        return False


def stop_component(paths: BedPaths, name: str) -> None:
    """Stop one daemon (chaos tests: apiserver restarts, MLflow outages)."""
    if name not in ORDER_DOWN:
        raise ValueError(f"unknown bed component {name!r}; one of {', '.join(ORDER_DOWN)}")
    paths.pids.mkdir(parents=True, exist_ok=True)
    _held(paths, name).write_text(str(os.getpid()))
    procs.stop(paths, name)


def start_component(paths: BedPaths, ports: Ports, name: str) -> None:
    """Start one stopped daemon again and wait until it is ready."""
    creds = services.Credentials.ensure(paths.secrets)
    starters = {
        "etcd": lambda: controlplane.start_etcd(paths, ports),
        "kube-apiserver": lambda: controlplane.start_apiserver(paths, ports),
        "kube-controller-manager": lambda: controlplane.start_controller_manager(paths, ports),
        "kube-scheduler": lambda: controlplane.start_scheduler(paths, ports),
        "minio": lambda: services.start_minio(paths, ports, creds),
        "mlflow": lambda: services.start_mlflow(paths, ports, creds),
        "registry": lambda: registry.ensure_registry(paths),
        "containerd": lambda: node.start_containerd(paths),
        "kubelet": lambda: node.start_kubelet(paths),
        "kube-proxy": lambda: node.start_kube_proxy(paths),
        "provisioner": lambda: _start_provisioner(paths),
    }
    starters[name]()
    _held(paths, name).unlink(missing_ok=True)


def _start_provisioner(paths: BedPaths) -> None:
    if not procs.is_running(paths, "provisioner"):
        procs.start(paths, "provisioner", [sys.executable, "-m", "kto_bed.provisioner", "--state", str(paths.root)])


def down(paths: BedPaths) -> int:
    node.stop(paths)
    left = procs.stop_everything(paths, ORDER_DOWN)
    network.down()
    for held in paths.pids.glob("*.held") if paths.pids.exists() else ():
        held.unlink(missing_ok=True)
    if OWNER_FILE.exists() and OWNER_FILE.read_text().strip() == str(paths.root):
        OWNER_FILE.unlink()
    rest = network.leftovers() + node.leftovers(paths)
    if left or rest:
        print(f"warning: {left} bed processes still alive; left behind: {rest}", file=sys.stderr)
        return 1
    print("bed stopped: no bed process, mount, interface, route or firewall rule left")
    return 0


def status_quiet(paths: BedPaths) -> bool:
    """Up: every daemon runs, or is held down for a moment by a fault-injection test."""
    return all(procs.is_running(paths, name) or held_down(paths, name) for name in ORDER_DOWN) \
        and paths.env_file.exists()


def status(paths: BedPaths) -> int:
    ok = True
    for name in reversed(ORDER_DOWN):
        running = procs.is_running(paths, name)
        ok &= running
        print(f"{name:26} {'running' if running else 'stopped'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kto-bed", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "reset"])
    args = parser.parse_args(argv)
    paths, ports = BedPaths.default(), Ports.from_env()
    if args.command == "up":
        try:
            up(paths, ports)
        except (TimeoutError, RuntimeError) as exc:
            print(f"bed: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "down":
        return down(paths)
    if args.command == "reset":
        import shutil

        rc = down(paths)
        shutil.rmtree(paths.root, ignore_errors=True)
        return rc
    return status(paths)


if __name__ == "__main__":
    sys.exit(main())
