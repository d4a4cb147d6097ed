"""The bed's node: containerd + runc, the kubelet and kube-proxy of the pinned release, on the bed network.

Host facts that shape the configuration: cgroups are the v1/hybrid layout without systemd (kubelet
`failCgroupV1: false`, `cgroupDriver: cgroupfs`, runc not crun), CAP_SYS_RESOURCE is missing (no negative
oom_score_adj: containerd's `restrict_oom_score_adj`, kubelet `--oom-score-adj=0`), and nothing may be
pulled from outside (every registry containerd knows is mirrored to the bed's local registry only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from . import network, procs, registry
from .controlplane import Ports, wait, write_kubeconfig
from .network import NODE_NAME
from .paths import BED_DIR, BedPaths, containerd_bin, k8s_bin, pinned_versions

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
COREDNS_IMAGE = f"registry.k8s.io/coredns/coredns:{pinned_versions()['COREDNS_VERSION']}"
NETNS_DIR = Path("/var/run/netns")  # where containerd's CRI pins pod network namespaces
SHIM_SOCKETS = Path("/run/containerd")  # containerd's shims put their sockets here, whatever its state dir
SHIM_EXIT_S = 10.0
# What OpenShift writes on every project; the bed's admission policies (manifests/openshift-uids.yaml) then
# give pods that set no UID the range's first one, in group 0, as restricted-v2 does.
OPENSHIFT_ANNOTATIONS = {"openshift.io/sa.scc.uid-range": "1000680000/10000",
                         "openshift.io/sa.scc.supplemental-groups": "1000680000/10000"}
CNI_BIN = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"


def node_dir(paths: BedPaths) -> Path:
    return paths.root / "node"


def containerd_socket(paths: BedPaths) -> Path:
    return node_dir(paths) / "containerd" / "containerd.sock"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def containerd_config(paths: BedPaths) -> str:
    base = node_dir(paths) / "containerd"
    return f"""version = 4
root = {_toml_str(str(base / "root"))}
state = {_toml_str(str(base / "state"))}
imports = []
# NRI's socket and /opt/containerd live outside the bed's folder; the bed needs neither.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[plugins."io.containerd.server.v1.grpc"]
  address = {_toml_str(str(containerd_socket(paths)))}

[plugins."io.containerd.server.v1.ttrpc"]
  address = {_toml_str(str(base / "containerd.sock.ttrpc"))}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = {_toml_str(PAUSE_IMAGE)}
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = {_toml_str(str(base / "certs.d"))}

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = {_toml_str(RUNC)}
        Root = {_toml_str(str(base / "runc"))}
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{_toml_str(CNI_BIN)}]
    conf_dir = {_toml_str(str(node_dir(paths) / "cni" / "net.d"))}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"

# The CRI pulls through the transfer service: the same registry hosts.
[plugins."io.containerd.transfer.v1.local"]
  config_path = {_toml_str(str(base / "certs.d"))}
"""


def write_registry_hosts(certs_d: Path) -> None:
    """Every registry resolves to the bed's registry only (`_default`: any other host), never to the real one:
    nothing is pulled from outside, and a name the bed's registry lacks fails like a missing image."""
    for host in (*registry.MIRRORED, registry.HOST, "_default"):
        d = certs_d / host
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "http://{registry.HOST}"\n\n[host."http://{registry.HOST}"]\n'
            '  capabilities = ["pull", "resolve"]\n')


def kubelet_config(paths: BedPaths, ports: Ports) -> dict[str, object]:
    pki = paths.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.BED_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_socket(paths)}",
        "clusterDomain": "cluster.local",
        "clusterDNS": [network.DNS_IP],
        # Pods' resolv.conf: the cluster DNS only, never the host's resolver.
        "resolvConf": str(node_dir(paths) / "resolv.conf"),
        "podCIDR": network.POD_CIDR,
        "maxPods": 250,
        "serializeImagePulls": False,
        "runtimeRequestTimeout": "15m",
        "imageMinimumGCAge": "24h",
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "containerLogMaxSize": "10Mi",
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "oomScoreAdj": 0,
    }


def kube_proxy_config(paths: BedPaths, ports: Ports) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(node_dir(paths) / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": network.POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.kube_proxy_metrics}",
        # NodePorts only on the bed's address, never on the machine's own interfaces.
        "nodePortAddresses": [f"{network.BED_IP}/32"],
        "conntrack": {"maxPerCore": 0},
        "oomScoreAdj": 0,
    }


