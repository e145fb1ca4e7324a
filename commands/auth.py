"""Who is calling: a bearer token -> the ``Principal`` of its session, read through the command shell.

The bearer token is hashed and its session stream read (one indexed query), so a logout or a
revocation is honoured by the very next request in every process; nothing is cached. The
composition root wires ``authenticate`` into the ``principal`` dependency every authenticated
route declares, into the query side's ``services.authenticate`` (``readapi/edge.py``) and into
the WebSocket gateway (``hubbub/deps.py``, ``hubbub/app.py``).
"""

from __future__ import annotations

from typing import Any

from commands.shell import CommandShell
from domain.session import SESSION, Principal, SessionGone, session_stream

SCHEME = "bearer "


async def authenticate(shell: CommandShell, authorization: str | None) -> Principal:
    stream = session_stream_of(authorization)
    return principal_of(stream, await shell.load(SESSION, stream))


def session_stream_of(authorization: str | None) -> str:
    """The session stream a bearer token names (401 without one); a route that reads other
    streams too can load it with them, in one round trip, and pass it to ``principal_of``."""
    if not authorization or not authorization.lower().startswith(SCHEME):
        raise SessionGone("send Authorization: Bearer <token>; get a token from /api/v1/auth/login")
    return session_stream(authorization[len(SCHEME) :].strip())


def principal_of(stream: str, loaded: Any) -> Principal:
    """Who the loaded session stream says is calling; 401 if it is no active session."""
    state = loaded.state
    if not state.active or state.user_id is None or state.session_id is None:
        raise SessionGone("this token is not valid (unknown, logged out or revoked); log in again")
    return Principal(state.user_id, state.session_id, stream, loaded.first_position)
