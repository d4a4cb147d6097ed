"""The console's JSON API of one namespace: the overview the page polls (power, workloads, runs, what the user
may do), a run's page and its metric history, and the three writes (switch, cancel, run again). Every
Kubernetes call goes through the session's own client: the user's token, the API server's RBAC."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from kto_operator import api
from kto_operator.console import views
from kto_operator.console.sessions import cached
from kto_operator.console.userapi import PERMISSIONS, refusal
from kto_operator.console.web import (
    PERMISSION_TTL,
    Refused,
    UserSession,
    api_errors,
    console,
    json_body,
    namespace_of,
    require_session,
    require_write,
)
from kto_operator.tracking import MlflowUnavailable, TrackingError

routes = web.RouteTableDef()


async def permissions(session: UserSession, namespace: str) -> dict[str, dict[str, Any]]:
    """Each button's permission as the API server answers a SelfSubjectAccessReview of this user."""

    async def one(verb: str, resource: str) -> dict[str, Any]:
        allowed, reason = await cached(session, f"{namespace}/{verb}/{resource}", PERMISSION_TTL,
                                       lambda: session.client.can(namespace, verb, resource))
        return {"allowed": allowed,
                "reason": "" if allowed else refusal(session.username, verb, resource, namespace, reason)}

    answers = await asyncio.gather(*(one(*PERMISSIONS[key]) for key in PERMISSIONS))
    return dict(zip(PERMISSIONS, answers, strict=True))


async def _listed(coro: Any) -> tuple[Any, str]:
    """A list the user may be refused (403): the page shows the API server's message in its place."""
    try:
        return await coro, ""
    except api.ApiError as err:
        if err.status != 403:
            raise
        return None, err.message


@routes.get("/api/namespaces/{namespace}/overview")
async def overview(request: web.Request) -> web.Response:
    session, namespace = await require_session(request), namespace_of(request)
    now = console(request).clock()
    async with api_errors(request, session):
        (runs, runs_error), (powers, power_error), (by_kind, workloads_error), allowed = await asyncio.gather(
            _listed(session.client.runs(namespace)), _listed(session.client.powers(namespace)),
            _listed(session.client.workloads(namespace)), permissions(session, namespace))
    power = views.power_view(powers or [], by_kind or {}) if powers is not None else None
    return web.json_response({
        "namespace": namespace,
        "runs": views.run_rows(runs, now) if runs is not None else None,
        "runsError": runs_error,
        "power": power,
        "powerError": power_error or workloads_error,
        "permissions": allowed,
    })


async def _run(request: web.Request, session: UserSession, namespace: str) -> dict[str, Any]:
    name = request.match_info["name"]
    async with api_errors(request, session):
        tr = await session.client.run(namespace, name)
    if tr is None:
        raise Refused(404, f"TrainingRun {name} not found in {namespace}")
    return tr


@routes.get("/api/namespaces/{namespace}/runs/{name}")
async def run_page(request: web.Request) -> web.Response:
    session, namespace = await require_session(request), namespace_of(request)
    tr = await _run(request, session, namespace)
    async with api_errors(request, session):
        allowed = await permissions(session, namespace)
    return web.json_response({"run": views.run_detail(tr, console(request).clock()), "permissions": allowed})


@routes.get("/api/namespaces/{namespace}/runs/{name}/history")
async def run_history(request: web.Request) -> web.Response:
    """A metric's history, from MLflow, of a run the user may read: the operator's MLflow client is used only
    once the user's own token got the TrainingRun, and only for the run it names."""
    session, namespace = await require_session(request), namespace_of(request)
    tr = await _run(request, session, namespace)
    status = tr.get("status") or {}
    run_id = (status.get("mlflow") or {}).get("runId")
    metric = request.query.get("metric") or views.chart_metric(tr)
    if not run_id or metric is None:
        return web.json_response({"metric": metric, "points": []})
    if metric not in (status.get("metrics") or {}):
        raise Refused(404, f"the run has no metric {metric!r}")
    state = console(request)
    try:
        history = await state.history(state.tracking_uri(tr.get("spec") or {}), str(run_id), metric)
    except (MlflowUnavailable, TrackingError) as err:
        raise Refused(502, f"MLflow: {err}") from err
    return web.json_response({"metric": metric, "points": views.history_points(history)})


@routes.post("/api/namespaces/{namespace}/power")
async def switch(request: web.Request) -> web.Response:
    session, namespace = await require_write(request), namespace_of(request)
    body = await json_body(request)
    async with api_errors(request, session):
        powers = await session.client.powers(namespace)
        power = views.power_view(powers, {})
        if power is None:
            raise Refused(404, f"no PowerSchedule in {namespace}")
        target = next(p for p in powers if p["metadata"]["name"] == power["name"])
        try:
            patch = views.power_patch(target, str(body.get("state")), console(request).clock())
        except views.InputError as err:
            raise Refused(400, str(err)) from err
        await session.client.patch_power(namespace, power["name"], patch)
    return web.json_response({"name": power["name"], "state": body.get("state")})


@routes.post("/api/namespaces/{namespace}/runs/{name}/cancel")
async def cancel(request: web.Request) -> web.Response:
    session, namespace = await require_write(request), namespace_of(request)
    name = request.match_info["name"]
    async with api_errors(request, session):
        patched = await session.client.patch_run(namespace, name, views.cancel_patch())
    if patched is None:
        raise Refused(404, f"TrainingRun {name} not found in {namespace}")
    return web.json_response({"name": name, "cancel": True})


@routes.post("/api/namespaces/{namespace}/runs/{name}/rerun")
async def rerun(request: web.Request) -> web.Response:
    session, namespace = await require_write(request), namespace_of(request)
    body = await json_body(request)
    tr = await _run(request, session, namespace)
    try:
        params = views.parameters(body.get("parameters", (tr.get("spec") or {}).get("parameters") or {}))
    except views.InputError as err:
        raise Refused(400, str(err)) from err
    async with api_errors(request, session):
        created = await session.client.create_run(views.rerun_body(tr, params))
    return web.json_response({"name": created["metadata"]["name"]}, status=201)
