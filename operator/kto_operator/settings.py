"""Operator settings: read once from the environment in the startup handler, then passed around frozen."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from . import naming

DEFAULT_TRACKING_URI = "http://mlflow:5000"


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """Everything configurable about the operator. Built by `from_env()`; never mutated."""

    # MLflow tracking URI when a TrainingRun has no spec.mlflow.trackingUri. The operator and the trainer
    # use the same URI (in a cluster: the MLflow Service's DNS name).
    tracking_uri: str = DEFAULT_TRACKING_URI
    # Base of the links written to status.mlflow.url (the route users open); default: the tracking URI.
    ui_base_url: str | None = None
    # None: all namespaces (needs a ClusterRole); a name: that namespace only (a Role is enough).
    namespace: str | None = None
    # Port of the Prometheus /metrics endpoint; 0 turns it off.
    metrics_port: int = 8080
    # How long an image-pull error may persist before the run is Failed (Kubeflow #2001: stuck forever).
    fail_fast_seconds: float = 30.0
    # First and largest delay between retries while MLflow is unreachable.
    mlflow_retry_delay: float = 5.0
    mlflow_retry_max_delay: float = 60.0
    # Seconds a deleted TrainingRun's finalizer waits for its pods to stop and for MLflow to take the KILLED
    # status; then it lets go anyway (a finalizer must never keep a namespace from being deleted).
    delete_timeout: float = 120.0
    # MLflow REST client: seconds to wait for an answer (connecting: 5 s at most), and retries of a connection
    # that could not be opened (a request that reached MLflow is never resent). Small, so that an outage turns
    # into a quick MlflowUnavailable, retried with backoff, instead of a handler slot held for minutes.
    mlflow_http_timeout: int = 30
    mlflow_http_retries: int = 1
    # Concurrent follows of runs, and concurrent starts (creating MLflow runs and Jobs: separate, so that
    # following running Jobs never delays new submissions). A start is a few sequential round trips and almost
    # no CPU: in a burst the starts wait on sockets, so there are many of them. Each slot has its own MLflow
    # connection; API connections are shared (handlers.API_CONNECTIONS).
    max_workers: int = 16
    start_workers: int = 32
    # Lines of the trainer's log (termination message) kept in status.message, and its maximum size.
    log_tail_lines: int = 20
    message_max_chars: int = 2048
    # ServiceAccount of trainer pods when a TrainingRun names none (None: the namespace's default).
    default_service_account: str | None = None
    # What a TrainingRun gets when its spec says nothing (None: nothing; manifests/operator sets all three).
    # Resources: else the namespace's LimitRange default applies (about 1 GiB in the Developer Sandbox, where
    # VGG16 is OOM-killed). Pod deadline: a pod without activeDeadlineSeconds counts against a quota's
    # NotTerminating scope, the long-running workloads' share. TTL: finished Jobs count in count/jobs.batch.
    default_resources: Mapping[str, Mapping[str, str]] | None = None
    default_pod_deadline: int | None = None
    default_ttl: int | None = None
    # (namespace, name) of the ServiceAccount the operator acts as, found at start-up (not from the
    # environment): trainer pods never run as it, or a TrainingRun would borrow the operator's rights.
    own_service_account: tuple[str, str] | None = None
    # The web console (kto_operator.console): its port (0 turns it off) and address; served by the operator,
    # which is never put to sleep, so the page answers while the platform sleeps.
    console_port: int = 8090
    console_host: str = "0.0.0.0"
    # Take the user's token from the X-Forwarded-Access-Token header of an oauth-proxy in front of the console
    # (OpenShift); off: users sign in with a token. The header only ever carries a token of the user's own.
    console_oauth_proxy: bool = False
    # A console session lasts this long, then the user signs in again (their token may have expired anyway).
    console_session_seconds: int = 8 * 3600
    # Namespaces the console shows: the operator's own, or these when it watches all namespaces.
    console_namespaces: tuple[str, ...] = ()

    @property
    def console_scope(self) -> tuple[str, ...]:
        """The namespaces the console serves."""
        return (self.namespace,) if self.namespace else self.console_namespaces

    @property
    def ui_base(self) -> str:
        return (self.ui_base_url or self.tracking_uri).rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, namespace: str | None = None) -> OperatorSettings:
        """Settings from KTO_* variables (MLFLOW_TRACKING_URI is the fallback for the tracking URI)."""
        tracking_uri = env.get("KTO_MLFLOW_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        settings = cls(
            tracking_uri=tracking_uri,
            ui_base_url=env.get("KTO_MLFLOW_UI_URL") or None,
            namespace=namespace if namespace is not None else (env.get("KTO_NAMESPACE") or None),
            metrics_port=env_int(env, "KTO_METRICS_PORT", cls.metrics_port, minimum=0),
            fail_fast_seconds=env_float(env, "KTO_FAIL_FAST_SECONDS", cls.fail_fast_seconds),
            mlflow_retry_delay=env_float(env, "KTO_MLFLOW_RETRY_DELAY", cls.mlflow_retry_delay, minimum=0.1),
            mlflow_retry_max_delay=env_float(env, "KTO_MLFLOW_RETRY_MAX_DELAY", cls.mlflow_retry_max_delay, 0.1),
            delete_timeout=env_float(env, "KTO_DELETE_TIMEOUT", cls.delete_timeout),
            mlflow_http_timeout=env_int(env, "KTO_MLFLOW_HTTP_TIMEOUT", cls.mlflow_http_timeout, minimum=1),
            mlflow_http_retries=env_int(env, "KTO_MLFLOW_HTTP_RETRIES", cls.mlflow_http_retries, minimum=0),
            max_workers=env_int(env, "KTO_MAX_WORKERS", cls.max_workers, minimum=1),
            start_workers=env_int(env, "KTO_START_WORKERS", cls.start_workers, minimum=1),
            log_tail_lines=env_int(env, "KTO_LOG_TAIL_LINES", cls.log_tail_lines, minimum=1),
            message_max_chars=env_int(env, "KTO_MESSAGE_MAX_CHARS", cls.message_max_chars, minimum=80),
            default_service_account=env.get("KTO_DEFAULT_SERVICE_ACCOUNT") or None,
            default_resources=_resources(env, "KTO_DEFAULT_RESOURCES"),
            default_pod_deadline=_optional_int(env, "KTO_DEFAULT_POD_DEADLINE_SECONDS", minimum=1),
            default_ttl=_optional_int(env, "KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED", minimum=0,
                                      maximum=naming.INT32_MAX),
            console_port=env_int(env, "KTO_CONSOLE_PORT", cls.console_port, minimum=0),
            console_host=env.get("KTO_CONSOLE_HOST") or cls.console_host,
            console_oauth_proxy=env_bool(env, "KTO_CONSOLE_OAUTH_PROXY", cls.console_oauth_proxy),
            console_session_seconds=env_int(env, "KTO_CONSOLE_SESSION_SECONDS", cls.console_session_seconds,
                                            minimum=60),
            console_namespaces=tuple(n.strip() for n in (env.get("KTO_CONSOLE_NAMESPACES") or "").split(",")
                                     if n.strip()),
        )
        # The operator talks to a tracking server (REST API) only: a file:// store in its own pod would be
        # invisible to the trainer pods anyway.
        if not settings.tracking_uri.startswith(("http://", "https://")):
            raise SettingsError(f"tracking URI must be http:// or https://, got {settings.tracking_uri!r}")
        if settings.console_port > 65535:
            raise SettingsError(f"KTO_CONSOLE_PORT must be <= 65535, got {settings.console_port}")
        if settings.mlflow_retry_max_delay < settings.mlflow_retry_delay:
            raise SettingsError("KTO_MLFLOW_RETRY_MAX_DELAY must be >= KTO_MLFLOW_RETRY_DELAY")
        return settings

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff for MLflow outages: delay, 2*delay, 4*delay, ... capped."""
        return min(self.mlflow_retry_max_delay, self.mlflow_retry_delay * (2 ** max(0, attempt)))


