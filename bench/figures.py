"""The figures of targets.toml, read from each benchmark's --json output (pure: JSON in, Measured out).

One function per benchmark of bench/run_all.py's plan; `EXTRACTORS[bench](figures_json)` gives that
benchmark's figures by id. A value the JSON lacks raises KeyError: a benchmark that changed its output
must change its extractor too (the unit tests run every extractor on a sample of its benchmark's output).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Any

from targets import Measured

Figures = dict[str, Measured]


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def scale(f: Mapping[str, Any]) -> Figures:
    op, pipeline, raw = f["operator"], f["pipeline"], f["raw"]
    n = op["runs"]
    cpu_s = op["machine"]["cpu_s"]["operator"]
    return {
        "burst_pipeline_ratio": Measured(
            _r(op["runs_per_s"] / pipeline["runs_per_s"]),
            f"{op['runs_per_s']} / {pipeline['runs_per_s']} runs/s, {n} runs, {pipeline['workers']} threads"),
        "burst_operator_runs_per_s": Measured(op["runs_per_s"], f"{n} runs, {op['elapsed_s']} s"),
        "burst_raw_jobs_ratio": Measured(_r(op["runs_per_s"] / raw["jobs_per_s"]),
                                         f"{op['runs_per_s']} / {raw['jobs_per_s']} per s"),
        "burst_p95_s": Measured(op["p95_s"], f"p50 {op['p50_s']} s, p99 {op['p99_s']} s"),
        "operator_cpu_ms_per_run": Measured(_r(1000 * cpu_s / n, 1), f"{cpu_s} s of CPU for {n} runs"),
        "burst_tracebacks": Measured(op["operator_tracebacks"]),
    }


def latency(f: Mapping[str, Any]) -> Figures:
    lat, n = f["latency"], f["runs"]
    before = f["mlflow_requests"]["before_job"]
    return {
        "latency_p95_s": Measured(lat["p95_s"], f"{n} runs; max {lat['max_s']} s"),
        "latency_p50_s": Measured(lat["p50_s"], f"{n} runs; min {lat['min_s']} s"),
        "api_requests_per_run": Measured(_r(f["api_requests_per_run"], 1),
                                         f"{f['api_requests_total']} requests for {n} runs"),
        "mlflow_requests_before_job": Measured(
            statistics.median(before), f"per run: min {min(before)}, max {max(before)}; "
            f"{_r(statistics.mean(f['mlflow_requests']['per_run']), 1)} in a run's whole life"),
    }


def memory(f: Mapping[str, Any]) -> Figures:
    top = str(f["top"])
    tops = [r["rss_mb"][top] for r in f["repeats"]]
    idle = [r["rss_mb"]["0"] for r in f["repeats"]]
    return {
        "rss_top_mb": Measured(_r(statistics.median(tops), 1),
                               f"{top} runs; {' / '.join(str(x) for x in tops)} MB"),
        "rss_idle_mb": Measured(_r(statistics.median(idle), 1), f"{' / '.join(str(x) for x in idle)} MB"),
    }


def soak(f: Mapping[str, Any]) -> Figures:
    return {"soak_drift_pct": Measured(
        _r(100 * f["drift"], 1), f"{f['seconds'] / 60:.0f} min, {f['runs_done']} runs; "
        f"{f['baseline_mb']:.1f} → {f['end_mb']:.1f} MB")}


def power(f: Mapping[str, Any]) -> Figures:
    s = f["summary"]

    def fig(key: str) -> Measured:
        return Measured(_r(s[key]["max"]), f"median {s[key]['median']:.2f} s, {len(f['rounds'])} rounds")

    return {"power_sleep_s": fig("sleep_s"), "power_wake_restored_s": fig("wake_restored_s"),
            "power_wake_ready_s": fig("wake_ready_s"), "power_pods_gone_s": fig("pods_gone_s")}


def s3(f: Mapping[str, Any]) -> Figures:
    sec, n = f["seconds"], f["count"]
    ours = sec["concurrent"]
    return {
        "s3_fetch_vs_course": Measured(_r(sec["course"] / ours, 1), f"{sec['course']:.2f} s / {ours:.2f} s"),
        "s3_fetch_vs_s5cmd": Measured(_r(sec["s5cmd"] / ours), f"{sec['s5cmd']:.2f} s / {ours:.2f} s"),
        "s3_fetch_images_per_s": Measured(_r(n / ours, 0), f"{n} images in {ours:.2f} s"),
    }


def input_pipeline(f: Mapping[str, Any]) -> Figures:
    sec = f["seconds"]
    return {"tfdata_vs_imagedatagenerator": Measured(
        _r(sec["legacy"] / sec["average"], 1),
        f"{sec['legacy']:.2f} / {sec['average']:.2f} s per epoch; first epoch {sec['legacy'] / sec['first']:.1f}x")}


def train(f: Mapping[str, Any]) -> Figures:
    out: Figures = {}
    for size in ("64", "224"):
        s = f["sizes"][size]
        out[f"train_img_s_{size}"] = Measured(_r(s["fit_img_s"], 1), f"{s['images']} images x {s['epochs']} epochs")
        out[f"fit_ratio_{size}"] = Measured(_r(s["fit_img_s"] / s["bare_img_s"]),
                                            f"{s['fit_img_s']:.1f} / {s['bare_img_s']:.1f} images/s")
    return out


def pod_start(f: Mapping[str, Any]) -> Figures:
    return {
        "trainer_pod_start_cold_s": Measured(f["cold_median_s"], f"median of {' / '.join(map(str, f['cold_s']))} s"),
        "trainer_pod_start_warm_s": Measured(f["warm_median_s"], f"median of {' / '.join(map(str, f['warm_s']))} s"),
    }


def multiworker(f: Mapping[str, Any]) -> Figures:
    return {
        "multiworker_two_vs_one": Measured(
            f["two_vs_one"], f"{f['two_workers_img_s']} / {f['one_worker_fit_img_s']} images/s, {f['cpus']} CPUs"),
        "multiworker_allreduce_share": Measured(
            f["allreduce_share_of_step"], f"{f['allreduce_ms']} ms of a {f['two_workers_step_ms']} ms step, "
            f"{f['allreduce_payload_floats']} floats"),
    }


EXTRACTORS: dict[str, Callable[[Mapping[str, Any]], Figures]] = {
    "scale": scale, "latency": latency, "memory": memory, "soak": soak, "power": power,
    "podstart": pod_start, "s3": s3, "input": input_pipeline, "train": train, "multiworker": multiworker,
}
