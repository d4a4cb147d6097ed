"""Thin wrapper over MlflowClient: the few calls the operator makes, each idempotent, with MLflow's
errors turned into two types the handlers map to phases (transient outage vs. a permanent problem)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow.entities import Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import naming

ACTIVE_STATUSES = frozenset({"RUNNING", "SCHEDULED"})
_ALREADY_EXISTS = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})


class MlflowUnavailable(Exception):
    """MLflow cannot be reached or answered 5xx/429: retry later."""


class TrackingError(Exception):
    """MLflow refused the request for a reason that retrying will not fix (e.g. a deleted experiment)."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str


@dataclasses.dataclass(frozen=True)
class RegisterRule:
    """spec.registerModel."""

    name: str
    metric: str
    threshold: float
    greater_is_better: bool = True
    artifact_path: str = "model"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> RegisterRule | None:
        if not spec:
            return None
        return cls(
            name=str(spec["name"]),
            metric=str(spec["metric"]),
            threshold=float(spec["threshold"]),
            greater_is_better=bool(spec.get("greaterIsBetter", True)),
            artifact_path=str(spec.get("artifactPath") or "model"),
        )

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.greater_is_better else value <= self.threshold


_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]+@")


def redact(text: str) -> str:
    """Hide credentials written into a URL (https://user:password@host): messages go to status and Events."""
    return _USERINFO_RE.sub(r"\1***@", text)