def write_configs(paths: BedPaths, ports: Ports) -> None:
    d = node_dir(paths)
    for sub in ("containerd", "kubelet", "cni/net.d", "cni/ipam", "logs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "containerd" / "config.toml").write_text(containerd_config(paths))
    write_registry_hosts(d / "containerd" / "certs.d")
    network.write_cni_config(d / "cni" / "net.d", d / "cni" / "ipam")
    (d / "resolv.conf").write_text(f"nameserver {network.DNS_IP}\n")
    (d / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(paths, ports), sort_keys=False))
    (d / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(paths, ports), sort_keys=False))
    write_kubeconfig(d / "kubelet.kubeconfig", paths, ports, "kubelet")
    write_kubeconfig(d / "kube-proxy.kubeconfig", paths, ports, "kube-proxy")


def start_containerd(paths: BedPaths) -> None:
    if procs.is_running(paths, "containerd"):
        return
    d = node_dir(paths)
    shim_dir = str(containerd_bin("containerd").parent)
    procs.start(paths, "containerd", [str(containerd_bin("containerd")), "--config",
                                      str(d / "containerd" / "config.toml")],
                env={"PATH": f"{shim_dir}:/usr/sbin:/usr/bin:/sbin:/bin"})


def start_kubelet(paths: BedPaths) -> None:
    if procs.is_running(paths, "kubelet"):
        return
    d = node_dir(paths)
    procs.start(paths, "kubelet", [
        str(k8s_bin("kubelet")), f"--config={d / 'kubelet.yaml'}",
        f"--kubeconfig={d / 'kubelet.kubeconfig'}", f"--root-dir={d / 'kubelet'}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={network.BED_IP}", "--v=1",
    ])


def start_kube_proxy(paths: BedPaths) -> None:
    if procs.is_running(paths, "kube-proxy"):
        return
    procs.start(paths, "kube-proxy", [str(k8s_bin("kube-proxy")),
                                      f"--config={node_dir(paths) / 'kube-proxy.yaml'}", "--v=1"])


def crictl(paths: BedPaths, *args: str) -> subprocess.CompletedProcess[str]:
    """containerd's own client against the bed's socket, in the kubelet's namespace."""
    return subprocess.run([str(containerd_bin("ctr")), "--address", str(containerd_socket(paths)),
                           "--namespace", "k8s.io", *args], text=True, capture_output=True, check=False)


def versions() -> dict[str, str]:
    v = pinned_versions()
    return {"kubelet": v["K8S_VERSION"], "containerd": v["CONTAINERD_VERSION"]}


# -- lifecycle ---------------------------------------------------------------------------------
def start(paths: BedPaths, ports: Ports) -> None:
    for binary in (k8s_bin("kubelet"), k8s_bin("kube-proxy"), containerd_bin("containerd")):
        if not binary.exists():
            raise RuntimeError(f"{binary} missing: run bed/build.sh first")
    write_configs(paths, ports)
    start_containerd(paths)
    wait(lambda: containerd_socket(paths).exists() and crictl(paths, "version").returncode == 0, 60,
         "containerd", paths.logs / "containerd.log")
    start_kubelet(paths)
    start_kube_proxy(paths)


def apply_cluster_addons(paths: BedPaths) -> None:
    """CoreDNS behind kube-dns, like a real cluster's add-on, and OpenShift's UID assignment (admission)."""
    text = (BED_DIR / "manifests" / "coredns.yaml").read_text()
    text = text.replace("${COREDNS_IMAGE}", COREDNS_IMAGE).replace("${DNS_IP}", network.DNS_IP)
    kubectl(paths, "apply", "--server-side", "--force-conflicts", "-f", "-", input=text)
    kubectl(paths, "apply", "--server-side", "--force-conflicts", "-f",
            str(BED_DIR / "manifests" / "openshift-uids.yaml"))


