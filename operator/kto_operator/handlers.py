"""kopf handlers of the TrainingRun operator. Thin: each one calls a function of `reconcile`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
from typing import Any

import kopf

from . import api, connection, context, deletion, diffbase, follow_requests, identity, naming, reconcile, sweep, views
from .metrics import shared as shared_metrics
from .power.gate import platform_ready
from .settings import OperatorSettings, SettingsError
from .tracking import ClientOptions, Tracker

TR = (naming.GROUP, naming.VERSION, naming.PLURAL)
POWER = (naming.GROUP, naming.VERSION, naming.POWER_PLURAL)
# Retry delay of a handler that failed on anything but a kopf.TemporaryError (in practice: the API server
# unreachable or restarting). Well under kopf's default of 60 s, which would leave statuses stale for a
# minute after the API server is back; and no longer than the sweep's intervals.
ERROR_BACKOFF = 5.0
CHILD_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
CHILD_LABELS = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
HALF = "trainingruns"  # this half's name among the users of the one API client (connection.shared)
# Our concurrent requests to the API server, both halves' handlers together (a request beyond waits for a free
# connection): a start holds one only for its Job creation and status write, most of it awaits MLflow. Each TLS
# connection keeps read buffers that the allocator does not give back, and more of them than the API server
# answers at once buy no throughput.
API_CONNECTIONS = 16


def _mlflow_options(ours: OperatorSettings) -> ClientOptions:
    # One pooled connection per handler slot: each slot awaits at most one MLflow call at a time.
    return ClientOptions(read_timeout=ours.mlflow_http_timeout, connect_retries=ours.mlflow_http_retries,
                         pool_size=ours.start_workers + ours.max_workers, credentials_for=ours.tracking_uri)


def _platform_gate(kube: api.Api) -> reconcile.PlatformGate:
    """The power half's `platform_ready` as a gate: a run starts once its namespace's platform is on."""

    async def gate(namespace: str) -> str | None:
        ready, reason = await platform_ready(namespace, kube)
        return None if ready else reason

    return gate


def watching(settings: kopf.OperatorSettings) -> None:
    """kopf's watch streams: restarted by the API server every 5 minutes, so that a silently dropped connection
    never freezes the operator (the client's timeout catches one the server cannot end). A quiet resource (no
    PowerSchedule in the namespace) gets no bookmarks: kopf's own inactivity limit would restart its watch
    every 70 s, a request each time for nothing the two timeouts above do not already cover."""
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = settings.watching.client_timeout
    # Only our Jobs and pods are streamed (server-side selection), not every pod of the namespace.
    settings.watching.label_selectors["batch", "v1", "jobs"] = CHILD_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = CHILD_SELECTOR


def queueing(settings: kopf.OperatorSettings) -> None:
    """kopf's worker of an object ends 1 s after the object's last event, not 5: in a burst, every new run's worker
    would otherwise outlive its handling by seconds, holding its event queue and state. A later event starts a new
    worker. No limit on the workers: kopf deadlocks at startup with more existing objects than its limit."""
    settings.queueing.idle_timeout = 1.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    """Build the operator's settings and collaborators once; tune kopf for namespace-only rights."""
    try:
        ours = OperatorSettings.from_env(os.environ, namespace=memo.get("namespace"))
    except SettingsError as exc:
        raise kopf.PermanentError(f"bad setting: {exc}") from exc  # exits instead of retrying forever
    # kopf's bookkeeping in `status.kopf` (both CRDs keep it): a handler that succeeds at once leaves nothing to
    # write there, and the start handler's status write carries the diff base (kto_operator.diffbase).
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    handled: dict[str, str] = {}
    settings.persistence.diffbase_storage = diffbase.StatusDiffBase(handled)
    settings.persistence.finalizer = naming.FINALIZER
    # No peering and no CRD scanning: both watch cluster-scoped objects a namespaced Role cannot read.
    # Peering only when asked for (`--peering NAME`: several replicas, one acting).
    if not memo.get("peering"):
        settings.peering.standalone = True
    else:
        settings.peering.lifetime = int(memo.get("peering_lifetime") or settings.peering.lifetime)
    settings.scanning.disabled = True
    settings.execution.max_workers = ours.max_workers
    queueing(settings)
    settings.posting.reporting_component = naming.MANAGED_BY
    settings.posting.level = logging.WARNING  # Events come from explicit kopf.info/warn, not from logs.
    watching(settings)
    # The API calls first: kopf retries this handler when one fails, and what follows them binds a port.
    kube = connection.shared(memo, api.Options(pool_size=API_CONNECTIONS), HALF)
    own = await identity.own_service_account(kube, (await api.connection_info()).token)
    ours = dataclasses.replace(ours, own_service_account=own)
    # Listed before kopf starts its watches: a run created later is one this process alone can have acted on.
    maybe_created = await context.unrecorded(kube, memo.get("namespace")) if settings.peering.standalone else set()
    metrics = shared_metrics(memo)
    try:
        metrics.serve(ours.metrics_port)
    except OSError as exc:
        raise kopf.PermanentError(f"metrics port {ours.metrics_port}: {exc}") from exc
    # The handlers' concurrency, bounded: starts apart (a burst of pod and Job events never delays Job
    # creation), follows of other runs; both await MLflow on the event loop.
    memo.trainingrun_starts = asyncio.Semaphore(ours.start_workers)
    memo.trainingrun_follows = asyncio.Semaphore(ours.max_workers)
    memo.trainingruns = reconcile.Context(settings=ours, kube=kube, tracker=Tracker(_mlflow_options(ours)),
                                          metrics=metrics, platform_gate=_platform_gate(kube),
                                          solo=settings.peering.standalone, handled=handled,
                                          maybe_created=maybe_created)
    memo.sweep = sweep.Sweep(kwargs["live_trainingruns"], _sweep_follow(memo, kwargs), kube,
                             _peering(settings, memo))
    memo.follow_requests = follow_requests.FollowRequests(memo.trainingrun_follows, _slotted_follow(memo, kwargs),
                                                         lambda: memo.sweep.context)
    memo.sweep_task = asyncio.create_task(memo.sweep.run(), name="sweep")
    memo.sweep_task.add_done_callback(_sweep_ended)
    logger.info("TrainingRun operator: tracking %s, namespace %s, metrics port %s, ServiceAccount %s",
                ours.tracking_uri, ours.namespace or "(all)", ours.metrics_port or "off",
                "/".join(own) if own else "(none: a user's credentials)")


