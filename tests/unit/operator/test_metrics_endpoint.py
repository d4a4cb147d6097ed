from kto_operator.metrics import Metrics
from prometheus_client import generate_latest


def test_operator_registry_serves_trainingrun_and_power_metrics() -> None:
    text = generate_latest(Metrics().registry).decode()
    for name in ("kto_trainingruns", "kto_trainingrun_submit_to_job_seconds", "kto_power_workloads_asleep",
                 "kto_power_transitions"):
        assert name in text, name
