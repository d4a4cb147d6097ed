"""The few MLflow calls the operator makes, each idempotent, over MLflow's REST API (`mlflow_rest`: the
operator never imports mlflow), with MLflow's errors turned into two types the handlers map to phases
(transient outage vs. a permanent problem)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from . import naming
from .mlflow_rest import ClientOptions, MlflowUnavailable, RestClient, TrackingError, redact

__all__ = ["ACTIVE_STATUSES", "ClientOptions", "Closed", "MlflowUnavailable", "RegisterRule", "RunInfo", "Tracker",
           "TrackingError", "redact"]

ACTIVE_STATUSES = frozenset({"RUNNING", "SCHEDULED"})
_ALREADY_EXISTS = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})
# Server-side limits of MLflow: params per log-batch, metric points per get-history page.
_PARAMS_PER_BATCH = 100
_HISTORY_PAGE = 25000


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str


@dataclasses.dataclass(frozen=True)
class Closed:
    """What Tracker.terminate did: set the final status (False: the trainer had, or it was set already), and why
    params were refused ("" when none was)."""

    status_set: bool
    params_refused: str = ""


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


class Tracker:
    """MLflow operations for the operator's async handlers; one REST client (and connection pool) per tracking
    URI. Used from one event loop, without locks: nothing is awaited between reading and writing its dicts.
    `close` when done."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self._options = options or ClientOptions()
        self._clients: dict[str, RestClient] = {}
        # (uri, name) -> experiment id: one MLflow round trip less per run (the server is the bottleneck
        # when many runs are submitted at once). Dropped when a create in it fails.
        self._experiments: dict[tuple[str, str], str] = {}

    def client(self, uri: str) -> RestClient:
        """The client of `uri`; its credentials are read from the environment when it is first needed."""
        if uri not in self._clients:
            self._clients[uri] = RestClient(uri, self._options, os.environ)
        return self._clients[uri]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def experiment_id(self, uri: str, name: str) -> str:
        """The id of experiment `name`, created if missing (a concurrent creator's experiment is reused)."""
        cached = self._experiments.get((uri, name))
        if cached is not None:
            return cached
        found = await self._experiment_id(uri, name)
        self._experiments[(uri, name)] = found
        return found

    def forget_experiment(self, uri: str, name: str) -> None:
        self._experiments.pop((uri, name), None)

    async def _experiment_id(self, uri: str, name: str) -> str:
        what = f"experiment {name!r}"
        experiment = await self._experiment(uri, name)
        if experiment is None:
            try:
                created = await self.client(uri).post("experiments/create", {"name": name}, what)
                return str(created["experiment_id"])
            except TrackingError as exc:
                if exc.error_code not in _ALREADY_EXISTS:
                    raise
            experiment = await self._experiment(uri, name)
            if experiment is None:
                raise TrackingError(f"experiment {name!r} vanished while being created")
        if experiment.get("lifecycle_stage") != "active":
            raise TrackingError(f"experiment {name!r} is deleted in MLflow; restore it or use another name")
        return str(experiment["experiment_id"])

    async def _experiment(self, uri: str, name: str) -> dict[str, Any] | None:
        """Experiment `name` (deleted ones too), or None if there is none."""
        try:
            found = await self.client(uri).get("experiments/get-by-name", {"experiment_name": name},
                                               f"experiment {name!r}")
        except TrackingError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return dict(found["experiment"])

    async def find_run(self, uri: str, experiment_id: str, uid: str) -> RunInfo | None:
        """The run created earlier for TrainingRun `uid` (its tag is the idempotency key)."""
        query = {"experiment_ids": [experiment_id], "filter": naming.uid_filter(uid), "run_view_type": "ALL",
                 "max_results": 10}
        found = await self.client(uri).post("runs/search", query, "search for the TrainingRun's run")
        runs = [r["info"] for r in found.get("runs", [])]
        if not runs:
            return None
        # Only one is ever created; should a second exist, always pick the same one.
        first = min(runs, key=lambda r: (int(r.get("start_time") or 0), str(r["run_id"])))
        return RunInfo(str(first["run_id"]), experiment_id, str(first["status"]))

    async def lookup_run(self, uri: str, experiment: str, uid: str) -> RunInfo | None:
        """The TrainingRun's run if one was created, without creating anything."""
        found = await self._experiment(uri, experiment)
        if found is None:
            return None
        return await self.find_run(uri, str(found["experiment_id"]), uid)

    async def ensure_run(self, uri: str, experiment: str, uid: str, run_name: str, tags: Mapping[str, str], *,
                         search: bool = True) -> tuple[RunInfo, bool]:
        """(the TrainingRun's run, whether this call created it): found by its UID tag, else created with
        its tags. `search=False` skips the look-up, for a caller that knows no attempt was ever made."""
        experiment_id = await self.experiment_id(uri, experiment)
        found = await self.find_run(uri, experiment_id, uid) if search else None
        if found is not None:
            return found, False
        # Tags travel with the create call: a run is never visible without its UID tag. user_id as
        # MlflowClient sends it (a deprecated field the server still stores).
        body = {"experiment_id": experiment_id, "run_name": run_name, "start_time": _now_ms(),
                "user_id": tags.get("mlflow.user", "unknown"), "tags": _pairs(tags)}
        try:
            run = (await self.client(uri).post("runs/create", body, "create run"))["run"]["info"]
        except TrackingError:
            # Perhaps the cached experiment was deleted meanwhile: look again (recreated, or a clear
            # "deleted" error) before reporting anything.
            self.forget_experiment(uri, experiment)
            if await self.experiment_id(uri, experiment) == experiment_id:
                raise
            return await self.ensure_run(uri, experiment, uid, run_name, tags, search=search)
        return RunInfo(str(run["run_id"]), experiment_id, str(run["status"])), True

    async def set_tag(self, uri: str, run_id: str, key: str, value: str) -> None:
        await self.client(uri).post("runs/set-tag", {"run_id": run_id, "key": key, "value": value}, f"set tag {key}")

    async def terminate(self, uri: str, run_id: str, status: str, replace: frozenset[str] = frozenset(),
                        params: Mapping[str, str] | None = None) -> Closed:
        """Log the `params` the run lacks (a trainer logs its own as it starts: these are for one that does not, or
        never ran; a value it logged in another spelling stands), then set a final status unless the trainer
        already did (a final status in `replace` is overwritten). A param MLflow refuses never keeps the run open."""
        what = f"set run status {status}"
        run = await self._run(uri, run_id, what)
        logged = _values(run.get("data", {}).get("params", []))
        refused = await self._log_params(uri, run_id, {k: v for k, v in (params or {}).items() if k not in logged})
        current = run["info"]["status"]
        if current == status or current not in ACTIVE_STATUSES | replace:
            return Closed(False, refused)
        await self.client(uri).post("runs/update", {"run_id": run_id, "status": status, "end_time": _now_ms()}, what)
        return Closed(True, refused)

    async def _log_params(self, uri: str, run_id: str, params: Mapping[str, str]) -> str:
        """Log `params` in batches; a batch MLflow refuses, one param at a time: why those refused were ("" for
        none)."""
        refused: list[str] = []
        items = _pairs(params)
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            batch = items[start:start + _PARAMS_PER_BATCH]
            try:
                await self.client(uri).post("runs/log-batch", {"run_id": run_id, "params": batch}, "log params")
            except TrackingError:
                for item in batch:
                    try:
                        await self.client(uri).post("runs/log-batch", {"run_id": run_id, "params": [item]},
                                                    f"log param {item['key']}")
                    except TrackingError as exc:
                        refused.append(str(exc))
        return "; ".join(refused)

    async def metrics(self, uri: str, run_id: str) -> dict[str, float]:
        """Latest value of each metric."""
        latest = (await self._run(uri, run_id, "read metrics")).get("data", {}).get("metrics", [])
        # float(): MLflow writes NaN and infinities as strings.
        return {str(m["key"]): float(m["value"]) for m in latest}

    async def epochs_done(self, uri: str, run_id: str, metrics: Mapping[str, float]) -> int:
        """Epochs completed: distinct steps of the `epoch` metric, else of `loss`, else of any metric
        (Keras autolog and the stand-in trainer log one step per epoch)."""
        key = next((k for k in ("epoch", "loss") if k in metrics), min(metrics, default=None))
        if key is None:
            return 0
        return len({int(m.get("step") or 0) async for m in self._history(uri, run_id, key)})

    async def history(self, uri: str, run_id: str, key: str) -> list[dict[str, Any]]:
        """Every logged value of one metric (the console's chart)."""
        return [m async for m in self._history(uri, run_id, key)]

    async def register(self, uri: str, run_id: str, experiment_id: str, rule: RegisterRule) -> str:
        """Register the run's model as a new version of `rule.name` (once per run); the version number."""
        client, what = self.client(uri), f"register model {rule.name!r}"
        versions = _pages(client, "GET", "model-versions/search", {"filter": f"name = '{_quote(rule.name)}'"},
                          "model_versions", what)
        async for version in versions:
            if version.get("run_id") == run_id:
                return str(version["version"])
        try:
            await client.post("registered-models/create", {"name": rule.name}, what)
        except TrackingError as exc:
            if exc.error_code not in _ALREADY_EXISTS:
                raise
        body: dict[str, Any] = {"name": rule.name, "source": f"runs:/{run_id}/{rule.artifact_path}", "run_id": run_id}
        # MLflow 3 logs models as LoggedModels; link the version to it when there is one.
        query = {"experiment_ids": [experiment_id], "filter": f"name = '{_quote(rule.artifact_path)}'"}
        async for model in _pages(client, "POST", "logged-models/search", query, "models", what):
            info = model.get("info", {})
            if info.get("source_run_id") == run_id:
                body.update(source=f"models:/{info['model_id']}", model_id=info["model_id"])
                break
        return str((await client.post("model-versions/create", body, what))["model_version"]["version"])

    async def _run(self, uri: str, run_id: str, what: str) -> dict[str, Any]:
        return dict((await self.client(uri).get("runs/get", {"run_id": run_id}, what))["run"])

    def _history(self, uri: str, run_id: str, key: str) -> AsyncIterator[dict[str, Any]]:
        params = {"run_id": run_id, "metric_key": key, "max_results": str(_HISTORY_PAGE)}
        return _pages(self.client(uri), "GET", "metrics/get-history", params, "metrics", "read metric history")


async def _pages(client: RestClient, method: str, endpoint: str, query: Mapping[str, Any], field: str,
                 what: str) -> AsyncIterator[dict[str, Any]]:
    """The items of every page of a search, following next_page_token (lazily: a caller may stop early)."""
    token = ""
    while True:
        page_query = {**query, "page_token": token} if token else dict(query)
        page = await (client.get(endpoint, page_query, what) if method == "GET"
                      else client.post(endpoint, page_query, what))
        for item in page.get(field, []):
            yield item
        token = str(page.get("next_page_token") or "")
        if not token:
            return


def _pairs(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in values.items()]


def _values(pairs: list[dict[str, Any]]) -> dict[str, str]:
    return {str(p["key"]): str(p.get("value", "")) for p in pairs}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
