"""The bed's own life cycle on this machine: one bed at a time, and `down` leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil
import pytest
from kto_bed import cli
from kto_bed.controlplane import Ports
from kto_bed.paths import BedPaths

pytestmark = pytest.mark.integration


def _out(*argv: str) -> str:
    return subprocess.run(list(argv), text=True, capture_output=True, check=False).stdout


def test_a_second_bed_on_the_machine_is_refused_clearly(bed, tmp_path: Path) -> None:
    other = BedPaths(tmp_path / "other-checkout" / ".bed")
    with pytest.raises(RuntimeError, match=r"a bed from .* is running on this machine .*make bed-down"):
        cli.up(other, Ports.from_env())
    assert not (other.root / "pki").exists()  # refused before doing anything


def what_is_left(root: Path) -> list[str]:
    """Everything a bed could leave behind, read from the system itself."""
    left = []
    links = _out("ip", "-o", "link", "show")
    left += [f"link {m}" for m in re.findall(r"^\d+: (kto0|veth\w+)", links, re.M)]
    left += [f"rule {r}" for r in _out("ip", "rule", "show").splitlines() if "10.88." in r]
    left += [f"route {r}" for r in _out("ip", "route", "show", "table", "all").splitlines()
             if "10.88." in r or "10.96." in r]
    for tool in ("iptables-save", "ip6tables-save"):
        for table in ("filter", "nat", "mangle"):
            left += [f"{tool} {table} {r}" for r in _out(tool, "-t", table).splitlines()
                     if "KUBE-" in r or "KTO-" in r or "CNI-" in r or "10.88." in r]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    left += [f"mount {m.split()[4]}" for m in mounts if str(root) in m.split()[4] or "/netns/cni-" in m]
    left += [f"cgroup {d}" for d in Path("/sys/fs/cgroup").glob("*/kubepods")]
    left += [f"folder {d}" for d in (Path("/run/containerd"),) if d.exists()]
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(root) in cmd or "containerd-shim" in cmd or proc.info["name"] in ("kubelet", "kube-proxy", "pause"):
            left.append(f"process {proc.pid} {cmd[:100]}")
    return left


def test_bed_down_leaves_nothing_behind_and_up_restores_it(bed) -> None:
    paths, ports = BedPaths.default(), Ports.from_env()
    assert cli.down(paths) == 0
    try:
        assert what_is_left(paths.root) == []
    finally:
        cli.up(paths, ports)
    assert "Ready" in bed.kubectl("get", "nodes").stdout
