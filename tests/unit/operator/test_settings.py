"""OperatorSettings from the environment."""

from __future__ import annotations

import dataclasses

import pytest
from kto_operator.settings import DEFAULT_TRACKING_URI, OperatorSettings, SettingsError


def test_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.tracking_uri == DEFAULT_TRACKING_URI
    assert settings.namespace is None
    assert settings.ui_base == DEFAULT_TRACKING_URI
    assert settings.fail_fast_seconds == 30.0


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(OperatorSettings(), "tracking_uri", "x")  # noqa: B010  (what a careless caller would do)


def test_values_from_env() -> None:
    settings = OperatorSettings.from_env({
        "KTO_MLFLOW_TRACKING_URI": "http://mlflow.ns.svc:5000",
        "KTO_MLFLOW_UI_URL": "https://mlflow.apps.example.com/",
        "KTO_METRICS_PORT": "0",
        "KTO_FAIL_FAST_SECONDS": "5",
        "KTO_DELETE_TIMEOUT": "20",
        "KTO_MAX_WORKERS": "4",
        "KTO_DEFAULT_SERVICE_ACCOUNT": "trainer",
    }, namespace="team-a")
    assert settings.tracking_uri == "http://mlflow.ns.svc:5000"
    assert settings.ui_base == "https://mlflow.apps.example.com"
    assert settings.namespace == "team-a"
    assert (settings.metrics_port, settings.fail_fast_seconds, settings.delete_timeout) == (0, 5.0, 20.0)
    assert settings.max_workers == 4
    assert settings.default_service_account == "trainer"


def test_mlflow_tracking_uri_is_the_fallback() -> None:
    assert OperatorSettings.from_env({"MLFLOW_TRACKING_URI": "http://x:1"}).tracking_uri == "http://x:1"
    env = {"MLFLOW_TRACKING_URI": "http://x:1", "KTO_MLFLOW_TRACKING_URI": "http://y:2"}
    assert OperatorSettings.from_env(env).tracking_uri == "http://y:2"


def test_namespace_argument_wins_over_env() -> None:
    assert OperatorSettings.from_env({"KTO_NAMESPACE": "a"}).namespace == "a"
    assert OperatorSettings.from_env({"KTO_NAMESPACE": "a"}, namespace="b").namespace == "b"


@pytest.mark.parametrize("env", [
    {"KTO_METRICS_PORT": "http"},
    {"KTO_METRICS_PORT": "-1"},
    {"KTO_FAIL_FAST_SECONDS": "soon"},
    {"KTO_MLFLOW_TRACKING_URI": "mlflow:5000"},
    {"KTO_MLFLOW_TRACKING_URI": "file:///tmp/mlruns"},  # the operator speaks MLflow's REST API only
    {"KTO_MLFLOW_RETRY_DELAY": "10", "KTO_MLFLOW_RETRY_MAX_DELAY": "5"},
    {"KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": str(2**31)},  # beyond the Job field's int32: no Job could be made
])
def test_bad_values_are_refused_with_the_variable_name(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        OperatorSettings.from_env(env)


def test_retry_delay_backs_off_and_caps() -> None:
    settings = OperatorSettings(mlflow_retry_delay=2, mlflow_retry_max_delay=10)
    assert [settings.retry_delay(i) for i in range(5)] == [2, 4, 8, 10, 10]


def test_console_settings() -> None:
    assert OperatorSettings.from_env({}).console_port == 8090
    settings = OperatorSettings.from_env({
        "KTO_CONSOLE_PORT": "0", "KTO_CONSOLE_HOST": "127.0.0.1", "KTO_CONSOLE_OAUTH_PROXY": "true",
        "KTO_CONSOLE_SESSION_SECONDS": "600", "KTO_CONSOLE_NAMESPACES": " team-a, ,team-b"})
    assert (settings.console_port, settings.console_host, settings.console_oauth_proxy) == (0, "127.0.0.1", True)
    assert settings.console_session_seconds == 600
    assert settings.console_scope == ("team-a", "team-b")
    assert OperatorSettings.from_env({"KTO_CONSOLE_NAMESPACES": "x"}, namespace="own").console_scope == ("own",)


@pytest.mark.parametrize("env", [
    {"KTO_CONSOLE_PORT": "70000"},
    {"KTO_CONSOLE_PORT": "-1"},
    {"KTO_CONSOLE_OAUTH_PROXY": "maybe"},
    {"KTO_CONSOLE_SESSION_SECONDS": "5"},
])
def test_bad_console_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="KTO_CONSOLE_"):
        OperatorSettings.from_env(env)


def test_the_default_job_ttl_goes_up_to_the_job_fields_int32() -> None:
    env = {"KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": str(2**31 - 1)}
    assert OperatorSettings.from_env(env).default_ttl == 2**31 - 1
    with pytest.raises(SettingsError, match="KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED must be <= 2147483647"):
        OperatorSettings.from_env({"KTO_DEFAULT_TTL_SECONDS_AFTER_FINISHED": str(2**31)})