@contextlib.contextmanager
def _mapped_errors(what: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as exc:
        status = exc.get_http_status_code()
        text = redact(f"{what}: {exc.message}")
        if status >= 500 or status == 429:
            raise MlflowUnavailable(text) from exc
        raise TrackingError(text) from exc


class Tracker:
    """MLflow operations for the operator; one MlflowClient per tracking URI."""

    def __init__(self) -> None:
        self._clients: dict[str, MlflowClient] = {}
        # (uri, name) -> experiment id: one MLflow round trip less per run (the server is the bottleneck
        # when many runs are submitted at once). Dropped when a create in it fails.
        self._experiments: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def client(self, uri: str) -> MlflowClient:
        with self._lock:
            if uri not in self._clients:
                self._clients[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
            return self._clients[uri]

    def experiment_id(self, uri: str, name: str) -> str:
        """The id of experiment `name`, created if missing (a concurrent creator's experiment is reused)."""
        with self._lock:
            cached = self._experiments.get((uri, name))
        if cached is not None:
            return cached
        found = self._experiment_id(uri, name)
        with self._lock:
            self._experiments[(uri, name)] = found
        return found

    def forget_experiment(self, uri: str, name: str) -> None:
        with self._lock:
            self._experiments.pop((uri, name), None)

    def _experiment_id(self, uri: str, name: str) -> str:
        client = self.client(uri)
        with _mapped_errors(f"experiment {name!r}"):
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    return str(client.create_experiment(name))
                except MlflowException as exc:
                    if exc.error_code not in _ALREADY_EXISTS:
                        raise
                experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise TrackingError(f"experiment {name!r} vanished while being created")
        if experiment.lifecycle_stage != "active":
            raise TrackingError(f"experiment {name!r} is deleted in MLflow; restore it or use another name")
        return str(experiment.experiment_id)

    def find_run(self, uri: str, experiment_id: str, uid: str) -> RunInfo | None:
        """The run created earlier for TrainingRun `uid` (its tag is the idempotency key)."""
        with _mapped_errors("search for the TrainingRun's run"):
            runs = self.client(uri).search_runs(
                [experiment_id], filter_string=naming.uid_filter(uid), run_view_type=ViewType.ALL, max_results=10
            )
        if not runs:
            return None
        # Only one is ever created; should a second exist, always pick the same one.
        first = min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        return RunInfo(first.info.run_id, experiment_id, first.info.status)

    def lookup_run(self, uri: str, experiment: str, uid: str) -> RunInfo | None:
        """The TrainingRun's run if one was created, without creating anything."""
        with _mapped_errors(f"experiment {experiment!r}"):
            found = self.client(uri).get_experiment_by_name(experiment)
        if found is None:
            return None
        return self.find_run(uri, str(found.experiment_id), uid)

    def ensure_run(self, uri: str, experiment: str, uid: str, run_name: str, tags: Mapping[str, str], *,
                   search: bool = True) -> tuple[RunInfo, bool]:
        """(the TrainingRun's run, whether this call created it): found by its UID tag, else created with
        its tags. `search=False` skips the look-up, for a caller that knows no attempt was ever made."""
        experiment_id = self.experiment_id(uri, experiment)
        found = self.find_run(uri, experiment_id, uid) if search else None
        if found is not None:
            return found, False
        try:
            with _mapped_errors("create run"):
                # Tags travel with the create call: a run is never visible without its UID tag.
                run = self.client(uri).create_run(experiment_id, run_name=run_name, tags=dict(tags))
        except TrackingError:
            # Perhaps the cached experiment was deleted meanwhile: look again (recreated, or a clear
            # "deleted" error) before reporting anything.
            self.forget_experiment(uri, experiment)
            if self.experiment_id(uri, experiment) == experiment_id:
                raise
            return self.ensure_run(uri, experiment, uid, run_name, tags, search=search)
        return RunInfo(run.info.run_id, experiment_id, run.info.status), True

    def log_params(self, uri: str, run_id: str, params: Mapping[str, str], *, fresh: bool) -> None:
        """Log the params the run lacks (`fresh`: the run was just created, it lacks all of them)."""
        client = self.client(uri)
        logged: dict[str, str] = {}
        if not fresh:
            with _mapped_errors("read run"):
                logged = dict(client.get_run(run_id).data.params)
        missing = [Param(k, v) for k, v in params.items() if k not in logged]
        if missing:
            with _mapped_errors("log params"):
                client.log_batch(run_id, params=missing)

    def status(self, uri: str, run_id: str) -> str:
        with _mapped_errors("read run status"):
            return str(self.client(uri).get_run(run_id).info.status)

    def terminate(self, uri: str, run_id: str, status: str) -> bool:
        """Set a final status unless the trainer already did; True if this call set it."""
        client = self.client(uri)
        with _mapped_errors(f"set run status {status}"):
            if client.get_run(run_id).info.status not in ACTIVE_STATUSES:
                return False
            client.set_terminated(run_id, status=status)
        return True

    def metrics(self, uri: str, run_id: str) -> dict[str, float]:
        """Latest value of each metric."""
        with _mapped_errors("read metrics"):
            return {k: float(v) for k, v in self.client(uri).get_run(run_id).data.metrics.items()}

    def epochs_done(self, uri: str, run_id: str, metrics: Mapping[str, float]) -> int:
        """Epochs completed: distinct steps of the `epoch` metric, else of `loss`, else of any metric
        (Keras autolog and the stand-in trainer log one step per epoch)."""
        key = next((k for k in ("epoch", "loss") if k in metrics), min(metrics, default=None))
        if key is None:
            return 0
        with _mapped_errors("read metric history"):
            history = self.client(uri).get_metric_history(run_id, key)
        return len({m.step for m in history})

    def register(self, uri: str, run_id: str, experiment_id: str, rule: RegisterRule) -> str:
        """Register the run's model as a new version of `rule.name` (once per run); the version number."""
        client = self.client(uri)
        with _mapped_errors(f"register model {rule.name!r}"):
            for version in client.search_model_versions(f"name = '{_quote(rule.name)}'"):
                if version.run_id == run_id:
                    return str(version.version)
            try:
                client.create_registered_model(rule.name)
            except MlflowException as exc:
                if exc.error_code not in _ALREADY_EXISTS:
                    raise
            source, model_id = f"runs:/{run_id}/{rule.artifact_path}", None
            # MLflow 3 logs models as LoggedModels; link the version to it when there is one.
            for model in client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=f"name = '{_quote(rule.artifact_path)}'"
            ):
                if model.source_run_id == run_id:
                    source, model_id = f"models:/{model.model_id}", model.model_id
                    break
            version = client.create_model_version(
                rule.name, source, run_id=run_id, model_id=model_id, await_creation_for=0
            )
        return str(version.version)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