def _sweep_ended(task: asyncio.Task[None]) -> None:
    """The sweep runs until the operator stops: its end otherwise is an error, said loudly."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).critical("the sweep stopped: no progress or resync until a restart",
                                             exc_info=task.exception())


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    """Stop the sweep and its follows, then close the MLflow connections and give the Kubernetes one back."""
    task: asyncio.Task[None] | None = memo.pop("sweep_task", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await memo.sweep.stop()
    requests: follow_requests.FollowRequests | None = memo.get("follow_requests")
    if requests is not None:
        await requests.stop()
    ctx: reconcile.Context | None = memo.get("trainingruns")
    if ctx is not None:
        await ctx.tracker.close()
        await connection.release(memo, HALF)


def _peering(settings: kopf.OperatorSettings, memo: Any) -> sweep.Peering | None:
    """The peering object kopf keeps its keep-alives in (kopf.run put its name and our priority in settings)."""
    if settings.peering.standalone:
        return None
    namespace = None if settings.peering.clusterwide else memo.get("namespace")
    return sweep.Peering(settings.peering.name, namespace, settings.peering.priority)


def _sweep_follow(memo: Any, indexes: dict[str, Any]) -> sweep.Follow:
    """The sweep's follow: that of the handlers, with the indexes kopf handed the startup handler (live)."""

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        await _follow(memo, namespace, name, indexes, with_progress=with_progress)

    return follow


def _slotted_follow(memo: Any, indexes: dict[str, Any]) -> follow_requests.Follow:
    """The follow of a request from a watch event, in a slot its queue already holds."""

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        await reconcile.follow(memo.trainingruns, _views(indexes), namespace, name, with_progress=with_progress)

    return follow


# kopf's indexes (kept from the watches it runs anyway): a follow reads its TrainingRun, Job and pods from them.
# Async, as every handler here: kopf runs a plain function in a thread, a hand-off per watch event.
@kopf.index(*TR)
async def live_trainingruns(body: kopf.Body, **_: Any) -> dict[tuple[str, str], views.RunEntry]:
    return views.run_entry(body)


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
async def trainer_jobs(body: kopf.Body, **_: Any) -> dict[str, views.Stored] | None:
    return views.job_entry(body)