def env_int(env: Mapping[str, str], key: str, default: int, minimum: int | None = None,
            maximum: int | None = None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{key} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{key} must be <= {maximum}, got {value}")
    return value


def env_float(env: Mapping[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be >= {minimum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = (env.get(key) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{key} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def _optional_int(env: Mapping[str, str], key: str, minimum: int, maximum: int | None = None) -> int | None:
    """An integer, or None when unset, empty or `none`."""
    if (env.get(key) or "none").strip().lower() == "none":
        return None
    return env_int(env, key, minimum, minimum=minimum, maximum=maximum)


def _resources(env: Mapping[str, str], key: str) -> dict[str, dict[str, str]] | None:
    """Container resources as JSON, e.g. {"requests": {"memory": "2Gi"}, "limits": {"memory": "4000Mi"}};
    None when unset, empty or `none`. Quantities are checked by the API server when it creates the Job."""
    raw = (env.get(key) or "none").strip()
    if raw.lower() == "none":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{key} must be JSON, got {raw!r}") from None
    if not isinstance(value, dict) or not value or set(value) - {"limits", "requests"} or \
            not all(isinstance(v, dict) and all(isinstance(q, (str, int)) for q in v.values()) for v in value.values()):
        raise SettingsError(f"{key} must be an object with `limits` and/or `requests` of quantities, got {raw!r}")
    return {kind: {name: str(q) for name, q in quantities.items()} for kind, quantities in value.items()}
