"""The operator's one Kubernetes API client, for both halves: a thin async adapter over lightkube's AsyncClient.

Raw JSON dicts (camelCase) in and out: every kind is a lightkube generic resource (a dict as the API server sent
it), so the pure modules (jobs, status, power.schedule, power.workloads) see no model classes.

Credentials: lightkube's KubeConfig.from_env() (in-cluster service account, else $KUBECONFIG or ~/.kube/config),
exec plugins included, plus a user's `tokenFile`; `connection_info` hands kopf the same login, so its watches
and these calls authenticate alike. Errors: ApiError for any non-2xx answer (429 only once its retries are
spent); a connection that cannot be made stays an httpx.TransportError (an httpx.HTTPError)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import email.utils
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import kopf
import yaml
from lightkube import ALL_NS, AsyncClient, KubeConfig
from lightkube.config.client_adapter import async_check_output, verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import User, UserExec
from lightkube.core.exceptions import ApiError as LightkubeError
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_global_resource,
    create_namespaced_resource,
)
from lightkube.types import PatchType

from . import naming
from .aio_transport import AiohttpTransport

Kind = type[GenericNamespacedResource]
RUNS = create_namespaced_resource(naming.GROUP, naming.VERSION, naming.KIND, naming.PLURAL)
POWERS = create_namespaced_resource(naming.GROUP, naming.VERSION, naming.POWER_KIND, naming.POWER_PLURAL)
JOBS = create_namespaced_resource("batch", "v1", "Job", "jobs")
CRONJOBS = create_namespaced_resource("batch", "v1", "CronJob", "cronjobs")
PODS = create_namespaced_resource("", "v1", "Pod", "pods")
SERVICES = create_namespaced_resource("", "v1", "Service", "services")
EVENTS = create_namespaced_resource("", "v1", "Event", "events")
CONFIGMAPS = create_namespaced_resource("", "v1", "ConfigMap", "configmaps")
DEPLOYMENTS = create_namespaced_resource("apps", "v1", "Deployment", "deployments")
STATEFULSETS = create_namespaced_resource("apps", "v1", "StatefulSet", "statefulsets")
# kopf's peering objects (opt-in, crds/optional/kopf-peering.yaml): read by the sweep to act only when kopf does.
PEERINGS = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")
CLUSTER_PEERINGS: type[GenericGlobalResource] = create_global_resource(
    "kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings")
SELF_SUBJECT_REVIEWS: type[GenericGlobalResource] = create_global_resource(
    "authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", verbs=["post"])
SELF_SUBJECT_ACCESS_REVIEWS: type[GenericGlobalResource] = create_global_resource(
    "authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", verbs=["post"])

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER_AGENT = "kto-operator"
# Those lightkube's ExecAuth runs for the API calls (it refuses client.authentication.k8s.io/v1).
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1alpha1", "client.authentication.k8s.io/v1beta1")


class ApiError(Exception):
    """The API server answered with a non-2xx status (its Status object's message in `message`)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.message = status, reason, message or reason
        # One line: these go to logs, Events and status.
        super().__init__(f"{status} {reason}: {self.message}")


# What any call of this module may raise besides Conflict/JobConflict/JobRejected: the API server's answer, or
# no answer at all.
CALL_ERRORS: tuple[type[Exception], ...] = (ApiError, httpx.HTTPError)


class Conflict(RuntimeError):
    """The object changed since it was read (409): read again and recompute."""


class JobConflict(RuntimeError):
    """A child (Job, workers' Service) of the derived name is another owner's (e.g. a deleted TrainingRun's)."""


class JobRejected(ValueError):
    """The API server refused a child: invalid (422: an image with spaces, a bad env name or label key) or not
    decodable as its kind (400: a number beyond the field's int32). Something the CRD schema lets through but a
    Job cannot hold; retrying cannot help."""


@dataclasses.dataclass(frozen=True)
class Options:
    pool_size: int = 8  # concurrent connections to the API server
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # bounded: a silently dropped connection fails the handler (kopf retries it)
    # A 429 (API priority and fairness, max-requests-inflight) was never processed: safe to send again.
    throttle_retries: int = 5
    max_retry_after: float = 10.0
    page_size: int = 500  # list pages (`limit`/`continue`)
    token_max_age: float = 60.0  # a token file is re-read this often (projected tokens rotate)


def load_config() -> SingleConfig:
    try:
        return KubeConfig.from_env().get()
    except ConfigError as err:
        raise kopf.LoginError(f"no Kubernetes credentials (service account, $KUBECONFIG, ~/.kube/config): {err}") \
            from err


def token_file(config: SingleConfig) -> Path | None:
    """The file the token comes from: the service account's in a pod, else the kubeconfig user's `tokenFile`
    (client-go and kubectl read it; lightkube's kubeconfig reader does not)."""
    if config.fname is None:
        return Path(SA_DIR, "token") if config.user is not None and config.user.token else None
    with open(config.fname, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    user = next((u.get("user") or {} for u in raw.get("users") or [] if u.get("name") == config.context.user), {})
    return Path(config.abs_file(user["tokenFile"])) if user.get("tokenFile") else None


def retry_after(value: str | None, limit: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), 1 s when absent, at most `limit`."""
    if value and value.strip().isdigit():
        return min(float(value), limit)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value or "")
        return max(0.0, min((when - datetime.datetime.now(datetime.UTC)).total_seconds(), limit))
    return min(1.0, limit)


class Transport(httpx.AsyncBaseTransport):
    """What lightkube leaves to its caller: a 429 sent again after its Retry-After (bounded), a token file
    re-read, our User-Agent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, options: Options, token_path: Path | None) -> None:
        self.inner, self.options, self.token_path = inner, options, token_path
        self._token: str | None = None
        self._token_read = -options.token_max_age

    def _authorization(self) -> str | None:
        if self.token_path is not None and time.monotonic() - self._token_read >= self.options.token_max_age:
            with contextlib.suppress(OSError):  # being rewritten, or briefly gone: the last token still holds
                self._token = self.token_path.read_text(encoding="utf-8").strip()
            self._token_read = time.monotonic()
        return f"Bearer {self._token}" if self._token else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["User-Agent"] = USER_AGENT
        if auth := self._authorization():
            request.headers["Authorization"] = auth
        for _ in range(self.options.throttle_retries):
            response = await self.inner.handle_async_request(request)
            if response.status_code != 429:
                break
            delay = retry_after(response.headers.get("Retry-After"), self.options.max_retry_after)
            await response.aclose()
            await asyncio.sleep(delay)
        else:
            response = await self.inner.handle_async_request(request)
        # lightkube reads an error's Content-Type unguarded (KeyError without one).
        response.headers.setdefault("Content-Type", "text/plain")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPStatusError as err:  # lightkube's ApiError (a JSON Status) is one too
        response = err.response
        message = err.status.message if isinstance(err, LightkubeError) else response.text.strip()[:300]
        raise ApiError(response.status_code, response.reason_phrase, message or "") from err


def _owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    return any(o.get("uid") == owner_uid for o in obj["metadata"].get("ownerReferences") or [])


def _network(config: SingleConfig, options: Options) -> httpx.AsyncBaseTransport:
    # Idle connections kept a minute: the sweep's calls come every few seconds, and a new TLS handshake costs
    # more CPU than the request. The API server keeps them 90 s.
    verify = verify_cluster(config.cluster, config.user, config.abs_file)
    return AiohttpTransport(verify, options.pool_size, keepalive_expiry=60.0)


class Api:
    def __init__(self, client: AsyncClient, options: Options = Options()) -> None:
        self.client, self.options = client, options

    @classmethod
    def connect(cls, options: Options = Options(), config: SingleConfig | None = None,
                inner: httpx.AsyncBaseTransport | None = None) -> Api:
        """A client of the configured cluster; `inner` replaces the network (tests: httpx.MockTransport)."""
        config = config or load_config()
        if config.user is None:  # a context without a user: lightkube's client needs one, even empty
            config = config._replace(user=User())
        return cls._made(config, options, inner, token_file(config))

    @classmethod
    def for_token(cls, token: str, config: SingleConfig, options: Options = Options(),
                  inner: httpx.AsyncBaseTransport | None = None) -> Api:
        """A client of `config`'s cluster (its server and CA) that authenticates with `token` and nothing else:
        no client certificate, no exec plugin, no token file of `config`'s (the console acts as its user, never
        as the operator)."""
        return cls._made(config._replace(user=User(token=token)), options, inner, None)

    @classmethod
    def _made(cls, config: SingleConfig, options: Options, inner: httpx.AsyncBaseTransport | None,
              token_path: Path | None) -> Api:
        transport = Transport(inner or _network(config, options), options, token_path)
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        return cls(AsyncClient(config, timeout=timeout, transport=transport), options)

    async def close(self) -> None:
        await self.client.close()

    async def get(self, kind: Kind | type[GenericGlobalResource], namespace: str | None,
                  name: str) -> dict[str, Any] | None:
        """The object (namespace None: a cluster-scoped kind), None when there is none (404)."""
        try:
            with _errors():
                if namespace is None:
                    return dict(await self.client.get(cast(type[GenericGlobalResource], kind), name))
                return dict(await self.client.get(cast(Kind, kind), name, namespace=namespace))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(self, kind: Kind, namespace: str | None, *, labels: Mapping[str, str] | None = None,
                   fields: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every page (namespace None: of all namespaces); [] for a kind the server does not serve (404: e.g. a
        CRD not installed)."""
        try:
            with _errors():
                by_label: dict[str, Any] = dict(labels or {})
                by_field: dict[str, Any] = dict(fields or {})
                pages = self.client.list(kind, namespace=namespace or ALL_NS, chunk_size=self.options.page_size,
                                         labels=by_label, fields=by_field)
                return [dict(o) async for o in pages]
        except ApiError as err:
            if err.status == 404:
                return []
            raise

    async def create(self, kind: Kind | type[GenericGlobalResource], body: Mapping[str, Any]) -> dict[str, Any]:
        with _errors():
            return dict(await self.client.create(kind(**body)))

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *,
                    status: bool = False) -> dict[str, Any] | None:
        """A merge patch (of the status subresource with `status`): the patched object, None when it is gone,
        Conflict on a 409 (a resourceVersion in the patch that is no longer the object's)."""
        try:
            with _errors():
                return dict(await self.client.patch(kind.Status if status else kind, name, dict(patch),
                                                    namespace=namespace, patch_type=PatchType.MERGE))
        except ApiError as err:
            if err.status == 404:
                return None
            if err.status == 409:
                raise Conflict(f"{kind.__name__}/{name} changed while being patched") from err
            raise

    async def delete(self, kind: Kind, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete, dependents in the background; with `uid` only that very object. False when it was gone
        (404) or is another object by now (409)."""
        # lightkube's delete() sends no DeleteOptions body, which the UID precondition needs: its own request
        # builder does (the pinned version's).
        generic = self.client._client
        request = generic.prepare_request("delete", kind, name=name, namespace=namespace)
        request.data = {"propagationPolicy": "Background", **({"preconditions": {"uid": uid}} if uid else {})}
        try:
            with _errors():
                generic.handle_response("delete", await generic.send(generic.build_adapter_request(request)), request)
            return True
        except ApiError as err:
            if err.status in (404, 409):
                return False
            raise

    async def create_owned(self, kind: Kind, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        """Create a child of `owner_uid`; False when it exists and is already ours (an earlier attempt's).
        JobRejected on a 400 or 422, JobConflict when the name is another owner's or the object is being deleted."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            await self.create(kind, manifest)
            return True
        except ApiError as err:
            if err.status in (400, 422):
                raise JobRejected(err.message) from err
            if err.status != 409:
                raise
        existing = await self.get(kind, namespace, name)
        if existing is None:
            # Deleted between our create and get (foreground deletion finishing): try again later.
            raise JobConflict(f"{kind.__name__} {name} is being deleted")
        if not _owned_by(existing, owner_uid):
            raise JobConflict(f"{kind.__name__} {name} already exists and does not belong to this TrainingRun")
        return False

    async def delete_owned(self, kind: Kind, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete our child (its own dependents in the background); False if it was gone or never ours."""
        existing = await self.get(kind, namespace, name)
        if existing is None or not _owned_by(existing, owner_uid):
            return False
        return await self.delete(kind, namespace, name, uid=existing["metadata"]["uid"])


async def exec_token(plugin: UserExec) -> tuple[str, datetime.datetime | None]:
    """Run a kubeconfig user's exec plugin: its ExecCredential's token and expiry."""
    if plugin.apiVersion not in EXEC_API_VERSIONS:
        raise kopf.LoginError(f"exec plugin apiVersion {plugin.apiVersion}: not one of {EXEC_API_VERSIONS}")
    env = {**os.environ, **{v.name: v.value for v in plugin.env or []}}
    try:
        status = json.loads(await async_check_output([plugin.command, *(plugin.args or [])], env=env))["status"]
    except (ConfigError, OSError, ValueError, KeyError) as err:
        raise kopf.LoginError(f"exec plugin {plugin.command}: {err}") from err
    expiry = status.get("expirationTimestamp")
    return str(status["token"]), datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None


async def connection_info(config: SingleConfig | None = None) -> kopf.ConnectionInfo:
    """kopf's login from the same configuration as `Api.connect`: kopf's own kubeconfig login runs no exec
    plugin and reads no tokenFile."""
    config = config or load_config()
    cluster, user = config.cluster, config.user or User()
    token, expiration = user.token, None
    path = token_file(config)
    if path is not None:
        token = path.read_text(encoding="utf-8").strip()
    elif user.exec is not None:
        token, expiration = await exec_token(user.exec)

    def file(name: str | None) -> str | None:
        return str(config.abs_file(name)) if name else None

    return kopf.ConnectionInfo(
        server=cluster.server, ca_path=file(cluster.certificate_auth), ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure or None, certificate_path=file(user.client_cert),
        certificate_data=user.client_cert_data, private_key_path=file(user.client_key),
        private_key_data=user.client_key_data, username=user.username, password=user.password, token=token,
        default_namespace=config.context.namespace, expiration=expiration)
