"""crds/powerschedule.yaml: names, printer columns, descriptions everywhere, and CEL regexes that agree
with the Python rule (the API server itself checks them in tests/integration/test_power.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kto_operator.power.schedule import STATES, PowerSpec, ScheduleSpec, SpecError, compile_crons, parse_duration

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "powerschedule.yaml"
# kubectl reads YAML 1.1, like PyYAML: a bare on/off/yes/no would turn into a boolean.
CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    return out


def _cel_regex(node: dict[str, Any]) -> re.Pattern[str]:
    rule = node["x-kubernetes-validations"][0]["rule"]
    literal = re.search(r"self\.matches\('(.*?)'\)", rule)
    assert literal is not None
    return re.compile(literal.group(1).encode().decode("unicode_escape"))  # CEL unescapes \\ in '...'


def test_names() -> None:
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], VERSION["name"], names["kind"], names["plural"]) == (
        "kto.dev", "v1alpha1", "PowerSchedule", "powerschedules")
    assert names["shortNames"] == ["power"] and CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    cols = [(c["name"], c["jsonPath"]) for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == [("State", ".status.state"), ("Reason", ".status.reason"), ("Next-On", ".status.nextOn"),
                    ("Next-Off", ".status.nextOff"), ("Age", ".metadata.creationTimestamp")]


def test_yaml_1_1_keeps_strings() -> None:
    assert set(SPEC["properties"]["schedule"]["properties"]) == {"on", "off", "timezone"}
    assert SPEC["properties"]["state"]["enum"] == ["on", "off"]
    assert SCHEMA["properties"]["status"]["properties"]["state"]["enum"] == list(STATES)


def test_every_field_has_a_description() -> None:
    missing = [path for path, node in _walk(SPEC, "spec") + _walk(SCHEMA["properties"]["status"], "status")
               if not node.get("description") and not (path.endswith("[]") and node.get("type") == "string")]
    assert missing == []


@pytest.mark.parametrize(("expr", "ok"), [
    ("0 8 * * 1-5", True), ("*/15 8-18 * * MON-FRI", True), ("0 20 L * *", True), ("0 9 * * MON#1", True),
    (" 0 8 * * * ", True), ("0 8 * *", False), ("0 0 8 * * *", False), ("0 8 * * 1-5;rm", False),
    ("@daily", False), ("", False),
])
def test_cron_cel_regex(expr: str, ok: bool) -> None:
    regex = _cel_regex(SPEC["properties"]["schedule"]["properties"]["on"])
    assert bool(regex.search(expr)) is ok
    if ok:  # whatever CEL lets through, the rule can parse or reports (never crashes on)
        from datetime import UTC, datetime

        compile_crons(ScheduleSpec(on=expr), datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("text", "ok"), [
    ("30m", True), ("2h", True), ("1h30m", True), ("45s", True), ("1h0m5s", True),
    ("30", False), ("1d", False), ("30m2h", False), ("-5m", False), ("1.5h", False),
])
def test_duration_cel_regex_agrees_with_python(text: str, ok: bool) -> None:
    node = SPEC["properties"]["idleAfter"]
    rule = node["x-kubernetes-validations"][0]["rule"]
    assert "size(self) > 0" in rule
    assert bool(_cel_regex(node).search(text)) is ok
    if ok:
        assert parse_duration(text).total_seconds() > 0
        assert PowerSpec.from_dict({"idleAfter": text}).idle_after == parse_duration(text)
    else:
        with pytest.raises(SpecError):
            parse_duration(text)


@pytest.mark.parametrize(("tz", "ok"), [
    ("UTC", True), ("Europe/Paris", True), ("America/Argentina/Buenos_Aires", True), ("Etc/GMT+5", True),
    ("Europe Paris", False), ("/etc/passwd", False), ("../x", False),
])
def test_timezone_cel_regex(tz: str, ok: bool) -> None:
    regex = _cel_regex(SPEC["properties"]["schedule"]["properties"]["timezone"])
    assert bool(regex.search(tz)) is ok
