"""The result tables of docs/benchmarks.md, generated from a results.json of `make bench`.

    .venv/bin/python bench/render_docs.py [results.json] [--check]

Default input: bench/results/results.json (written by `make bench PUBLISH=1`, which also runs this).
The doc keeps its prose; only the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` is
replaced: NAME is `run` (when, where, which commit) or a group of targets.toml (operator, power, trainer).
`--check` changes nothing and exits 1 when the doc differs from what the results give.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from targets import markdown_table, table_rows  # noqa: E402

DOC = BENCH.parent / "docs" / "benchmarks.md"
RESULTS = BENCH / "results" / "results.json"
MARKER = re.compile(r"(<!-- bench:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.DOTALL)


class DocError(ValueError):
    """The doc lacks a marker the results need, or has one they cannot fill."""


def measured_at(document: Mapping[str, Any], name: str) -> dict[str, str]:
    """When and at which commit a benchmark of this document was measured (a resumed run keeps earlier ones)."""
    bench, meta = document["benches"][name], document["meta"]
    if "measured" in bench:
        return dict(bench["measured"])
    resumed = meta.get("resumed") or {}
    source = resumed if name in (resumed.get("kept") or []) else meta
    return {"date": source["date"], "commit": source["commit"]}


def run_line(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    benches = document["benches"]
    ran = ", ".join(f"{name} {b['seconds'] / 60:.1f} min" for name, b in benches.items())
    minutes = meta.get("minutes", "?")
    if meta.get("resumed"):  # the benchmarks' own times, whichever run measured them
        minutes = round(sum(b["seconds"] for b in benches.values()) / 60, 1)
    note = f" {meta['note']}." if meta.get("note") else ""
    if meta.get("resumed"):
        by_run: dict[tuple[str, str], list[str]] = {}
        for name in benches:
            when = measured_at(document, name)
            by_run.setdefault((when["date"], when["commit"]), []).append(name)
        parts = [f"{', '.join(names)} measured on {date} (commit `{commit}`)"
                 for (date, commit), names in by_run.items()]
        note += f" A resumed run: {'; '.join(parts)}."
    return (f"Run of {meta['date']}, commit `{meta['commit']}`, {meta['cpus']} CPUs, load average "
            f"{' / '.join(str(x) for x in meta['load_start'])} at the start and "
            f"{' / '.join(str(x) for x in meta.get('load_end', []))} at the end; {minutes} min "
            f"({ran}); `bench/run_all.py {' '.join(meta.get('args') or [])}`.{note}")


def sections(document: Mapping[str, Any]) -> dict[str, str]:
    """Marker name -> its generated body."""
    groups: list[str] = []
    for figure in document["figures"].values():
        if figure["group"] not in groups:
            groups.append(figure["group"])
    out = {"run": run_line(document)}
    for group in groups:
        out[group] = markdown_table(table_rows(document, [group]))
    return out


def update(text: str, document: Mapping[str, Any]) -> str:
    bodies = sections(document)
    found: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in bodies:
            raise DocError(f"marker bench:{name} names no section of the results ({', '.join(bodies)})")
        found.add(name)
        return f"{match.group(1)}{bodies[name]}\n{match.group(4)}"

    new = MARKER.sub(replace, text)
    missing = set(bodies) - found
    if missing:
        raise DocError(f"the doc has no marker for {', '.join(sorted(missing))} "
                       f"(<!-- bench:NAME --> ... <!-- /bench:NAME -->)")
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is not what the results give")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    text = args.doc.read_text()
    new = update(text, document)
    if args.check:
        if new != text:
            print(f"{args.doc} is out of date: run bench/render_docs.py {args.results}", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