@kopf.index("v1", "pods", labels=CHILD_LABELS)
async def trainer_pods(body: kopf.Body, **_: Any) -> dict[str, views.Stored] | None:
    return views.child_entry(body)


@kopf.index(*POWER)
async def power_schedules(body: kopf.Body, **_: Any) -> dict[str, str]:
    return views.power_entry(body)


def _views(kwargs: dict[str, Any]) -> views.Views:
    """The indexes kopf hands every handler (as keyword arguments named after the index functions)."""
    return views.Views(runs=kwargs["live_trainingruns"], jobs=kwargs["trainer_jobs"], pods=kwargs["trainer_pods"],
                       powers=kwargs["power_schedules"])


def _ctx(memo: Any, namespace: str | None) -> tuple[reconcile.Context, str]:
    ctx: reconcile.Context = memo.trainingruns
    # TrainingRuns, Jobs and pods are all namespaced: kopf always passes a namespace for them.
    assert namespace is not None
    return ctx, namespace


async def _follow(memo: Any, namespace: str | None, name: str, kwargs: dict[str, Any], *,
                  with_progress: bool) -> None:
    ctx, ns = _ctx(memo, namespace)
    async with memo.trainingrun_follows:
        await reconcile.follow(ctx, _views(kwargs), ns, name, with_progress=with_progress)


@kopf.on.resume(*TR, backoff=ERROR_BACKOFF)
@kopf.on.create(*TR, backoff=ERROR_BACKOFF)
async def start(namespace: str | None, name: str, body: kopf.Body, retry: int, reason: str,
                new: kopf.BodyEssence | Any | None, memo: Any, **kwargs: Any) -> None:
    """MLflow run first, then the Job. Also on operator start: finds what exists instead of duplicating.

    Slots of its own: a burst of pod and Job events (the follows) never delays Job creation."""
    ctx, ns = _ctx(memo, namespace)
    reconcile.seen(ctx, body)
    memo.sweep.adopt()  # every run the sweep may follow went through here first
    # A creation's diff base goes with the start's own status write (kto_operator.diffbase).
    handled = diffbase.encode(new) if reason == kopf.Reason.CREATE else None
    async with memo.trainingrun_starts:
        await reconcile.ensure_started(ctx, _views(kwargs), ns, name, retry, handled)


@kopf.on.update(*TR, field="spec", backoff=ERROR_BACKOFF)
async def spec_changed(namespace: str | None, name: str, diff: kopf.Diff, body: kopf.Body, memo: Any,
                       **kwargs: Any) -> None:
    """`cancel` is the only mutable field (CEL); untyped extra parameters slip past CEL: say so."""
    ignored = sorted({".".join(map(str, d[1])) for d in diff if tuple(d[1])[:1] != ("cancel",)})
    if ignored:
        kopf.warn(body, reason="SpecChangeIgnored",
                  message=f"{', '.join(ignored)} changed after creation: ignored; create a new TrainingRun")
    await _follow(memo, namespace, name, kwargs, with_progress=False)


def _owner_name(meta: kopf.Meta) -> str | None:
    return meta.get("annotations", {}).get(naming.ANNOTATION_TRAININGRUN)


# A Job or pod event only requests a follow of its run and returns: the follow waits for its slot without
# holding kopf's per-event state (follow_requests).
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
async def job_changed(namespace: str | None, meta: kopf.Meta, body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = _owner_name(meta)
    if owner:
        ctx, ns = _ctx(memo, namespace)
        ctx.remember_job(body)
        memo.sweep.adopt()
        memo.follow_requests.request(ns, owner)


@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
async def pod_changed(namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any) -> None:
    owner = _owner_name(meta)
    if owner:
        memo.sweep.adopt()
        memo.follow_requests.request(_ctx(memo, namespace)[1], owner)


@kopf.on.delete(*TR, backoff=ERROR_BACKOFF)
async def delete(namespace: str | None, name: str, retry: int, runtime: datetime.timedelta, memo: Any,
                 **_: Any) -> None:
    """Stop the pods and mark the MLflow run KILLED; bounded in time, never a stuck finalizer."""
    await deletion.finalize(*_ctx(memo, namespace), name, retry, runtime.total_seconds())
