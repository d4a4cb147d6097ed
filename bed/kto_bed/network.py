"""The bed's pod network: one bridge, its own routing table and firewall chains, nothing out of the machine.

Rules (brief §5): pods reach pods, Services and the bed's address only. The bridge's address is the bed's
address (API server, kubelet, MinIO and MLflow listen there), no masquerade, and every packet from the pod
range is routed by a table whose default route is `unreachable`, so a pod can never reach another host or an
unprogrammed Service IP; the firewall drops forwarded traffic from the pod range to anything but the pod
range as a second lock. Everything here is created by `up` and removed by `down`, leaving nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

NODE_NAME = "kto-bed-node"
BRIDGE = "kto0"
POD_CIDR = "10.88.0.0/16"
BED_IP = "10.88.0.1"  # the bridge's address: the node's InternalIP and where the bed's daemons listen
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
ROUTE_TABLE = "188"
RULE_PRIORITY = "1880"
CHAIN = "KTO-BED"  # in filter: FORWARD and INPUT jump here for the pod range
CNI_NETWORK = "kto-bed"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), text=True, capture_output=True, check=check)


def _ok(*argv: str) -> bool:
    return _run(*argv, check=False).returncode == 0


def cni_config() -> dict[str, object]:
    """bridge + host-local + loopback, no ipMasq: the bridge already exists with the bed's address."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": BED_IP}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ""},
            },
        ],
    }


def write_cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    conf = cni_config()
    plugins = conf["plugins"]
    assert isinstance(plugins, list)
    plugins[0]["ipam"]["dataDir"] = str(ipam_dir)
    conf_dir.mkdir(parents=True, exist_ok=True)
    ipam_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-kto-bed.conflist").write_text(json.dumps(conf, indent=2))


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


def firewall_rules() -> list[tuple[str, ...]]:
    """(chain, rule...) for iptables' filter table, in order."""
    return [
        # Replies and pod-to-pod over the bridge are fine; anything else forwarded from pods is dropped.
        (CHAIN, "-s", POD_CIDR, "-d", POD_CIDR, "-j", "RETURN"),
        (CHAIN, "-s", POD_CIDR, "-d", BED_IP, "-j", "RETURN"),
        (CHAIN, "-s", POD_CIDR, "-j", "DROP"),
    ]


def up() -> None:
    """Create the bridge, the routing table and the firewall chain (idempotent)."""
    if not _ok("ip", "link", "show", BRIDGE):
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = ipaddress.ip_network(POD_CIDR).prefixlen
    if BED_IP not in _run("ip", "-4", "addr", "show", "dev", BRIDGE).stdout:
        _run("ip", "addr", "add", f"{BED_IP}/{prefix}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _sysctl("net.ipv4.ip_forward", "1")
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        _sysctl("net.bridge.bridge-nf-call-iptables", "1")
    # What pods send (in from the bridge) uses the pod range's own table: the bridge, and nothing else. The
    # host's own packets from the bed's address keep the main table (it reaches Services through kube-proxy).
    _run("ip", "route", "replace", POD_CIDR, "dev", BRIDGE, "src", BED_IP, "table", ROUTE_TABLE)
    _run("ip", "route", "replace", "unreachable", "default", "table", ROUTE_TABLE)
    if f"lookup {ROUTE_TABLE}" not in _run("ip", "rule", "show").stdout:
        _run("ip", "rule", "add", "from", POD_CIDR, "iif", BRIDGE, "lookup", ROUTE_TABLE, "priority", RULE_PRIORITY)
    # The host reaches Services (kube-proxy rewrites programmed ones); an unprogrammed Service IP stays on the
    # bridge, never on the host's default route. From pods, the table above makes it unreachable.
    _run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", BED_IP)
    if not _ok("iptables", "-w", "-n", "-L", CHAIN):
        _run("iptables", "-w", "-N", CHAIN)
    _run("iptables", "-w", "-F", CHAIN)
    for chain, *rule in firewall_rules():
        _run("iptables", "-w", "-A", chain, *rule)
    for parent in ("FORWARD", "INPUT"):
        if not _ok("iptables", "-w", "-C", parent, "-s", POD_CIDR, "-j", CHAIN):
            _run("iptables", "-w", "-I", parent, "1", "-s", POD_CIDR, "-j", CHAIN)


def remove_kube_chains() -> None:
    """The kubelet's and kube-proxy's chains (KUBE-*), in every table, IPv4 and IPv6: `kube-proxy --cleanup`
    leaves the kubelet's own (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run(f"{tool}-save", "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in rules if line.startswith(":KUBE-")]
            for line in rules:
                parts = line.split()
                if line.startswith("-A ") and not parts[1].startswith("KUBE-") and "-j" in parts \
                        and parts[parts.index("-j") + 1].startswith("KUBE-"):
                    _run(tool, "-w", "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-X", chain, check=False)


def down() -> None:
    """Remove everything `up`, the CNI plugins, the kubelet and kube-proxy made: bridge, veths, routes, rules,
    chains."""
    remove_kube_chains()
    for parent in ("FORWARD", "INPUT"):
        while _ok("iptables", "-w", "-D", parent, "-s", POD_CIDR, "-j", CHAIN):
            pass
    _run("iptables", "-w", "-F", CHAIN, check=False)
    _run("iptables", "-w", "-X", CHAIN, check=False)
    while _ok("ip", "rule", "del", "priority", RULE_PRIORITY):
        pass
    _run("ip", "route", "flush", "table", ROUTE_TABLE, check=False)
    _run("ip", "route", "del", SERVICE_CIDR, check=False)
    _run("ip", "link", "del", BRIDGE, check=False)


def leftovers() -> list[str]:
    """What of the bed's network is still there (empty after `down`)."""
    found = []
    if _ok("ip", "link", "show", BRIDGE):
        found.append(f"interface {BRIDGE}")
    links = _run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout
    found += [f"interface {line.split(':')[1].strip()}" for line in links.splitlines() if line.strip()]
    if f"lookup {ROUTE_TABLE}" in _run("ip", "rule", "show").stdout:
        found.append(f"ip rule lookup {ROUTE_TABLE}")
    if _run("ip", "route", "show", "table", ROUTE_TABLE, check=False).stdout.strip():
        found.append(f"routes in table {ROUTE_TABLE}")
    if SERVICE_CIDR in _run("ip", "route", "show").stdout:
        found.append(f"route {SERVICE_CIDR}")
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run(f"{tool}-save", "-t", table, check=False).stdout
            found += [f"{tool} {table}: {line}" for line in rules.splitlines()
                      if CHAIN in line or "KUBE-" in line or "CNI-" in line or POD_CIDR in line]
    return found
