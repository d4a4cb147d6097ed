"""Console sessions: server-side, in memory. The browser holds only a random session id (an HttpOnly cookie);
the user's token stays in the operator's memory, with the session's CSRF token and the user's API client.

A restarted operator forgets every session: users sign in again (a token is never written anywhere)."""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@dataclasses.dataclass
class Session(Generic[C]):
    id: str
    username: str
    token: str
    csrf: str
    expires: float  # time.monotonic() deadline
    client: C  # the user's API client, made for this session's token only
    # Permission answers (SelfSubjectAccessReviews) kept briefly: the page polls every few seconds.
    permissions: dict[str, tuple[float, bool, str]] = dataclasses.field(default_factory=dict)

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), (presented or "").encode())


class SessionStore(Generic[C]):
    """Sessions by id, each closed (its client's connections) when it ends: sign-out, expiry, or eviction of
    the oldest when `capacity` is reached (memory stays bounded whatever signs in)."""

    def __init__(self, ttl: float, capacity: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.capacity, self.clock = ttl, capacity, clock
        self._sessions: dict[str, Session[C]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    async def create(self, username: str, token: str, client: C) -> Session[C]:
        await self.sweep()
        while len(self._sessions) >= self.capacity:
            await self.drop(next(iter(self._sessions)))  # dicts keep insertion order: the oldest first
        session = Session(id=secrets.token_urlsafe(32), username=username, token=token,
                          csrf=secrets.token_urlsafe(32), expires=self.clock() + self.ttl, client=client)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str | None) -> Session[C] | None:
        """The live session of this id; an expired one is closed and forgotten."""
        session = self._sessions.get(session_id or "")
        if session is not None and session.expires <= self.clock():
            await self.drop(session.id)
            return None
        return session

    async def drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            await session.client.close()

    async def sweep(self) -> None:
        now = self.clock()
        for sid in [s.id for s in self._sessions.values() if s.expires <= now]:
            await self.drop(sid)

    async def close(self) -> None:
        for sid in list(self._sessions):
            await self.drop(sid)


async def cached(session: Session[C], key: str, ttl: float, ask: Callable[[], Awaitable[tuple[bool, str]]],
                 clock: Callable[[], float] = time.monotonic) -> tuple[bool, str]:
    """A permission answer from the session's cache, asked again after `ttl` seconds."""
    hit = session.permissions.get(key)
    if hit is not None and hit[0] > clock():
        return hit[1], hit[2]
    allowed, reason = await ask()
    session.permissions[key] = (clock() + ttl, allowed, reason)
    return allowed, reason