def kubectl(paths: BedPaths, *args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(paths.kubeconfig)}
    done = subprocess.run([str(k8s_bin("kubectl")), *args], input=input, env=env, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _pod_cgroups() -> list[Path]:
    """The kubelet's pod cgroups in every v1 hierarchy (and the unified one), deepest first."""
    found: list[Path] = []
    for top in Path("/sys/fs/cgroup").iterdir():
        root = top / "kubepods"
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.is_dir()] + [root]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pod_processes() -> int:
    """SIGKILL every process left in a pod cgroup, then remove the cgroups; return how many were killed."""
    killed = 0
    for _ in range(50):
        pids = set()
        for cg in _pod_cgroups():
            try:
                pids |= {int(p) for p in (cg / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                continue
        time.sleep(0.1)
    for cg in _pod_cgroups():
        try:
            cg.rmdir()
        except OSError:
            continue
    return killed


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _node_mount_prefixes(paths: BedPaths) -> tuple[str, ...]:
    # mountinfo names the real path (/run/netns, not the /var/run link).
    return (str(node_dir(paths).resolve()) + "/", str(NETNS_DIR.resolve()) + "/cni-")


def unmount_all(paths: BedPaths) -> None:
    """The kubelet's volume mounts, containerd's rootfs/shm mounts and the pods' network namespaces."""
    prefixes = _node_mount_prefixes(paths)
    for _ in range(3):
        points = _mounts_under(prefixes)
        if not points:
            break
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for ns in NETNS_DIR.glob("cni-*") if NETNS_DIR.is_dir() else ():
        ns.unlink(missing_ok=True)


def _own_shims(paths: BedPaths) -> list[int]:
    """The pids of the shims of this node's containerd (their command line names its socket)."""
    address = str(containerd_socket(paths)).encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address in argv:
            pids.append(int(proc.name))
    return pids


def stop_shims(paths: BedPaths) -> None:
    """containerd's shims outlive it by design; with their containers killed, this node's are stopped too
    (a shim left running keeps its socket folder under /run/containerd)."""
    for pid in _own_shims(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + SHIM_EXIT_S
    while (left := _own_shims(paths)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(paths: BedPaths) -> None:
    """Stop the node and leave nothing behind: no container, mount, cgroup, netns or kube-proxy rule."""
    for name in ("kube-proxy", "kubelet"):
        procs.stop(paths, name)
    kill_pod_processes()
    procs.stop(paths, "containerd")
    stop_shims(paths)
    unmount_all(paths)
    # A shim still exiting removes its socket (and may touch its folder) after containerd is gone: the folders
    # are removed once empty, within a deadline.
    deadline = time.monotonic() + SHIM_EXIT_S
    while SHIM_SOCKETS.is_dir():
        for folder in sorted(SHIM_SOCKETS.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty yet, or gone meanwhile
                folder.rmdir()
        with contextlib.suppress(OSError):
            SHIM_SOCKETS.rmdir()
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if k8s_bin("kube-proxy").exists():
        subprocess.run([str(k8s_bin("kube-proxy")), "--cleanup"], capture_output=True, check=False)


def leftovers(paths: BedPaths) -> list[str]:
    """Mounts, network namespaces and pod cgroups of the node still there (empty after `stop`)."""
    found = [f"mount {m}" for m in _mounts_under(_node_mount_prefixes(paths))]
    found += [f"netns {ns.name}" for ns in (NETNS_DIR.glob("cni-*") if NETNS_DIR.is_dir() else ())]
    found += [f"cgroup {cg}" for cg in _pod_cgroups()]
    if SHIM_SOCKETS.exists():
        found.append(f"folder {SHIM_SOCKETS}")
    return found


def qualified(ref: str) -> str:
    """containerd's name for an image reference: `kto-operator:0.1.0` -> docker.io/library/kto-operator:0.1.0."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def forget_stale_images(paths: BedPaths) -> list[str]:
    """Drop from the node every image whose tag the bed's registry now points elsewhere (a rebuilt kto-operator:
    0.1.0), so the kubelet pulls the new one: a tag's pull policy is IfNotPresent. Returns the names dropped."""
    built = paths.root / "images.json"
    if not built.exists() or not procs.is_running(paths, "containerd"):
        return []
    wanted = {qualified(ref): digest for ref, digest in json.loads(built.read_text()).items()}
    listing = crictl(paths, "images", "list")
    dropped = []
    for line in listing.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] in wanted and fields[2] != wanted[fields[0]]:
            crictl(paths, "images", "rm", fields[0])
            dropped.append(fields[0])
    return dropped
