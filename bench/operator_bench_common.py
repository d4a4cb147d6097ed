"""Shared by the operator benches: the bed (the tests' `Bed`), namespaces where no pod can start, the operator
process (the integration tests' `Operator`), TrainingRun bursts, a Job watcher, RSS, CPU and profiles.

Reuses the test helpers in `tests/` rather than copying them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests` (Bed, Operator) lives at the repo root
    sys.path.insert(0, str(REPO))

from kto_bed.cli import ORDER_DOWN  # noqa: E402  (after the path set-up above)
from kubernetes import client  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from tests.conftest import Bed  # noqa: E402
from tests.helpers import STANDIN_IMAGE, sleep_command  # noqa: E402
from tests.integration.operator_fixtures import Operator  # noqa: E402

__all__ = ["Operator"]

GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "trainingruns"
RESULTS = REPO / ".bed" / "bench"


class JsonJobWatcher(threading.Thread):
    """Records when each Job of a namespace is first seen. Reads the watch stream as raw JSON lines:
    deserialising 1,000s of V1Job models cost the bench a quarter of the machine's CPU during a burst, CPU
    taken from what it measures."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        listed = json.loads(self.batch.list_namespaced_job(self.namespace, _preload_content=False).data)
        version = listed["metadata"]["resourceVersion"]
        self.ready.set()
        while not self.stop.is_set():
            resp = self.batch.list_namespaced_job(self.namespace, watch=True, resource_version=version,
                                                  timeout_seconds=5, allow_watch_bookmarks=True,
                                                  _preload_content=False)
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    meta = event["object"]["metadata"]
                    version = meta.get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        with self.lock:
                            self.seen.setdefault(meta["name"], time.monotonic())
            resp.release_conn()

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def bed_env() -> dict[str, str]:
    """The `export KEY=value` lines of .bed/env (KUBECONFIG, MLflow, S3)."""
    path = REPO / ".bed" / "env"
    if not path.exists():
        sys.exit("no .bed/env: start the bed first (make bed)")
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank value at quantile q of the samples."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def trainingrun(name: str, experiment: str, seconds: float = 0.0) -> dict[str, Any]:
    """The cheapest real TrainingRun: the test-only non-root trainer image, sleeping `seconds` and exiting 0
    (no MLflow traffic from the pod: the operator alone creates and closes the MLflow run)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name},
            "spec": {"image": STANDIN_IMAGE, "command": sleep_command(seconds), "experiment": experiment,
                     "parameters": {"epochs": 1}}}


def open_bed() -> Bed:
    """The running bed as the tests see it (never starts or stops it)."""
    from kto_bed.paths import k8s_bin
    from kto_bed.services import ARTIFACT_BUCKET

    env = bed_env()
    env["PATH"] = f"{k8s_bin('kubectl').parent}{os.pathsep}{os.environ['PATH']}"
    return Bed(repo=REPO, env=env, kubeconfig=Path(env["KUBECONFIG"]), artifact_bucket=ARTIFACT_BUCKET)


def apply_crds(bed: Bed) -> None:
    for crd in ("crds/trainingrun.yaml", "crds/powerschedule.yaml"):
        bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / crd))
    bed.kubectl("wait", "--for=condition=Established", "crd/trainingruns.kto.dev", "--timeout=60s")


def poll(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class BenchNamespace:
    """A fresh namespace; `no_pods` adds a ResourceQuota of 0 pods, so Jobs are created but no pod ever
    runs (the machine stays calm: nothing for the scheduler or the node)."""

    def __init__(self, bed: Bed, prefix: str, no_pods: bool) -> None:
        self.bed = bed
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        api = bed.api()
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core.create_namespace({"metadata": {"name": self.name, "labels": {"kto.dev/bench": "true"}}})
        if no_pods:
            self.core.create_namespaced_resource_quota(
                self.name, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
            poll(lambda: (self.core.read_namespaced_resource_quota("no-pods", self.name).status.hard or {}),
                 60, "the quota's status")

    def run_names(self) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL)["items"]
        return [i["metadata"]["name"] for i in items]

    def gone(self) -> bool:
        """True once the API server no longer has the namespace."""
        try:
            self.core.read_namespace(self.name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def delete(self) -> None:
        """Release our finalizers by hand (the operator is stopped first), drop the namespace and wait until it is
        gone: its Jobs and runs, collected in the background, would load the next phase."""
        def release(name: str) -> None:
            with contextlib.suppress(ApiException):
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, name,
                                                           {"metadata": {"finalizers": None}})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(release, self.run_names()))
        try:
            self.core.delete_namespace(self.name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
        started = time.monotonic()
        poll(self.gone, 600, f"namespace {self.name} to be deleted", interval=1.0)
        print(f"(namespace {self.name} deleted in {time.monotonic() - started:.1f} s)")


def submit_runs(custom: client.CustomObjectsApi, namespace: str, names: Iterable[str], experiment: str,
                workers: int, body: Callable[[str, str], dict[str, Any]] = trainingrun) -> dict[str, float]:
    """Create the TrainingRuns with `workers` threads; name -> monotonic time just before its request."""
    submitted: dict[str, float] = {}

    def submit(name: str) -> None:
        submitted[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(name, experiment))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(submit, names))
    return submitted


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (10^6 bytes, as `ps` and the targets count)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / 1e6
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def start_operator(bed: Bed, namespace: str, log_dir: Path, **env: str) -> Operator:
    log_dir.mkdir(parents=True, exist_ok=True)
    return Operator(bed, namespace, log_dir, env=env).start()


def settle(op: Operator, seconds: float) -> tuple[float, float]:
    """Let the operator idle `seconds` (its timers keep ticking), then its (RSS, HWM)."""
    time.sleep(seconds)  # a measurement window, not an assertion
    assert op.proc is not None and op.alive(), f"operator died:\n{op.log()[-3000:]}"
    return rss_mb(op.proc.pid)


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


class Profiler:
    """py-spy sampling a running process (collapsed stacks), summarised as the top self and total times."""

    def __init__(self, pid: int, out: Path, rate: int = 50) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        pyspy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen([str(pyspy), "record", "--pid", str(pid), "--rate", str(rate), "--format",
                                      "raw", "--output", str(out), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def summary(self, top: int = 15) -> dict[str, list[tuple[str, float]]]:
        return summarise_collapsed(self.out.read_text().splitlines() if self.out.exists() else [], top)


def summarise_collapsed(lines: list[str], top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Percent of samples per function: `self` (on top of the stack), `total` (anywhere on it)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return {"self": [], "total": []}
    def pct(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in counter.most_common(top)]
    return {"self": pct(own), "total": pct(total)}


def _short(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "kto_operator/", "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1] if marker != "kto_operator/" else "kto_operator/" + where.split(
                marker, 1)[1]
            break
    return f"{name} ({where})"


def print_profile(summary: dict[str, list[tuple[str, float]]]) -> None:
    for kind in ("self", "total"):
        print(f"  profile, % of samples ({kind}):")
        for name, pct in summary[kind]:
            print(f"    {pct:5.1f}  {name}")


@contextlib.contextmanager
def operator_running(bed: Bed, namespace: str, log_dir: Path, **env: str) -> Iterator[Operator]:
    op = start_operator(bed, namespace, log_dir, **env)
    try:
        yield op
    finally:
        op.stop()


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))


def load_note() -> str:
    return f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"


# --- where the machine's time goes during a phase ------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            rest = stat.read_text().rsplit(")", 1)[1].split()
            children[int(rest[1])].append(int(stat.parent.name))
    return children


def _tree(pid: int, children: Mapping[int, list[int]], apart: set[int]) -> list[int]:
    """pid and its descendants (MLflow's server runs uvicorn workers under it), without those in `apart` and
    theirs (processes measured on their own: the operator is this bench's child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c in children.get(p, []) if c not in apart)
    return out


class CpuMeter:
    """CPU seconds used by the bed's daemons and the operator between start() and stop()."""

    def __init__(self, operator_pid: int | None = None) -> None:
        pids_dir = REPO / ".bed" / "pids"
        self.pids: dict[str, int] = {}
        for name in ORDER_DOWN:  # the bed's daemons, as the bed itself lists them
            with contextlib.suppress(OSError, ValueError):
                self.pids[name] = int((pids_dir / f"{name}.pid").read_text().split()[0])
        if operator_pid is not None:
            self.pids["operator"] = operator_pid
        self.pids["this bench"] = os.getpid()
        self.before: dict[str, float] = {}
        self.started = 0.0

    def _sample(self) -> dict[str, float]:
        out, children, measured = {}, _children(), set(self.pids.values())
        for name, pid in self.pids.items():
            total = 0.0
            for p in _tree(pid, children, measured - {pid}):
                with contextlib.suppress(OSError):
                    total += _cpu_seconds(p)
            out[name] = total
        return out

    def start(self) -> None:
        self.started, self.before = time.monotonic(), self._sample()

    def stop(self) -> dict[str, Any]:
        after, wall = self._sample(), time.monotonic() - self.started
        used = {k: round(after[k] - self.before.get(k, 0.0), 1) for k in after}
        machine = sum(used.values())
        return {"wall_s": round(wall, 1), "cpu_s": used, "busy_cores": round(machine / wall, 2) if wall else 0.0}


def apiserver_requests(bed: Bed) -> collections.Counter[str]:
    """apiserver_request_total by 'VERB resource[/subresource]' (the API server's own count)."""
    text = bed.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    counts: collections.Counter[str] = collections.Counter()
    pattern = re.compile(r'^apiserver_request_total\{(.*)\} ([0-9.e+]+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if not labels.get("resource"):
            continue
        sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
        key = f"{labels['verb']} {labels['resource']}{sub}"
        counts[key] += int(float(m.group(2)))
    return counts


def request_delta(before: collections.Counter[str], after: collections.Counter[str], per: int) -> dict[str, float]:
    """Requests per unit of work (e.g. per TrainingRun), largest first."""
    delta = after - before
    return {k: round(v / per, 2) for k, v in delta.most_common(15)}
