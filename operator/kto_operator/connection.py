"""The process's one connection to the Kubernetes API, for both halves: kopf's login and our `api.Api` from the
same configuration, the Api made once and closed once.

Both handler modules import this one, so its login handler is registered once, whether the halves run together
(`python -m kto_operator`) or the power half alone (`kopf run -m kto_operator.power.handlers`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from . import api

MEMO_KEY = "kube"
USERS_KEY = "kube_users"
LOGIN_KEY = "kopf_login"
# kopf's own connections to the API server: its watch streams (one per watched resource, each holding a
# connection: at most 5 here, with peering) and its short requests (finalizers, Events). Bounded: kopf's
# default pool is unbounded, and a burst of new objects opens a TLS connection per object being patched, each
# one holding read buffers that the allocator keeps after the connection closes.
KOPF_CONNECTIONS = 16


def kopf_session(info: kopf.ConnectionInfo, limit: int = KOPF_CONNECTIONS) -> kopf.AiohttpSession:
    """kopf's session as kopf itself builds it from `info` (TLS, Authorization header, proxy), with a bounded
    pool. kopf closes it when it drops these credentials (a 401, an expiry) and at exit."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
                                    headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               expiration=info.expiration, aiohttp_session=session)


@kopf.on.login()
async def login(memo: Any, **_: Any) -> kopf.AiohttpSession:
    """The login of `api` (service account, else kubeconfig, exec plugins and tokenFile included), so that
    kopf's watches and our calls authenticate alike; the `kubernetes` client, whose login kopf would use
    otherwise, is kept out of the process (the entry point). Called again by kopf when the API server answers
    401 or the token expires, so a rotated token is picked up. The same credentials give the same session
    object: kopf recognises credentials it has seen rejected by equality, and stops instead of logging in
    again and again with a revoked token."""
    info = await api.connection_info()
    last: tuple[kopf.ConnectionInfo, kopf.AiohttpSession] | None = memo.get(LOGIN_KEY)
    if last is not None and last[0] == info:
        return last[1]
    session = kopf_session(info)
    memo[LOGIN_KEY] = (info, session)
    return session


def shared(memo: Any, options: api.Options, user: str) -> api.Api:
    """The process's one Api, kept in kopf's memo: made by whichever half's startup handler runs first (the
    TrainingRun half's under `python -m kto_operator`, whose handlers are registered first), with that half's
    `options`. A later half shares it: its pool is a cap on concurrent connections, and a request beyond the
    cap waits for a free connection. `user`: the half's name, given back with `release` (a startup handler
    kopf retries takes it once)."""
    if MEMO_KEY not in memo:
        memo[MEMO_KEY] = api.Api.connect(options)
    memo.setdefault(USERS_KEY, set()).add(user)
    kube: api.Api = memo[MEMO_KEY]
    return kube


async def release(memo: Any, user: str) -> None:
    """A half's cleanup, once its own work has stopped: the last half to give the Api back closes it. kopf runs
    the cleanup handlers in the order they were registered, and this module's come first: a cleanup of its own
    would close the Api under follows still stopping."""
    users: set[str] = memo.setdefault(USERS_KEY, set())
    users.discard(user)
    if users:
        return
    kube: api.Api | None = memo.pop(MEMO_KEY, None)
    if kube is not None:
        await kube.close()
