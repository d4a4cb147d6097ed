"""Pure parts of manifests/platform/base/prepare.py (the MLflow pod's init step); the whole script runs
against real MySQL/MinIO stand-ins in tests/integration/test_deployables_platform.py."""

from __future__ import annotations

import configparser
import importlib.util
import socket
import stat
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kto_prepare", REPO / "manifests/platform/base/prepare.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = _load()


def test_placeholder_credentials_are_refused() -> None:
    env = {"MYSQL_PASSWORD": "change-me", "AWS_SECRET_ACCESS_KEY": "a1b2c3d4e5f6",
           "MLFLOW_TRACKING_PASSWORD": " CHANGE-ME "}
    assert prepare.placeholder_keys(env) == ["MYSQL_PASSWORD", "MLFLOW_TRACKING_PASSWORD"]
    assert prepare.placeholder_keys({"MYSQL_PASSWORD": "x" * 20}) == []


def test_run_stops_before_waiting_when_a_placeholder_is_left(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare.os, "environ", {"MYSQL_PASSWORD": "change-me"})
    assert prepare.main() == 1
    err = capsys.readouterr().err
    assert "MYSQL_PASSWORD still 'change-me'" in err and "Traceback" not in err


def test_missing_setting_is_one_line_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare.os, "environ", {"MYSQL_PASSWORD": "s3cr3t-value-123"})
    assert prepare.main() == 1
    assert "KTO_MYSQL_HOST" in capsys.readouterr().err


def test_auth_config_is_a_valid_mlflow_ini_without_admin_password() -> None:
    uri = "mysql+pymysql://mlflow:p%40ss@mysql:3306/mlflow"
    text = prepare.auth_config(uri)
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(text)
    assert parsed["mlflow"]["database_uri"] == uri  # '%' survives: no interpolation
    assert parsed["mlflow"]["default_permission"] == "READ"
    assert "admin_password" not in parsed["mlflow"]


def test_private_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "basic_auth.ini"
    prepare.write_private(str(path), "secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "secret"


def test_wait_gives_up_with_a_clear_error() -> None:
    with pytest.raises(prepare.PrepareError, match=r"MySQL x:1: not ready after 0 s"):
        prepare.wait(lambda: False, "MySQL x:1", timeout=0.05, interval=0.01)


def test_tcp_open_sees_a_listening_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert prepare.tcp_open("127.0.0.1", port)
    assert not prepare.tcp_open("127.0.0.1", port)
