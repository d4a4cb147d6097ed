"""The published run (bench/results/results.json) and docs/benchmarks.md agree with the code that made them:
each figure is what its extractor reads from its benchmark's own output, judged against targets.toml, and
the doc's tables are the generator's rendering of that file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import render_docs
from figures import EXTRACTORS
from targets import exit_code, judge, load_targets

REPO = Path(__file__).resolve().parents[3]
RESULTS = REPO / "bench" / "results" / "results.json"


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    return dict(json.loads(RESULTS.read_text()))


def test_every_figure_of_the_targets_file_is_in_the_published_run(published: dict[str, Any]) -> None:
    assert list(published["figures"]) == list(load_targets()), (
        "bench/targets.toml and the published run differ: publish a run of the current targets "
        "(make bench PUBLISH=1)")


def test_each_benchmark_gives_exactly_the_figures_the_targets_file_gives_it(published: dict[str, Any]) -> None:
    specs = load_targets()
    for name, bench in published["benches"].items():
        assert bench["output"] is not None, f"{name} failed in the published run"
        assert set(EXTRACTORS[name](bench["output"])) == {k for k, s in specs.items() if s.bench == name}, name


def test_published_figures_are_read_from_the_benchmarks_outputs(published: dict[str, Any]) -> None:
    specs = load_targets()
    for name, bench in published["benches"].items():
        for fid, measured in EXTRACTORS[name](bench["output"]).items():
            figure = published["figures"][fid]
            assert (figure["value"], figure["detail"]) == (measured.value, measured.detail), fid
            assert figure["met"] == judge(specs[fid], measured), fid
            assert figure["gate"] == specs[fid].gate and figure["target"] == (
                None if specs[fid].target is None else str(specs[fid].target)), fid


def test_published_exit_code_is_the_one_its_figures_give(published: dict[str, Any]) -> None:
    missed = [f["title"] for f in published["figures"].values() if f["gate"] and f["met"] is False]
    assert exit_code(published) == (1 if missed else 0)


def test_the_doc_tables_are_generated_from_the_published_run(published: dict[str, Any]) -> None:
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    assert render_docs.update(doc, published) == doc, "run: .venv/bin/python bench/render_docs.py"


def test_the_generator_refuses_a_doc_without_the_markers(published: dict[str, Any]) -> None:
    with pytest.raises(render_docs.DocError, match="no marker"):
        render_docs.update("# no tables here\n", published)
