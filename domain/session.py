"""Sessions: one per device login, one stream per token.

Stream ``session-{sha256 of the token}``: the token itself is never stored, and a request is
authenticated by reading this one short stream, so a logout or a revocation takes effect on
the very next request, in every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

import msgspec

from domain.decider import Decider
from domain.errors import DomainError
from domain.events import Event

MAX_DEVICE = 200


class SessionStarted(Event, frozen=True, tag="session.started"):
    session_id: str
    user_id: str
    device: str | None = None


class SessionEnded(Event, frozen=True, tag="session.ended"):
    session_id: str
    user_id: str
    reason: Literal["logout", "revoked"] = "logout"


class Start(msgspec.Struct, frozen=True):
    session_id: str
    user_id: str
    device: str | None = None


class End(msgspec.Struct, frozen=True):
    reason: Literal["logout", "revoked"] = "logout"


@dataclass(frozen=True)
class Session:
    session_id: str | None = None
    user_id: str | None = None
    active: bool = False


class SessionGone(DomainError):
    status = 401
    title = "Not logged in"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_stream(token: str) -> str:
    return "session-" + token_hash(token)


def evolve(state: Session, event: Event) -> Session:
    if not isinstance(event, SessionStarted | SessionEnded):
        return state
    match event:
        case SessionStarted():
            return Session(event.session_id, event.user_id, active=True)
        case SessionEnded():
            return Session(state.session_id, state.user_id, active=False)
        case _:
            assert_never(event)


def decide(state: Session, command: Start | End) -> Sequence[Event]:
    match command:
        case Start():
            if state.session_id is not None:
                raise DomainError("this session token is already in use")  # a 256-bit collision: never
            device = command.device[:MAX_DEVICE] if command.device else None
            return [SessionStarted(session_id=command.session_id, user_id=command.user_id, device=device)]
        case End():
            if not state.active:
                raise SessionGone("this session has ended; log in again")
            assert state.session_id is not None and state.user_id is not None
            return [SessionEnded(session_id=state.session_id, user_id=state.user_id, reason=command.reason)]
        case _:
            assert_never(command)


SESSION: Decider[Session, Start | End] = Decider("session", Session(), evolve, decide)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the session their token belongs to."""

    user_id: str
    session_id: str
    session_stream: str
    since_position: int
    """Position of the session's start: a query by this caller waits until read models pass it."""
