"""bench/targets.toml read and applied: each measured figure next to its target, met or not, gated or not.

Pure functions (no bed, no clock): `load_targets`, `judge`, `results_document`, `summary_table`, `exit_code`.
"""

from __future__ import annotations

import math
import operator
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGETS_FILE = Path(__file__).resolve().parent / "targets.toml"
# Exit codes of `make bench`: every gated target met; a gated target missed; a benchmark that did not run
# to its end (its figures are missing, so nothing can be said of its targets).
EXIT_MET, EXIT_MISSED, EXIT_FAILED = 0, 1, 2

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}


class TargetsError(ValueError):
    """targets.toml does not say what a figure's target is, or says it in a way that cannot be judged."""


@dataclass(frozen=True)
class Target:
    op: str
    number: float

    def met(self, value: float) -> bool:
        return OPS[self.op](value, self.number)

    def __str__(self) -> str:
        return f"{self.op} {self.number:g}"


@dataclass(frozen=True)
class FigureSpec:
    id: str
    group: str
    title: str
    unit: str
    target: Target | None
    gate: bool
    why: str
    bench: str


@dataclass(frozen=True)
class Measured:
    """What a benchmark gave for one figure: the value judged against the target, and how it was obtained
    (the operands of a ratio, the sample size) for the reader."""

    value: float | None
    detail: str = ""


def parse_target(text: str) -> Target:
    parts = text.split()
    if len(parts) != 2 or parts[0] not in OPS:
        raise TargetsError(f"target {text!r}: expected '<op> <number>' with op one of {' '.join(OPS)}")
    try:
        number = float(parts[1])
    except ValueError:
        raise TargetsError(f"target {text!r}: {parts[1]!r} is not a number") from None
    return Target(parts[0], number)


def parse_targets(document: Mapping[str, Any]) -> dict[str, FigureSpec]:
    """The [group.id] tables of targets.toml, in file order; every rule of the file's header checked."""
    specs: dict[str, FigureSpec] = {}
    for group, figures in document.items():
        if not isinstance(figures, dict):
            raise TargetsError(f"{group}: expected tables [{group}.<figure id>]")
        for fid, raw in figures.items():
            where = f"[{group}.{fid}]"
            if fid in specs:
                raise TargetsError(f"{where}: figure id {fid!r} is already in group {specs[fid].group}")
            missing = [k for k in ("title", "unit", "gate", "bench") if k not in raw]
            if missing:
                raise TargetsError(f"{where}: missing {', '.join(missing)}")
            unknown = set(raw) - {"title", "unit", "target", "gate", "why", "bench"}
            if unknown:
                raise TargetsError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            gate = raw["gate"]
            if not isinstance(gate, bool):
                raise TargetsError(f"{where}: gate must be true or false")
            target = parse_target(raw["target"]) if "target" in raw else None
            why = str(raw.get("why", "")).strip()
            if gate and target is None:
                raise TargetsError(f"{where}: a gated figure needs a target")
            if not gate and not why:
                raise TargetsError(f"{where}: an informational figure (gate = false) needs a one-line why")
            if "\n" in why:
                raise TargetsError(f"{where}: why must be one line")
            specs[fid] = FigureSpec(fid, group, str(raw["title"]), str(raw["unit"]), target, gate, why,
                                    str(raw["bench"]))
    return specs


def load_targets(path: Path = TARGETS_FILE) -> dict[str, FigureSpec]:
    with path.open("rb") as f:
        return parse_targets(tomllib.load(f))


def judge(spec: FigureSpec, measured: Measured | None) -> bool | None:
    """True/False: the target met or missed; None: not measured, or a figure without a target."""
    if measured is None or measured.value is None or spec.target is None:
        return None
    if math.isnan(measured.value):
        return False
    return spec.target.met(measured.value)


def results_document(specs: Mapping[str, FigureSpec], measured: Mapping[str, Measured],
                     benches: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """results.json: every figure of targets.toml (measured or not) with what it was judged against.

    `benches`: per benchmark run, at least {"exit": int}; a figure whose benchmark was not in this run is
    "not run", one whose benchmark failed or gave no value is "not measured"."""
    unknown = set(measured) - set(specs)
    if unknown:
        raise TargetsError(f"figures measured but not in targets.toml: {', '.join(sorted(unknown))}")
    figures: dict[str, Any] = {}
    for fid, spec in specs.items():
        m = measured.get(fid)
        if spec.bench not in benches:
            state = "not run"
        elif m is None or m.value is None:
            state = "not measured"
        else:
            state = "measured"
        figures[fid] = {
            "group": spec.group, "title": spec.title, "unit": spec.unit,
            "target": None if spec.target is None else str(spec.target), "gate": spec.gate, "why": spec.why,
            "bench": spec.bench, "state": state,
            "value": None if m is None else m.value, "detail": "" if m is None else m.detail,
            "met": judge(spec, m),
        }
    return {"meta": dict(meta), "benches": {k: dict(v) for k, v in benches.items()}, "figures": figures}


def exit_code(document: Mapping[str, Any]) -> int:
    """EXIT_FAILED if a benchmark failed or a gated figure of a benchmark that ran was not measured;
    else EXIT_MISSED if a gated target was missed; else EXIT_MET."""
    figures = document["figures"].values()
    if any(b.get("exit") != 0 for b in document["benches"].values()):
        return EXIT_FAILED
    if any(f["gate"] and f["state"] == "not measured" for f in figures):
        return EXIT_FAILED
    if any(f["gate"] and f["met"] is False for f in figures):
        return EXIT_MISSED
    return EXIT_MET


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 100 or value == int(value) else (
        f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}")
    return text if unit in ("ratio", "count", "requests") else f"{text} {unit}"


def verdict(figure: Mapping[str, Any]) -> str:
    if figure["state"] != "measured":
        return figure["state"]
    if figure["met"] is None:
        return "—"
    met = "yes" if figure["met"] else "no"
    return met if figure["gate"] else f"{met} (informational)"


def table_rows(document: Mapping[str, Any], groups: Iterable[str] | None = None) -> list[list[str]]:
    """figure, value, target, met — one row per figure of the given groups (all by default)."""
    wanted = None if groups is None else set(groups)
    rows = []
    for figure in document["figures"].values():
        if wanted is not None and figure["group"] not in wanted:
            continue
        value = format_value(figure["value"], figure["unit"])
        if figure["detail"]:
            value = f"**{value}** ({figure['detail']})" if figure["gate"] else f"{value} ({figure['detail']})"
        elif figure["gate"] and figure["value"] is not None:
            value = f"**{value}**"
        target = figure["target"] or ""
        if not figure["gate"]:
            target = f"{target} (informational: {figure['why']})" if target else f"informational: {figure['why']}"
        rows.append([figure["title"], value, target, verdict(figure)])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| figure | value | target | met |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(document: Mapping[str, Any]) -> str:
    """The terminal's summary: one line per figure, gated ones marked."""
    lines = []
    width = max((len(f["title"]) for f in document["figures"].values()), default=10)
    for figure in document["figures"].values():
        value = format_value(figure["value"], figure["unit"])
        target = figure["target"] or "—"
        mark = "GATE" if figure["gate"] else "info"
        lines.append(f"{mark}  {figure['title']:<{width}}  {value:>14}  {target:>8}  {verdict(figure)}"
                     + (f"  [{figure['detail']}]" if figure["detail"] else ""))
    return "\n".join(lines)
