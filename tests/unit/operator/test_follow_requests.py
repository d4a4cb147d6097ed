"""Follow requests from watch events: served in the background, merged while waiting for a slot, never lost."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from kto_operator import api
from kto_operator.follow_requests import FollowRequests

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark")


def test_requests_waiting_for_a_slot_merge_into_one_follow() -> None:
    followed: list[tuple[str, str, bool]] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        followed.append((namespace, name, with_progress))

    async def main() -> None:
        slots = asyncio.Semaphore(1)
        requests = FollowRequests(slots, follow, contextvars.copy_context)
        async with slots:  # every slot taken: the requests wait
            for with_progress in (False, True, False):
                requests.request("ns", "a", with_progress)
            requests.request("ns", "b")
            await asyncio.sleep(0)
            assert followed == [] and len(requests.tasks) == 2
        await asyncio.gather(*requests.tasks)

    asyncio.run(main())
    assert sorted(followed) == [("ns", "a", True), ("ns", "b", False)]


def test_a_request_after_the_follow_started_is_followed_again() -> None:
    """The follow in progress may have read the run before the event that made the second request."""
    followed: list[str] = []
    release = asyncio.Event()

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        followed.append(name)
        await release.wait()

    async def main() -> None:
        requests = FollowRequests(asyncio.Semaphore(4), follow, contextvars.copy_context)
        requests.request("ns", "a")
        await asyncio.sleep(0)
        assert followed == ["a"]
        requests.request("ns", "a")
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*requests.tasks)
        assert not requests.tasks and not requests.waiting

    asyncio.run(main())
    assert followed == ["a", "a"]


def test_follows_run_in_the_lent_context_not_the_callers() -> None:
    """kopf.event needs the variables of a handler's context; the requesting handler's own (its cause, body,
    patch) must not be kept by a waiting follow."""
    seen: list[str | None] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        seen.append(MARK.get(None))

    async def main() -> None:
        lent = contextvars.Context()
        lent.run(MARK.set, "lent")
        requests = FollowRequests(asyncio.Semaphore(1), follow, lambda: lent)
        MARK.set("caller")
        requests.request("ns", "a")
        await asyncio.gather(*requests.tasks)

    asyncio.run(main())
    assert seen == ["lent"]


def test_a_failed_follow_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        if name == "a":
            raise api.ApiError(500, "Internal", "etcd timeout")
        raise KeyError("bug")

    async def main() -> None:
        requests = FollowRequests(asyncio.Semaphore(2), follow, contextvars.copy_context)
        requests.request("ns", "a")
        requests.request("ns", "b")
        await asyncio.gather(*requests.tasks, return_exceptions=True)
        await asyncio.sleep(0)
        assert not requests.tasks and not requests.waiting

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(warnings) == 1 and "etcd timeout" in warnings[0].getMessage() and warnings[0].exc_info is None
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_stop_cancels_the_waiting_follows() -> None:
    followed: list[str] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        followed.append(name)

    async def main() -> None:
        slots = asyncio.Semaphore(1)
        requests = FollowRequests(slots, follow, contextvars.copy_context)
        await slots.acquire()
        requests.request("ns", "a")
        await asyncio.sleep(0)
        await requests.stop()
        assert not requests.tasks and not requests.waiting

    asyncio.run(main())
    assert followed == []
