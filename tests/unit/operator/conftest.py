"""Fixtures shared by the operator's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Stub, stub_server


@pytest.fixture
def stub() -> Iterator[Stub]:
    with stub_server() as state:
        yield state
