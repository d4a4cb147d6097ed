"""`--peering NAME`: opt-in kopf peering for several replicas; standalone stays the default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kto_operator import main

REPO = Path(__file__).resolve().parents[3]


def test_standalone_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KTO_PEERING", raising=False)
    args = main.parse_args(["--namespace", "a"])
    assert (args.peering, args.priority) == (None, None)


def test_peering_name_and_priority() -> None:
    args = main.parse_args(["-n", "a", "--peering", "kto", "--priority", "7"])
    assert (args.peering, args.priority) == ("kto", 7)


def test_peering_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KTO_PEERING", "kto")
    monkeypatch.setenv("KTO_PEERING_LIFETIME", "15")
    args = main.parse_args(["-n", "a"])
    assert (args.peering, args.peering_lifetime) == ("kto", 15)


def test_older_replicas_outrank_newer_ones_and_ties_are_broken() -> None:
    assert main.peering_priority(1_000, 0) > main.peering_priority(1_001, 999)
    assert main.peering_priority(1_000, 1) != main.peering_priority(1_000, 2)
    assert main.peering_priority(1_000.2, 999) > main.peering_priority(1_000.3, 0)  # same second, later start
    assert 0 < main.peering_priority(4.3e9, 999) < 2**53  # year 2106: still positive and exact in JSON


def test_peering_crds_are_opt_in() -> None:
    """Not in crds/*.yaml (nor the kustomization): the default install stays standalone."""
    docs = list(yaml.safe_load_all((REPO / "crds/optional/kopf-peering.yaml").read_text()))
    assert {(d["spec"]["names"]["kind"], d["spec"]["scope"]) for d in docs} == {
        ("KopfPeering", "Namespaced"), ("ClusterKopfPeering", "Cluster")}
    assert all(d["spec"]["group"] == "kopf.dev" for d in docs)
    assert "kopf-peering.yaml" not in (REPO / "crds/Kustomization").read_text()
