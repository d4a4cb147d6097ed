"""Power gauges live in the default prometheus_client registry (the operator serves /metrics)."""

from __future__ import annotations

from kto_operator.power import metrics
from prometheus_client import REGISTRY, generate_latest


def test_gauges_in_default_registry() -> None:
    metrics.observe("ns-m", "power", {"state": "Off", "workloads": [{}, {}, {}], "deferredBy": []})
    metrics.transition("ns-m", "power", "Off")
    text = generate_latest(REGISTRY).decode()
    assert 'kto_power_state{name="power",namespace="ns-m",state="Off"} 1.0' in text
    assert 'kto_power_state{name="power",namespace="ns-m",state="On"} 0.0' in text
    assert 'kto_power_workloads_asleep{name="power",namespace="ns-m"} 3.0' in text
    assert 'kto_power_transitions_total{name="power",namespace="ns-m",state="Off"} 1.0' in text
    metrics.forget("ns-m", "power")
    assert 'namespace="ns-m"' not in generate_latest(REGISTRY).decode()


def test_collectors_can_join_a_private_registry() -> None:
    from prometheus_client import CollectorRegistry

    private = CollectorRegistry()
    for c in metrics.COLLECTORS:
        private.register(c)
    metrics.observe("ns-p", "power", {"state": "On"})
    assert 'kto_power_state{name="power",namespace="ns-p",state="On"} 1.0' in generate_latest(private).decode()
    metrics.forget("ns-p", "power")
