"""Power series live in the process's one registry (kto_operator.metrics.Metrics, served on /metrics)."""

from __future__ import annotations

import pytest
from kto_operator.metrics import Metrics, shared
from kto_operator.power.settings import PowerSettings
from kto_operator.settings import SettingsError
from prometheus_client import REGISTRY, generate_latest


def test_power_series_in_the_operators_registry_not_the_global_one() -> None:
    metrics = Metrics()
    metrics.power.observe("ns-m", "power", {"state": "Off", "workloads": [{}, {}, {}], "deferredBy": []})
    metrics.power.transition("ns-m", "power", "Off")
    text = generate_latest(metrics.registry).decode()
    assert 'kto_power_state{name="power",namespace="ns-m",state="Off"} 1.0' in text
    assert 'kto_power_state{name="power",namespace="ns-m",state="On"} 0.0' in text
    assert 'kto_power_workloads_asleep{name="power",namespace="ns-m"} 3.0' in text
    assert 'kto_power_transitions_total{name="power",namespace="ns-m",state="Off"} 1.0' in text
    assert "kto_power_state" not in generate_latest(REGISTRY).decode()
    metrics.power.forget("ns-m", "power")
    assert 'namespace="ns-m"' not in generate_latest(metrics.registry).decode()


def test_both_halves_share_one_metrics_through_the_memo() -> None:
    memo: dict[str, object] = {}
    first = shared(memo)
    assert shared(memo) is first


@pytest.mark.parametrize(("name", "value"), [("KTO_POWER_POLL", "0"), ("KTO_POWER_PARALLELISM", "0"),
                                             ("KTO_POWER_MAX_WAIT", "soon"), ("KTO_POWER_READY_TIMEOUT", "-1")])
def test_bad_power_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        PowerSettings.from_env({name: value})


def test_power_settings_from_env() -> None:
    assert PowerSettings.from_env({}) == PowerSettings()
    got = PowerSettings.from_env({"KTO_POWER_POLL": "0.25", "KTO_POWER_PARALLELISM": "4",
                                  "KTO_OPERATOR_DEPLOYMENT": "op"})
    assert (got.poll, got.parallelism, got.operator_deployment) == (0.25, 4, "op")
