"""The program of the bed's MySQL stand-in image (bed/images/mysql/mysqld_local.py): settings from the
image's environment and arguments, and the idempotent init SQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_module

mysqld_local = load_module("mysqld_local", "bed/images/mysql/mysqld_local.py")
DEFAULT_DATADIR, Settings, SetupError, init_sql = (mysqld_local.DEFAULT_DATADIR, mysqld_local.Settings,
                                                   mysqld_local.SetupError, mysqld_local.init_sql)

ENV = {"MYSQL_DATABASE": "mlflow", "MYSQL_USER": "mlflow", "MYSQL_PASSWORD": "pw"}


def test_settings_from_args_and_env() -> None:
    s = Settings.parse(["run-mysqld", "--port=23306", "--innodb-foo=1"], {**ENV, "MYSQL_DATADIR": "/v/data"})
    assert (s.port, s.datadir, s.database, s.root_password) == (23306, Path("/v/data"), "mlflow", None)
    assert Settings.parse([], ENV).datadir == Path(DEFAULT_DATADIR)
    assert Settings.parse(["--datadir=/x"], {**ENV, "MYSQL_DATADIR": "/v"}).datadir == Path("/x")


def test_missing_environment_is_refused() -> None:
    with pytest.raises(SetupError, match="MYSQL_PASSWORD"):
        Settings.parse([], {"MYSQL_DATABASE": "d", "MYSQL_USER": "u"})


def test_init_sql_quotes_values_and_handles_root() -> None:
    s = Settings.parse([], {**ENV, "MYSQL_PASSWORD": "a'b\\c", "MYSQL_DATABASE": "we`ird"})
    sql = init_sql(s)
    assert "IDENTIFIED BY 'a\\'b\\\\c'" in sql and "`we``ird`" in sql
    assert "DROP USER IF EXISTS 'root'@'127.0.0.1';" in sql  # no passwordless TCP root
    with_root = init_sql(Settings.parse([], {**ENV, "MYSQL_ROOT_PASSWORD": "r"}))
    assert "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY 'r';" in with_root
    assert "DROP USER IF EXISTS 'root'@'127.0.0.1';" not in with_root


def test_mysql_stand_in_binds_loopback_unless_the_image_says_otherwise() -> None:
    env = {"MYSQL_DATABASE": "d", "MYSQL_USER": "u", "MYSQL_PASSWORD": "p"}
    assert Settings.parse(["run-mysqld"], env).bind_address == "127.0.0.1"
    assert Settings.parse(["--bind-address=0.0.0.0", "run-mysqld", "--port=1"], env).bind_address == "0.0.0.0"
    assert "--bind-address=0.0.0.0" in (Path(__file__).resolve().parents[3] / "bed/images/mysql/run-mysqld").read_text()
