"""Runs one bound pod: volumes, init containers in order, then the containers, and reports status."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from .containers import ContainerRun, now_iso
from .images import LiveImageMap, container_argv
from .podenv import EnvError, Lookup, container_env
from .probes import ProbeState, run_probe
from .volumes import TokenFn, VolumeError, materialise, mounts_for

log = logging.getLogger("kto_bed.pod")

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
PULL_BACKOFF_AFTER = 3.0  # seconds in ErrImagePull before ImagePullBackOff, as the kubelet alternates
TICK = 0.2


@dataclass(frozen=True)
class NodeContext:
    """What a pod runner needs from its node agent."""

    node_name: str
    images: LiveImageMap
    pods_root: Path
    pvc_root: Path
    base_env: dict[str, str]  # PATH, marker, KUBERNETES_SERVICE_*
    lookup: Lookup
    token: TokenFn
    kubeconfig_for_token: Callable[[str, Path], None]  # (token file, kubeconfig path)
    patch_status: Callable[[str, str, dict[str, Any]], None]
    finalize: Callable[[str, str, str], None]  # namespace, name, uid


class PodRunner(threading.Thread):
    def __init__(self, ctx: NodeContext, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.ctx = ctx
        self.pod = pod
        self.ns, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = ctx.pods_root / f"{self.ns}_{self.pod_name}_{self.uid}"
        self.deleting = threading.Event()
        # Set when the agent itself stops: its processes die with it but the pod is not finished, so no
        # status is reported (a kubelet restart does not end pods either).
        self.agent_stopping = threading.Event()
        self.lock = threading.Lock()
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.init = [ContainerRun(c, self.dir / "logs" / f"{c['name']}.log") for c in
                     spec.get("initContainers") or []]
        self.main = [ContainerRun(c, self.dir / "logs" / f"{c['name']}.log") for c in spec["containers"]]
        self.start_time = now_iso()
        self.initialized = not self.init
        self.pod_reason: str | None = None
        self.pod_message: str | None = None
        self.finished = False
        self.volumes: dict[str, Path] = {}
        self._last_sent: dict[str, Any] | None = None
        self._pull_since: dict[str, float] = {}

    # -- called by the agent's watch thread --------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def log_path(self, container: str) -> Path:
        return self.dir / "logs" / f"{container}.log"

    # -- the pod's life ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: runner crashed", self.ns, self.pod_name)
            self.pod_reason, self.pod_message = "NodeAgentError", "the bed's node agent failed; see its log"
            self.finished = True
            self._report(force=True)
        # The final status must reach the apiserver even if it was away when the pod finished.
        while not self.deleting.is_set() and not self._report(force=True):
            self.deleting.wait(1.0)
        if not self.deleting.is_set():
            self.deleting.wait()
        self._terminate_all()
        self.ctx.finalize(self.ns, self.pod_name, self.uid)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._report(force=True)
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        t0 = time.monotonic()
        while not self.deleting.is_set():
            if not self.volumes and not self._prepare_volumes():
                self._sleep()
                continue
            if deadline is not None and time.monotonic() - t0 > float(deadline):
                self._deadline_exceeded()
                return
            if not self.initialized:
                self._step_init()
            else:
                self._step_main()
            self._report()
            if self.finished:
                return
            self._sleep()

    def _sleep(self) -> None:
        self.deleting.wait(TICK)

    def _prepare_volumes(self) -> bool:
        try:
            self.volumes = materialise(self.pod, self.dir, self.ctx.pvc_root, self.ctx.lookup, self.ctx.token)
            return True
        except (VolumeError, ApiException, urllib3.exceptions.HTTPError) as exc:
            for c in self.init + self.main:
                c.fail_to_start("ContainerCreating", f"MountVolume.SetUp failed: {exc}")
            self._report()
            return False

    def _launch(self, c: ContainerRun) -> None:
        image = c.spec.get("image", "")
        spec = self.ctx.images.resolve(image)
        now = time.monotonic()
        if spec is None:
            since = self._pull_since.setdefault(c.name, now)
            reason = "ErrImagePull" if now - since < PULL_BACKOFF_AFTER else "ImagePullBackOff"
            msg = (f'Failed to pull image "{image}": the bed maps no local program to this image '
                   f"(see .bed/images.yaml)")
            if reason == "ImagePullBackOff":
                msg = f'Back-off pulling image "{image}": ' + msg
            c.fail_to_start(reason, msg)
            return
        try:
            env_vars = container_env(self.pod, c.spec, self.ctx.lookup)
        except EnvError as exc:
            c.fail_to_start("CreateContainerConfigError", str(exc))
            return
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            # The apiserver is away (restart): tried again on the next tick, as a kubelet would.
            c.fail_to_start("CreateContainerConfigError", f"cannot read the pod's config: {exc}")
            return
        mounts = mounts_for(c.spec, self.volumes)
        env = dict(self.ctx.base_env)
        env.update(spec.env)
        env["PATH"] = os.pathsep.join([*spec.path, env["PATH"]])
        env["HOSTNAME"] = self.pod_name
        env["HOME"] = str(self.dir / "home")
        (self.dir / "home").mkdir(exist_ok=True)
        token_dir = self._token_dir(c)
        if token_dir is not None:
            kc = self.dir / "kubeconfig"
            self.ctx.kubeconfig_for_token(str(token_dir / "token"), kc)
            env["KUBECONFIG"] = str(kc)
        env.update({k: mounts.rewrite(v) for k, v in env_vars.items()})
        from .podenv import expand

        argv = [mounts.rewrite(expand(a, env)) for a in container_argv(c.spec, spec)]
        if not argv:
            c.fail_to_start("CreateContainerError", "no command specified")
            return
        cwd = Path(mounts.rewrite(c.spec["workingDir"])) if c.spec.get("workingDir") else self.dir / "home"
        cwd.mkdir(parents=True, exist_ok=True)
        exe = shutil.which(argv[0], path=env["PATH"])
        if exe is None:
            c.fail_to_start("RunContainerError",
                            f'exec: "{argv[0]}": executable file not found in $PATH')
            return
        c.start([exe, *argv[1:]], env, cwd)
        c.env = env  # type: ignore[attr-defined]  # kept for exec probes
        c.cwd = str(cwd)  # type: ignore[attr-defined]

    def _token_dir(self, c: ContainerRun) -> Path | None:
        for m in c.spec.get("volumeMounts") or []:
            if m["mountPath"].rstrip("/") == "/var/run/secrets/kubernetes.io/serviceaccount":
                host = self.volumes.get(m["name"])
                if host is not None and (host / "token").exists():
                    return host
        return None

    def _may_restart(self, c: ContainerRun) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and c.exit_code != 0

    def _restart_later(self, c: ContainerRun) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** c.restart_count)
        c.archive_for_restart()
        c.next_start = time.monotonic() + delay
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:.0f}s restarting failed container={c.name} "
                                          f"pod={self.pod_name}"}}

    def _step_init(self) -> None:
        for c in self.init:
            if c.exit_code == 0 and "terminated" in c.state:
                continue
            if c.proc is None:
                if time.monotonic() >= c.next_start:
                    self._launch(c)
                return
            if c.poll():
                if c.exit_code == 0:
                    continue
                if self.restart_policy == "Never":
                    self.finished = True
                    return
                self._restart_later(c)
            return
        self.initialized = True

    def _step_main(self) -> None:
        now = time.monotonic()
        for c in self.main:
            if c.proc is None:
                if "terminated" not in c.state and now >= c.next_start:
                    self._launch(c)
                continue
            if c.poll():
                if self._may_restart(c):
                    self._restart_later(c)
                continue
            self._probe(c, now)
        if all("terminated" in c.state for c in self.main):
            self.finished = True

    def _probe(self, c: ContainerRun, now: float) -> None:
        env = getattr(c, "env", {})
        cwd = getattr(c, "cwd", str(self.dir))
        if not c.started_ok and c.startup is not None:
            if c.startup.due(now):
                c.startup.record(run_probe(c.startup.spec, c.spec, env, cwd), now)
            if c.startup.result is True:
                c.started_ok = True
            elif c.startup.result is False:
                self._kill_unhealthy(c, "startup")
            return
        probe: ProbeState | None
        for probe in (c.readiness, c.liveness):
            if probe is not None and probe.due(now):
                ok = run_probe(probe.spec, c.spec, env, cwd)
                probe.record(ok, now)
                if probe is c.readiness and not ok and probe.result is not None:
                    probe.result = probe.failures < int(probe.spec.get("failureThreshold", 3))
        if c.liveness is not None and c.liveness.result is False:
            self._kill_unhealthy(c, "liveness")

    def _kill_unhealthy(self, c: ContainerRun, which: str) -> None:
        log.info("pod %s/%s container %s failed its %s probe", self.ns, self.pod_name, c.name, which)
        c.killed_reason = "Error"
        c.stop(self._grace())

    def _deadline_exceeded(self) -> None:
        self._terminate_all()
        self.pod_reason = "DeadlineExceeded"
        self.pod_message = "Pod was active on the node longer than the specified deadline"
        self.finished = True
        self._report(force=True, phase="Failed")

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    def _terminate_all(self) -> None:
        grace = self._grace()
        running = [c for c in self.init + self.main if c.running]
        for c in running:
            c.kill(15)
        deadline = time.monotonic() + grace
        for c in running:
            c.stop(max(0.0, deadline - time.monotonic()))

    # -- status -------------------------------------------------------------------------------
    def phase(self) -> str:
        if self.pod_reason == "DeadlineExceeded":
            return "Failed"
        if not self.initialized:
            if self.restart_policy == "Never" and any(c.exit_code not in (None, 0) for c in self.init):
                return "Failed"
            return "Pending"
        states = [c.state for c in self.main]
        if all("terminated" in s for s in states):
            if any(s["terminated"]["exitCode"] != 0 for s in states):
                return "Failed"
            return "Succeeded"
        if any("running" in s for s in states) or any(c.restart_count for c in self.main):
            return "Running"
        return "Pending"

    def _report(self, *, force: bool = False, phase: str | None = None) -> bool:
        """Send the pod's status if it changed (or when forced); False when the apiserver refused it."""
        if self.agent_stopping.is_set():
            return True
        phase = phase or self.phase()
        images = {c["name"]: c.get("image", "") for c in self.pod["spec"].get("initContainers") or []}
        images.update({c["name"]: c.get("image", "") for c in self.pod["spec"]["containers"]})
        main_status = [c.status(images[c.name]) for c in self.main]
        ready = phase == "Running" and all(s["ready"] for s in main_status)
        t = now_iso()

        def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
            return {"type": kind, "status": "True" if ok else "False", "reason": reason}

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "reason": self.pod_reason, "message": self.pod_message,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", self.initialized, None if self.initialized else "ContainersNotInitialized"),
                cond("ContainersReady", ready, None if ready else "ContainersNotReady"),
                cond("Ready", ready, None if ready else "ContainersNotReady"),
                cond("PodScheduled", True),
            ],
            "containerStatuses": main_status,
        }
        if self.init:
            status["initContainerStatuses"] = [c.status(images[c.name]) for c in self.init]
        if not force and status == self._last_sent:
            return True
        sent = dict(status)
        for c in sent["conditions"]:
            c["lastTransitionTime"] = t
            c["lastProbeTime"] = None
        try:
            self.ctx.patch_status(self.ns, self.pod_name, {"status": sent})
            self._last_sent = status
            return True
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Retried: on the next tick while running, in a loop once finished.
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.pod_name, exc)
            return False
