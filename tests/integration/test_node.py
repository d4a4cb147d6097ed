"""The bed's real node: the kubelet enforces what a cluster enforces, our images run the way OpenShift runs
them, pods reach each other through Services and the cluster DNS, and nothing they send leaves the machine."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client

from tests.helpers import sleep_command, wait_for

pytestmark = pytest.mark.integration

RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
              "seccompProfile": {"type": "RuntimeDefault"}}


def _pod(name: str, image: str, command: list[str], **spec: object) -> dict:
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, **spec,
        "containers": [{"name": "main", "image": image, "command": command,
                        **({"securityContext": RESTRICTED} if spec.pop("restricted", False) else {})}]}}


def _finished(core: client.CoreV1Api, ns: str, name: str) -> client.V1ContainerStateTerminated | None:
    pod = core.read_namespaced_pod(name, ns)
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def _output(bed, core: client.CoreV1Api, ns: str, name: str, timeout: float = 180) -> str:
    term = wait_for(lambda: _finished(core, ns, name), timeout, f"pod {name} finished")
    out = bed.kubectl("logs", "-n", ns, name).stdout
    assert term.exit_code == 0, out
    return str(out)


def test_runasnonroot_pod_of_a_root_image_is_refused_by_the_kubelet(bed, namespace):
    core = client.CoreV1Api(bed.api())
    core.create_namespaced_pod(namespace, _pod("rooty", "python:3.11", ["true"],
                                               securityContext={"runAsNonRoot": True}))

    def waiting() -> client.V1ContainerStateWaiting | None:
        statuses = core.read_namespaced_pod("rooty", namespace).status.container_statuses or []
        state = statuses[0].state.waiting if statuses else None
        return state if state and state.reason == "CreateContainerConfigError" else None

    state = wait_for(waiting, 90, "CreateContainerConfigError")
    assert "runAsNonRoot and image will run as root" in state.message


UID_CHECK = (
    "import getpass, os, pathlib; "
    "home = pathlib.Path(os.environ['HOME']); (home / 'written').write_text('ok'); "
    "passwd = pathlib.Path('/etc/passwd').read_text(); "
    "print(os.getuid(), os.getgid(), getpass.getuser(), str(os.getuid()) in passwd)"
)


@pytest.mark.parametrize("image", ["kto-operator:0.1.0", "kto-trainer:0.1.0", "kto-mlflow:0.1.0"])
def test_our_images_run_under_an_arbitrary_uid_without_passwd_entry(bed, openshift_namespace, image):
    core = client.CoreV1Api(bed.api())
    name = image.split(":")[0]
    core.create_namespaced_pod(openshift_namespace, _pod(name, image, ["python", "-c", UID_CHECK], restricted=True))
    uid, gid, user, in_passwd = _output(bed, core, openshift_namespace, name).split()
    assert (uid, gid, in_passwd) == ("1000680000", "0", "False")
    assert user  # a user name without a passwd entry (kopf and MLflow ask for one)


def test_openshift_namespace_refuses_a_uid_outside_its_range(bed, openshift_namespace):
    core = client.CoreV1Api(bed.api())
    body = _pod("outside", "kto-operator:0.1.0", ["true"], restricted=True,
                securityContext={"runAsUser": 1001})
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(openshift_namespace, body)
    assert err.value.status == 422 and "must be in the ranges: [1000680000, 1000689999]" in err.value.body


def test_service_name_and_cluster_ip_reach_the_pod(bed, namespace):
    core, apps = client.CoreV1Api(bed.api()), client.AppsV1Api(bed.api())
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": "python:3.11", "workingDir": "/srv",
                            "command": ["sh", "-c", "hostname > index.html && exec python -m http.server 8080"],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}})
    svc = core.create_namespaced_service(namespace, {"metadata": {"name": "web"}, "spec": {
        "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    cluster_ip = svc.spec.cluster_ip
    # kube-proxy programs a new Service within its sync period: the client retries until a deadline, as any
    # client of a freshly created Service must.
    fetch = ("import socket, sys, time, urllib.request as u\n"
             "print(socket.gethostbyname('web'), socket.gethostbyname(sys.argv[1]))\n"
             "for url in sys.argv[2:]:\n"
             "    deadline = time.monotonic() + 60\n"
             "    while True:\n"
             "        try:\n"
             "            print(u.urlopen(url, timeout=10).read().decode().strip()); break\n"
             "        except OSError:\n"
             "            if time.monotonic() > deadline: raise\n"
             "            time.sleep(0.5)\n")
    wait_for(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas, 120, "web Ready")
    core.create_namespaced_pod(namespace, _pod("client", "python:3.11", [
        "python", "-c", fetch, f"web.{namespace}.svc.cluster.local", "http://web/", f"http://{cluster_ip}/"]))
    lines = _output(bed, core, namespace, "client").splitlines()
    web_pod = core.list_namespaced_pod(namespace, label_selector="app=web").items[0].metadata.name
    assert lines == [f"{cluster_ip} {cluster_ip}", web_pod, web_pod]


def test_pods_resolve_cluster_names_only(bed, namespace):
    core = client.CoreV1Api(bed.api())
    probe = ("import socket\n"
             "print(open('/etc/resolv.conf').read())\n"
             "for name in ('kubernetes.default', 'example.com'):\n"
             "    try: print(name, socket.gethostbyname(name))\n"
             "    except OSError as e: print(name, 'unresolved')\n")
    core.create_namespaced_pod(namespace, _pod("dns", "python:3.11", ["python", "-c", probe]))
    out = _output(bed, core, namespace, "dns")
    nameservers = [line.split()[1] for line in out.splitlines() if line.startswith("nameserver")]
    assert nameservers == ["10.96.0.10"], out
    assert "kubernetes.default 10.96.0.1" in out
    assert "example.com unresolved" in out
    corefile = core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    assert "forward" not in corefile and "proxy" not in corefile


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], text=True, capture_output=True, check=False)


def test_nothing_a_pod_sends_can_leave_the_machine(bed, namespace):
    """Checked on the rules and routes, without sending anything out."""
    core = client.CoreV1Api(bed.api())
    core.create_namespaced_pod(namespace, _pod("idle", "python:3.11", sleep_command(600)))
    wait_for(lambda: core.read_namespaced_pod("idle", namespace).status.pod_ip, 90, "pod IP")
    pod_ip = core.read_namespaced_pod("idle", namespace).status.pod_ip
    bridge = json.loads(_ip("-j", "route", "get", pod_ip).stdout)[0]["dev"]
    for outside in ("1.1.1.1", "192.0.2.1", "10.255.255.53", "10.96.255.254"):  # internet, LAN, DNS, no Service
        route = _ip("route", "get", outside, "from", pod_ip, "iif", bridge)
        assert route.returncode != 0 and "No route to host" in route.stderr, (outside, route.stdout, route.stderr)
    nat = subprocess.run(["iptables-save", "-t", "nat"], text=True, capture_output=True, check=True).stdout
    masquerade = [r for r in nat.splitlines() if "MASQUERADE" in r and "--mark" not in r and "KUBE-" not in r]
    assert masquerade == [], masquerade
    rules = subprocess.run(["iptables-save", "-t", "filter"], text=True, capture_output=True, check=True).stdout
    jump = next(r.split()[-1] for r in rules.splitlines() if r.startswith("-A FORWARD -s 10.88.0.0/16 -j "))
    assert f"-A {jump} -s 10.88.0.0/16 -j DROP" in rules.splitlines(), rules
