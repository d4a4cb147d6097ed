"""bench/targets.py: targets.toml's rules, judging a figure, results.json and `make bench`'s exit code."""

from __future__ import annotations

import math
from typing import Any

import pytest
import run_all
from figures import EXTRACTORS
from targets import (
    EXIT_FAILED,
    EXIT_MET,
    EXIT_MISSED,
    FigureSpec,
    Measured,
    Target,
    TargetsError,
    exit_code,
    format_value,
    judge,
    load_targets,
    parse_target,
    parse_targets,
    results_document,
    summary_table,
    table_rows,
)


def spec(fid: str = "f", target: str | None = ">= 1", gate: bool = True, bench: str = "b") -> FigureSpec:
    return FigureSpec(fid, "g", f"title {fid}", "s", None if target is None else parse_target(target), gate,
                      "" if gate else "a reason", bench)


def test_the_shipped_targets_file_follows_its_rules() -> None:
    specs = load_targets()
    assert specs, "no figure in bench/targets.toml"
    for s in specs.values():
        assert s.bench in run_all.ORDER and s.bench in EXTRACTORS, s
        assert s.gate or s.why, s


def test_issue_13_operator_targets_are_gated() -> None:
    specs = load_targets()
    expected = {"burst_pipeline_ratio": ">= 0.8", "api_requests_per_run": "<= 8", "mlflow_requests_before_job": "== 1",
                "operator_cpu_ms_per_run": "<= 10", "rss_top_mb": "<= 100", "latency_p95_s": "<= 1"}
    assert {k: str(specs[k].target) for k in expected} == expected
    assert all(specs[k].gate for k in expected)


@pytest.mark.parametrize("text", ["=> 1", ">= x", "1", ">=1", ">= 1 s", ""])
def test_a_target_that_cannot_be_judged_is_refused(text: str) -> None:
    with pytest.raises(TargetsError):
        parse_target(text)


def test_target_operators() -> None:
    assert parse_target(">= 0.8") == Target(">=", 0.8)
    assert parse_target(">= 0.8").met(0.8) and not parse_target(">= 0.8").met(0.79)
    assert parse_target("< 10").met(9.9) and not parse_target("< 10").met(10)
    assert parse_target("== 1").met(1) and not parse_target("== 1").met(2)
    assert str(parse_target("<= 100")) == "<= 100"


def entry(**kw: Any) -> dict[str, Any]:
    return {"title": "t", "unit": "s", "bench": "b", **kw}


@pytest.mark.parametrize(("document", "message"), [
    ({"g": {"f": entry(gate=False, target="<= 1")}}, "needs a one-line why"),
    ({"g": {"f": entry(gate=True)}}, "needs a target"),
    ({"g": {"f": entry(gate="yes", target="<= 1")}}, "gate must be true or false"),
    ({"g": {"f": entry(gate=True, target="<= 1", colour="red")}}, "unknown keys colour"),
    ({"g": {"f": {"title": "t", "gate": True, "target": "<= 1"}}}, "missing unit, bench"),
    ({"g": {"f": entry(gate=True, target="<= 1")}, "h": {"f": entry(gate=True, target="<= 1")}}, "already in"),
    ({"g": {"f": entry(gate=False, why="two\nlines")}}, "one line"),
    ({"g": 3}, "expected tables"),
])
def test_targets_file_rules(document: dict[str, Any], message: str) -> None:
    with pytest.raises(TargetsError, match=message):
        parse_targets(document)


def test_an_informational_figure_may_have_no_target() -> None:
    specs = parse_targets({"g": {"f": entry(gate=False, why="the CPU's own speed")}})
    assert specs["f"].target is None and not specs["f"].gate
    assert judge(specs["f"], Measured(5.0)) is None


def test_judge() -> None:
    assert judge(spec(target=">= 1"), Measured(1.0)) is True
    assert judge(spec(target=">= 1"), Measured(0.99)) is False
    assert judge(spec(), Measured(None)) is None
    assert judge(spec(), None) is None
    assert judge(spec(target="<= 1"), Measured(math.nan)) is False


