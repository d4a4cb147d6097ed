"""`make demo`: from a fresh machine to a Succeeded TrainingRun with metrics, then the platform off and on.

Everything runs on the local bed (real Kubernetes control plane and node: kubelet, containerd, our images
from our Dockerfiles): the shipped platform manifests (MySQL, MinIO, MLflow), the shipped operator Deployment on its
own ServiceAccount, the shipped examples (TrainingRun + PowerSchedule) with a small-machine overlay.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cli
from .controlplane import Ports
from .node import OPENSHIFT_ANNOTATIONS
from .paths import BedPaths, k8s_bin, repo_root

NAMESPACE = "kto-demo"
RUN = "cats-dogs-other-1"
POWER = "platform"
# The ServiceAccount whose token `make demo` prints for the web console (the namespace's `edit` rights).
CONSOLE_USER = "console-demo"
SECRETS_ENV = Path("manifests/platform/secrets/secrets.env")
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def _env_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            values[k.strip()] = v.strip()
    return values


class DemoError(Exception):
    pass


def write_overlays(root: Path, repo: Path, mlflow_ui: str, epochs: int | None) -> None:
    """Kustomize overlays on top of the committed demo ones: the MLflow UI address the host can open, and
    the epochs when a test asks for fewer."""
    layers: dict[str, tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = {
        "operator": ("demo/operator", [], [{"name": "kto-operator-config", "behavior": "merge",
                                            "literals": [f"KTO_MLFLOW_UI_URL={mlflow_ui}"]}]),
        "examples": ("demo/examples", [{"target": {"kind": "TrainingRun", "name": RUN}, "patch": json.dumps(
            [{"op": "replace", "path": "/spec/parameters/epochs", "value": epochs}])}] if epochs else [], []),
    }
    for name, (base, patches, generators) in layers.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(repo / base, folder)], "patches": patches}
        if generators:
            kustomization["configMapGenerator"] = generators
        (folder / "kustomization.yaml").write_text(json.dumps(kustomization, indent=1))


class Demo:
    def __init__(self, paths: BedPaths, ports: Ports, namespace: str, out: Any = sys.stdout,
                 epochs: int | None = None) -> None:
        self.paths, self.ports, self.ns, self.out = paths, ports, namespace, out
        self.epochs = epochs
        self.repo = repo_root()
        self.overlays = paths.root / "demo" / namespace
        self.env = {**os.environ, "KUBECONFIG": str(paths.kubeconfig),
                    "PATH": f"{k8s_bin('kubectl').parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.tty = out.isatty()

    # -- output -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, n: int, text: str) -> None:
        self.say(f"\n== {n}. {text}")

    def kubectl_apply(self, obj: dict[str, Any]) -> None:
        done = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(obj), env=self.env, text=True,
                              capture_output=True, check=False)
        if done.returncode != 0:
            raise DemoError(f"kubectl apply failed: {done.stderr.strip()}")

    def kubectl(self, *args: str, show: bool = False, check: bool = True) -> str:
        if show:
            self.say("$ kubectl " + " ".join(shlex.quote(a) for a in args))
        done = subprocess.run(["kubectl", *args], env=self.env, cwd=self.repo, text=True, capture_output=True,
                              check=False)
        if check and done.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        if show and done.stdout.strip():
            self.say(done.stdout.rstrip())
        return done.stdout

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(1)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-n", self.ns, "-o", "json")))

    # -- steps --------------------------------------------------------------------------------
    def platform_secrets(self) -> dict[str, str]:
        """Generate the platform's credentials once (git-ignored file), as the template asks a user to; a file
        from an older template keeps its values and gets the keys added since."""
        path = self.repo / SECRETS_ENV
        old = _env_values(path.read_text()) if path.exists() else {}
        if old and "MINIO_ROOT_USER" not in old and "AWS_ACCESS_KEY_ID" in old:
            # Its S3 keys were MinIO's root user (docs/install.md, Upgrade); the trainers' user gets new ones.
            old["MINIO_ROOT_USER"] = old.pop("AWS_ACCESS_KEY_ID")
            old["MINIO_ROOT_PASSWORD"] = old.pop("AWS_SECRET_ACCESS_KEY", "")
        lines = []
        for line in (self.repo / "manifests/platform/secrets/secrets.env.example").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                line = f"{key}={old.get(key) or (secrets.token_hex(16) if value == 'change-me' else value)}"
            lines.append(line)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o600)
        return _env_values(text)

    def ready(self, kind: str, name: str) -> bool:
        obj = json.loads(self.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False) or "{}")
        want = obj.get("spec", {}).get("replicas", 1)
        return bool(obj) and obj.get("status", {}).get("readyReplicas", 0) >= want > 0

    def service_url(self, name: str, port: int) -> str:
        """The Service's address, which the host reaches through kube-proxy like a pod does."""
        ip = self.kubectl("get", "service", name, "-n", self.ns, "-o", "jsonpath={.spec.clusterIP}")
        return f"http://{ip}:{port}"

    @property
    def mlflow_url(self) -> str:
        return self.service_url("mlflow", 5000)

    def start_platform(self) -> None:
        # A project like the Developer Sandbox's: pods get an arbitrary UID of its range (the bed's
        # admission does what OpenShift's restricted-v2 does), restricted Pod Security enforced.
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": self.ns, "annotations": OPENSHIFT_ANNOTATIONS,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        self.kubectl_apply(namespace)
        self.kubectl("apply", "--server-side", "-k", "manifests/crds", show=True)
        self.kubectl("wait", "--for=condition=Established", "crd/trainingruns.kto.dev", "crd/powerschedules.kto.dev")
        self.platform_secrets()
        self.kubectl("apply", "-n", self.ns, "-k", "manifests/platform/bed", show=True)
        for kind, name in (("statefulset", "mysql"), ("deployment", "minio"), ("deployment", "mlflow")):
            self.wait(functools.partial(self.ready, kind, name), 300, f"{kind}/{name} Ready")
            self.say(f"   {kind}/{name} Ready")

    def upload_dataset(self, count: int) -> None:
        creds = self.platform_secrets()
        env = {**self.env, "MLFLOW_S3_ENDPOINT_URL": self.service_url("minio", 9000),
               # MinIO's root user: the AWS_* keys are the trainers', who may only read the dataset.
               "AWS_ACCESS_KEY_ID": creds["MINIO_ROOT_USER"],
               "AWS_SECRET_ACCESS_KEY": creds["MINIO_ROOT_PASSWORD"], "AWS_DEFAULT_REGION": "us-east-1"}
        cmd = [sys.executable, "-m", "kto_trainer.dataset_tool", "--source", "digits", "--count", str(count),
               "--size", "32"]
        self.say(f"$ python -m kto_trainer.dataset_tool --source digits --count {count} --size 32")
        done = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)
        if done.returncode != 0:
            raise DemoError(f"dataset upload failed: {done.stderr.strip() or done.stdout.strip()}")
        self.say("   " + (done.stdout.strip().splitlines() or ["uploaded"])[-1])

    def start_operator(self) -> None:
        write_overlays(self.overlays, self.repo, self.mlflow_url, self.epochs)
        self.kubectl("apply", "-n", self.ns, "-k", str(self.overlays / "operator"), show=True)
        self.wait(lambda: self.ready("deployment", "kto-operator"), 180, "deployment/kto-operator Ready")
        self.say("   operator running in a pod with ServiceAccount kto-operator (shipped Role only)")

    def console_login(self) -> tuple[str, str]:
        """The web console's URL and a token to sign in with: a ServiceAccount with the namespace's `edit`
        rights (kto-edit is aggregated into it), as a course user would have."""
        self.kubectl("create", "serviceaccount", CONSOLE_USER, "-n", self.ns, check=False)
        self.kubectl("create", "rolebinding", f"{CONSOLE_USER}-edit", "--clusterrole=edit",
                     f"--serviceaccount={self.ns}:{CONSOLE_USER}", "-n", self.ns, check=False)
        token = self.kubectl("create", "token", CONSOLE_USER, "-n", self.ns, "--duration=24h").strip()
        return self.service_url("kto-console", 8090), token

    def run_training(self, timeout: float) -> dict[str, Any]:
        self.kubectl("delete", "trainingrun", RUN, "-n", self.ns, "--ignore-not-found", "--wait=true")
        self.kubectl("apply", "-n", self.ns, "-k", str(self.overlays / "examples"), show=True)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            tr = self.get("trainingrun", RUN)
            st = tr.get("status", {})
            phase = st.get("phase", "Pending")
            prog = st.get("progress") or {}
            line = self.progress_line(phase, st.get("reason") or "", prog.get("epoch"), prog.get("epochs"))
            if line != last:
                if self.tty:
                    print("\r" + line.ljust(100), end="", file=self.out, flush=True)
                else:
                    self.say(line)
                last = line
            if phase in TERMINAL:
                if self.tty:
                    print(file=self.out)
                return tr
            if time.monotonic() > deadline:
                raise DemoError(f"TrainingRun not finished after {timeout:.0f} s (phase {phase})")
            time.sleep(1)

    def progress_line(self, phase: str, reason: str, epoch: int | None, epochs: int | None) -> str:
        text = f"   {phase:<18}"
        if epochs:
            done = int(epoch or 0)
            width = 30
            fill = int(width * done / epochs)
            bar = "#" * fill + "-" * (width - fill) if self.tty else ""
            text += f" epoch {done}/{epochs} {bar}".rstrip()
        elif reason and reason != phase:
            text += f" ({reason})"
        return text

    def report(self, tr: dict[str, Any]) -> None:
        st = tr.get("status", {})
        self.kubectl("get", "trainingruns", "-n", self.ns, show=True)
        mlflow = st.get("mlflow") or {}
        self.say(f"MLflow run: {mlflow.get('url') or mlflow.get('runId')}")
        metrics = st.get("metrics") or {}
        for key in sorted(metrics):
            self.say(f"   {key:<22} {metrics[key]}")
        self.say(f"Registered model version: {st.get('modelVersion') or '(none: rule not met)'}")
        if st.get("phase") != "Succeeded":
            raise DemoError(f"TrainingRun ended {st.get('phase')}: {st.get('reason')} {st.get('message', '')}")

    def replicas(self) -> dict[str, int]:
        out = {}
        for kind in ("statefulset", "deployment"):
            items = json.loads(self.kubectl("get", kind, "-n", self.ns, "-o", "json"))["items"]
            for item in items:
                out[f"{kind}/{item['metadata']['name']}"] = int(item["spec"].get("replicas") or 0)
        return out

    def platform_pods(self) -> list[str]:
        out = self.kubectl("get", "pods", "-n", self.ns, "-o", "name",
                           "-l", "app.kubernetes.io/name in (mysql,minio,mlflow,notebook)")
        return out.split()

    def power(self, state: str) -> None:
        self.kubectl("patch", "powerschedule", POWER, "-n", self.ns, "--type=merge",
                     "-p", json.dumps({"spec": {"state": state}}), show=True)
        want = "Off" if state == "off" else "On"
        self.wait(lambda: self.get("powerschedule", POWER).get("status", {}).get("state") == want, 600,
                  f"PowerSchedule {want}")
        self.kubectl("get", "powerschedule", POWER, "-n", self.ns, show=True)

    def platform_switch(self) -> None:
        before = self.replicas()
        self.power("off")
        self.wait(lambda: not self.platform_pods(), 120, "the platform's pods to stop")
        self.kubectl("get", "deployments,statefulsets", "-n", self.ns, show=True)
        url = self.mlflow_url
        self.say(f"MLflow at {url}: {'reachable' if mlflow_up(url) else 'unreachable (asleep)'}")
        self.power("on")
        after = self.replicas()
        self.kubectl("get", "deployments,statefulsets", "-n", self.ns, show=True)
        self.say(f"MLflow at {url}: {'reachable' if mlflow_up(url) else 'unreachable'}")
        same = before == after
        self.say(f"Replica counts restored exactly: {'yes' if same else 'NO'} {after}")
        if not same:
            raise DemoError(f"replicas differ after wake: before {before}, after {after}")


