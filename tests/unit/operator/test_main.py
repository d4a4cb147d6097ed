"""The command line: scope is mandatory, PowerSchedule handlers load when their module exists."""

from __future__ import annotations

import importlib.util

import pytest
from kto_operator import main


def test_scope_is_required() -> None:
    with pytest.raises(SystemExit):
        main.parse_args([])
    with pytest.raises(SystemExit):
        main.parse_args(["--namespace", "a", "--all-namespaces"])


def test_namespace_and_all_namespaces() -> None:
    args = main.parse_args(["--namespace", "team-a"])
    assert (args.namespace, args.all_namespaces) == ("team-a", False)
    assert main.parse_args(["-A"]).all_namespaces is True
    assert main.parse_args(["-n", "x", "--liveness", ""]).liveness == ""


def test_handlers_loaded() -> None:
    loaded = main.load_handlers()
    assert loaded[0] == "kto_operator.handlers"
    has_power = importlib.util.find_spec(main.POWER_HANDLERS) is not None
    assert (main.POWER_HANDLERS in loaded) is has_power