def document(values: dict[str, float | None], gates: dict[str, bool], benches: dict[str, Any]) -> dict[str, Any]:
    specs = {fid: spec(fid, gate=gates[fid], bench="b" if fid != "other" else "c") for fid in gates}
    measured = {fid: Measured(v) for fid, v in values.items()}
    return results_document(specs, measured, benches, {"date": "d"})


def test_exit_code_met() -> None:
    doc = document({"a": 2.0, "i": 0.0}, {"a": True, "i": False}, {"b": {"exit": 0}})
    assert exit_code(doc) == EXIT_MET
    assert doc["figures"]["i"]["met"] is False  # informational: missed, and said so, without failing the run


def test_exit_code_missed() -> None:
    doc = document({"a": 0.5, "i": 2.0}, {"a": True, "i": False}, {"b": {"exit": 0}})
    assert exit_code(doc) == EXIT_MISSED
    assert doc["figures"]["a"]["met"] is False


def test_exit_code_failed_benchmark_wins_over_a_miss() -> None:
    doc = document({"a": 0.5}, {"a": True, "other": True}, {"b": {"exit": 0}, "c": {"exit": 1}})
    assert doc["figures"]["other"]["state"] == "not measured"
    assert exit_code(doc) == EXIT_FAILED


def test_a_gated_figure_missing_from_a_benchmark_that_ran_fails_the_run() -> None:
    doc = document({}, {"a": True}, {"b": {"exit": 0}})
    assert doc["figures"]["a"]["state"] == "not measured"
    assert exit_code(doc) == EXIT_FAILED


def test_figures_of_benchmarks_not_run_are_said_so_and_do_not_count() -> None:
    doc = document({"a": 2.0}, {"a": True, "other": True}, {"b": {"exit": 0}})
    assert doc["figures"]["other"]["state"] == "not run"
    assert exit_code(doc) == EXIT_MET
    assert "not run" in summary_table(doc)


def test_a_figure_not_in_the_targets_file_is_refused() -> None:
    with pytest.raises(TargetsError, match=r"not in targets\.toml"):
        results_document({"a": spec("a")}, {"zz": Measured(1.0)}, {"b": {"exit": 0}}, {})


def test_table_rows_show_the_target_and_the_reason_of_informational_figures() -> None:
    doc = document({"a": 0.5, "i": 3.0}, {"a": True, "i": False}, {"b": {"exit": 0}})
    rows = {row[0]: row for row in table_rows(doc)}
    assert rows["title a"] == ["title a", "**0.50 s**", ">= 1", "no"]
    assert rows["title i"][2] == ">= 1 (informational: a reason)" and rows["title i"][3] == "yes (informational)"


def test_the_note_of_a_run_is_kept_apart_from_its_command_line() -> None:
    assert run_all.without_note(["--runs", "100", "--note", "reduced, see why", "--publish"]) == ["--runs", "100",
                                                                                                  "--publish"]
    assert run_all.without_note(["--note=x", "--soak", "60"]) == ["--soak", "60"]


def test_a_resumed_run_keeps_only_what_succeeded_and_says_so(tmp_path: Any) -> None:
    import json

    earlier = {"meta": {"date": "d", "commit": "c", "load_start": [1.0], "minutes": 9, "args": ["--runs", "9"]},
               "benches": {"latency": {"exit": 0, "seconds": 1, "output": {"x": 1}},
                           "podstart": {"exit": 1, "seconds": 2, "output": None},
                           "train": {"exit": 0, "seconds": 3, "output": {"y": 2}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(earlier))
    meta: dict[str, Any] = {}
    kept = run_all.kept(path, ["latency", "podstart"], meta)
    assert list(kept) == ["latency"] and kept["latency"]["output"] == {"x": 1}
    assert kept["latency"]["measured"] == {"date": "d", "commit": "c"}
    assert meta["resumed"] == {"date": "d", "commit": "c", "load_start": [1.0], "minutes": 9, "kept": ["latency"],
                               "args": ["--runs", "9"]}


@pytest.mark.parametrize(("value", "unit", "text"), [
    (0.123, "s", "0.12 s"), (12.34, "MB", "12.3 MB"), (153.4, "MB", "153 MB"), (0.8, "ratio", "0.80"),
    (3.0, "count", "3"), (None, "s", "—")])
def test_format_value(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text
