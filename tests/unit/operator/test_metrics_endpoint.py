from kto_operator.metrics import Metrics
from prometheus_client import generate_latest


def test_operator_registry_serves_trainingrun_and_power_metrics() -> None:
    text = generate_latest(Metrics().registry).decode()
    for name in ("kto_trainingruns", "kto_trainingrun_submit_to_job_seconds", "kto_power_workloads_asleep",
                 "kto_power_transitions"):
        assert name in text, name


def test_the_phase_gauge_counts_each_run_once_in_its_last_phase() -> None:
    metrics = Metrics()

    def gauge() -> dict[str, float]:
        return {s.labels["phase"]: s.value for m in metrics.registry.collect() if m.name == "kto_trainingruns"
                for s in m.samples if s.value}

    for uid, phase in (("a", "Pending"), ("b", "Pending"), ("a", "Running"), ("a", "Running"), ("c", "Odd"),
                       ("b", None), ("b", None), ("a", "Succeeded"), ("d", None)):
        metrics.set_phase(uid, phase)
    assert gauge() == {"Succeeded": 1.0, "Odd": 1.0}
    metrics.set_phase("c", None)
    metrics.set_phase("a", "Failed")
    assert gauge() == {"Failed": 1.0}
