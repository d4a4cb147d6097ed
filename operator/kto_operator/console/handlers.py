"""The console's life in the operator process: started by a startup handler on its own port, stopped by a
cleanup handler. The operator is never put to sleep, so the page answers while the platform sleeps.

Loaded by `python -m kto_operator` with both halves' handlers (kto_operator.main.HANDLERS)."""

from __future__ import annotations

import functools
import os
from typing import Any

import kopf
from aiohttp import web

from kto_operator import api, jobs
from kto_operator.console.app import ACCESS_LOG_FORMAT, build_app
from kto_operator.console.sessions import SessionStore
from kto_operator.console.userapi import KubeUserApi, UserApi
from kto_operator.console.web import Console
from kto_operator.settings import OperatorSettings, SettingsError
from kto_operator.tracking import ClientOptions, Tracker

MEMO_KEY = "console"
TRACKER_KEY = "console_tracker"
# Charts are few and small: two MLflow connections of its own, apart from the handlers'.
HISTORY_CONNECTIONS = 2


@kopf.on.startup()
async def console_startup(memo: Any, logger: kopf.Logger, **_: Any) -> None:
    try:
        ours = OperatorSettings.from_env(os.environ, namespace=memo.get("namespace"))
    except SettingsError as exc:
        raise kopf.PermanentError(f"bad setting: {exc}") from exc
    if not ours.console_port:
        logger.info("console: off (KTO_CONSOLE_PORT=0)")
        return
    if not ours.console_scope:
        logger.warning("console: watching all namespaces and KTO_CONSOLE_NAMESPACES is empty: it shows none")
    tracker = memo[TRACKER_KEY] = Tracker(ClientOptions(read_timeout=ours.mlflow_http_timeout,
                                                        connect_retries=ours.mlflow_http_retries,
                                                        pool_size=HISTORY_CONNECTIONS,
                                                        credentials_for=ours.tracking_uri))
    state = Console(
        namespaces=ours.console_scope,
        store=SessionStore[UserApi](ttl=ours.console_session_seconds),
        # The operator's cluster (server, CA); the user's token is the only credential of these clients.
        user_api=KubeUserApi.factory(api.load_config()),
        history=tracker.history,
        tracking_uri=functools.partial(jobs.tracking_uri, settings=ours),
        oauth_proxy=ours.console_oauth_proxy,
    )
    runner = web.AppRunner(build_app(state), access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        await web.TCPSite(runner, ours.console_host, ours.console_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise kopf.PermanentError(f"console port {ours.console_port}: {exc}") from exc
    memo[MEMO_KEY] = runner
    logger.info("console: http://%s:%s/ (namespaces %s%s)", ours.console_host, ours.console_port,
                ", ".join(ours.console_scope) or "none", ", token from oauth-proxy" if ours.console_oauth_proxy else "")


@kopf.on.cleanup()
async def console_cleanup(memo: Any, **_: Any) -> None:
    runner: web.AppRunner | None = memo.pop(MEMO_KEY, None)
    if runner is not None:
        await runner.cleanup()  # closes every session's client too (the app's on_cleanup)
    tracker: Tracker | None = memo.pop(TRACKER_KEY, None)
    if tracker is not None:
        await tracker.close()
