"""The console's Kubernetes calls, each made with the signed-in user's token (`api.Api.for_token`): the API
server's RBAC decides what the user sees and may change. The operator's own client is never used here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from lightkube.config.kubeconfig import SingleConfig

from kto_operator import api, identity, naming
from kto_operator.power.reconcile import WORKLOADS

# (verb, resource) of each button, all in the kto.dev group: what the page asks the API server before enabling it.
SWITCH_POWER = ("patch", naming.POWER_PLURAL)
CANCEL_RUN = ("patch", naming.PLURAL)
CREATE_RUN = ("create", naming.PLURAL)
# A user's client: a few connections (the page's polls are a handful of requests at a time).
USER_OPTIONS = api.Options(pool_size=4)
PERMISSIONS = {"switchPower": SWITCH_POWER, "cancelRun": CANCEL_RUN, "createRun": CREATE_RUN}


class UserApi(Protocol):
    """What the console's routes need from the API server, as one user. Errors: api.ApiError."""

    async def whoami(self) -> str: ...
    async def can(self, namespace: str, verb: str, resource: str) -> tuple[bool, str]: ...
    async def runs(self, namespace: str) -> list[dict[str, Any]]: ...
    async def run(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_run(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...
    async def create_run(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def powers(self, namespace: str) -> list[dict[str, Any]]: ...
    async def patch_power(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...
    async def workloads(self, namespace: str) -> dict[str, list[dict[str, Any]]]: ...
    async def close(self) -> None: ...


UserApiFactory = Callable[[str], UserApi]


def refusal(username: str, verb: str, resource: str, namespace: str, reason: str) -> str:
    """The page's explanation of a disabled button: the API server's reason when it gives one (RBAC's
    authorizer often gives none), else what was asked."""
    asked = f"{username} may not {verb} {resource} in namespace {namespace}"
    return f"{asked}: {reason}" if reason else asked


class KubeUserApi:
    """UserApi over one `api.Api` made for the user's token."""

    def __init__(self, kube: api.Api, token: str) -> None:
        self.kube, self._token = kube, token

    @classmethod
    def factory(cls, config: SingleConfig, options: api.Options = USER_OPTIONS) -> UserApiFactory:
        """Clients of the operator's cluster (server and CA from its configuration), one per token."""
        return lambda token: cls(api.Api.for_token(token, config, options), token)

    async def whoami(self) -> str:
        """The user's name (SelfSubjectReview, allowed to every authenticated user); a refused token is an
        ApiError 401. Servers before Kubernetes 1.28 (404): the token's subject once an access review passed."""
        try:
            review = await self.kube.create(api.SELF_SUBJECT_REVIEWS, {"apiVersion": "authentication.k8s.io/v1",
                                                                       "kind": "SelfSubjectReview"})
        except api.ApiError as err:
            if err.status != 404:
                raise
            await self.can("default", "get", naming.PLURAL)  # a refused token fails here (401)
            return identity.token_subject(self._token) or "(unknown user)"
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "(unknown user)")

    async def can(self, namespace: str, verb: str, resource: str) -> tuple[bool, str]:
        review = await self.kube.create(api.SELF_SUBJECT_ACCESS_REVIEWS, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": naming.GROUP,
                                            "resource": resource}}})
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")

    async def runs(self, namespace: str) -> list[dict[str, Any]]:
        return await self.kube.list(api.RUNS, namespace)

    async def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(api.RUNS, namespace, name)

    async def patch_run(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.kube.patch(api.RUNS, namespace, name, patch)

    async def create_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.kube.create(api.RUNS, body)

    async def powers(self, namespace: str) -> list[dict[str, Any]]:
        return await self.kube.list(api.POWERS, namespace)

    async def patch_power(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.kube.patch(api.POWERS, namespace, name, patch)

    async def workloads(self, namespace: str) -> dict[str, list[dict[str, Any]]]:
        kinds = list(WORKLOADS)
        listed = await asyncio.gather(*(self.kube.list(WORKLOADS[k], namespace) for k in kinds))
        return dict(zip(kinds, listed, strict=True))

    async def close(self) -> None:
        await self.kube.close()