def mlflow_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_all(demo: Demo, count: int, timeout: float) -> dict[str, Any]:
    """Steps 2-6 on a running bed; returns the finished TrainingRun. Raises DemoError."""
    demo.step(2, f"Platform in namespace {demo.ns}: MySQL -> MinIO -> MLflow (manifests/platform)")
    demo.start_platform()
    demo.step(3, "Dataset: scikit-learn digits 0/1/2 as cat/dog/other, in the course's S3 layout")
    demo.upload_dataset(count)
    demo.step(4, "Operator (manifests/operator) on its own ServiceAccount")
    demo.start_operator()
    demo.step(5, "TrainingRun + PowerSchedule (manifests/examples)")
    tr = demo.run_training(timeout)
    demo.report(tr)
    demo.step(6, "Platform off, then on (PowerSchedule manual switch)")
    demo.platform_switch()
    return tr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--count", type=int, default=531, help="digits images uploaded (all 0/1/2 digits: 531)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for the training")
    args = parser.parse_args(argv)
    paths, ports = BedPaths.default(), Ports.from_env()
    t0 = time.monotonic()
    demo = Demo(paths, ports, args.namespace)
    try:
        demo.step(1, "Local bed (real kube-apiserver, controller-manager, scheduler, etcd; kubelet + containerd)")
        cli.up(paths, ports)
        run_all(demo, args.count, args.timeout)
    except (DemoError, TimeoutError, RuntimeError) as exc:
        print(f"\ndemo failed: {exc}\nlogs: {paths.logs}/ and `kubectl logs -n {args.namespace} ...`",
              file=sys.stderr)
        return 1
    demo.step(7, f"Done in {time.monotonic() - t0:.0f} s. Everything is still running:")
    demo.say(f"   . .bed/env && kubectl get ktr,power,pods -n {args.namespace}")
    demo.say(f"   MLflow UI: {demo.mlflow_url}")
    url, token = demo.console_login()
    demo.say(f"   Web console: {url}/  (sign in with this token of ServiceAccount {CONSOLE_USER}, `edit` rights, "
             "valid 24 h; a new one: kubectl create token console-demo -n NS):")
    demo.say(f"   {token}")
    demo.say("   stop it all: make bed-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
