"""Deterministic, valid child names and the single place each key is built."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kto_operator import naming

DNS_SUBDOMAIN = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True)


@pytest.mark.parametrize("name", ["train", "cats-dogs-1", "a", "x" * 63])
def test_short_valid_names_are_kept(name: str) -> None:
    assert naming.job_name(name) == name


@pytest.mark.parametrize("name", ["x" * 64, "a" * 253, "my.run.v1", "Upper-Case", "-leading", "a_b"])
def test_other_names_become_valid_labels_with_hash(name: str) -> None:
    job = naming.job_name(name)
    assert naming.is_dns_label(job), job
    assert len(job) <= 63
    assert re.search(r"-?[0-9a-f]{8}$", job)


def test_long_names_with_same_prefix_do_not_collide() -> None:
    a, b = "p" * 70 + "-one", "p" * 70 + "-two"
    assert naming.job_name(a) != naming.job_name(b)


def test_dotted_and_dashed_names_do_not_collide() -> None:
    assert naming.job_name("a.b") != naming.job_name("a-b")


@given(DNS_SUBDOMAIN)
def test_job_name_always_valid_and_deterministic(name: str) -> None:
    job = naming.job_name(name)
    assert naming.is_dns_label(job)
    assert naming.job_name(name) == job


@given(DNS_SUBDOMAIN)
def test_label_value_always_valid(name: str) -> None:
    value = naming.label_value(name)
    assert len(value) <= 63
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value)


def test_labels_carry_uid_and_short_name() -> None:
    labels = naming.trainingrun_labels("r" * 100, "0e5f-uid")
    assert labels[naming.LABEL_TRAININGRUN_UID] == "0e5f-uid"
    assert len(labels[naming.LABEL_TRAININGRUN]) <= 63
    assert labels[naming.LABEL_MANAGED_BY] == naming.MANAGED_BY


def test_run_tags_and_filter_use_the_same_uid_key() -> None:
    tags = naming.run_tags(namespace="ns", name="n", uid="1234-abcd", job="n", image="img:1")
    assert tags[naming.TAG_UID] == "1234-abcd"
    assert set(tags) == {naming.TAG_UID, naming.TAG_NAMESPACE, naming.TAG_TRAININGRUN, naming.TAG_JOB,
                         naming.TAG_IMAGE}
    assert naming.uid_filter("1234-abcd") == "tags.`kto.dev/uid` = '1234-abcd'"


@pytest.mark.parametrize("uid", ["x' OR '1'='1", "", "a b"])
def test_uid_filter_refuses_non_uids(uid: str) -> None:
    with pytest.raises(ValueError):
        naming.uid_filter(uid)


def test_every_key_is_under_our_group() -> None:
    keys = [naming.LABEL_TRAININGRUN, naming.LABEL_TRAININGRUN_UID, naming.ANNOTATION_TRAININGRUN,
            naming.ANNOTATION_MLFLOW_RUN_ID, naming.FINALIZER, naming.TAG_UID, naming.TAG_NAMESPACE,
            naming.TAG_TRAININGRUN, naming.TAG_JOB, naming.TAG_IMAGE]
    assert all(k.startswith("kto.dev/") for k in keys)
    assert len(set(keys)) == len(keys) - 1  # the TrainingRun label and tag share a key, on different objects
