"""``accounts``: who exists and who is logged in where, for the read API and for analysts.

Reads: ``account.registered``, ``session.started``, ``session.ended``.
Writes: ``users`` (one row per account) and ``sessions`` (one row per device login, with when
and why it ended). Times are the events' ``recorded_at``, so a rebuild reproduces every row.
Password hashes are not copied here: only the log holds them. A session row names its stream
(``session-{sha256(token)}``) so that its owner can revoke it from another device; the hash
cannot be turned back into the token, and a token is what authenticates, never its hash.
Idempotency: the runtime commits rows and checkpoint together; every write is also an upsert
keyed by the event's own id (user, session), so applying an event twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from domain.account import AccountRegistered
from domain.events import RecordedEvent
from domain.session import SessionEnded, SessionStarted
from infra.db import Statement, run_statements

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users{s} (
    user_id      text        NOT NULL,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    created_at   timestamptz NOT NULL,
    CONSTRAINT users{s}_pkey PRIMARY KEY (user_id),
    CONSTRAINT users{s}_email_key UNIQUE (email)
);
CREATE TABLE IF NOT EXISTS sessions{s} (
    session_id text        NOT NULL,
    user_id    text        NOT NULL,
    device     text,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    end_reason text,
    stream_id  text,
    CONSTRAINT sessions{s}_pkey PRIMARY KEY (session_id)
);
-- Added after the first release: older rows get it from ``hubbub projections rebuild accounts``.
ALTER TABLE sessions{s} ADD COLUMN IF NOT EXISTS stream_id text;
CREATE INDEX IF NOT EXISTS sessions{s}_user_idx ON sessions{s} (user_id, started_at);
"""

_USER = """INSERT INTO users{s} (user_id, email, display_name, created_at) VALUES (%s, %s, %s, %s)
           ON CONFLICT (user_id) DO NOTHING"""
_STARTED = """INSERT INTO sessions{s} (session_id, user_id, device, started_at, stream_id) VALUES (%s, %s, %s, %s, %s)
              ON CONFLICT (session_id) DO NOTHING"""
_ENDED = """UPDATE sessions{s} SET ended_at = %s, end_reason = %s WHERE session_id = %s AND ended_at IS NULL"""


class Accounts:
    name = "accounts"
    tables: Sequence[str] = ("users", "sessions")

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        users, started, ended = [], [], []
        for recorded in events:
            at = recorded.recorded_at
            match recorded.event:
                case AccountRegistered(user_id=user_id, email=email, display_name=name):
                    users.append((user_id, email, name, at))
                case SessionStarted(session_id=sid, user_id=user_id, device=device):
                    started.append((sid, user_id, device, at, recorded.stream_id))
                case SessionEnded(session_id=sid, reason=reason):
                    ended.append((at, reason, sid))
        # In this order: a session ends after it starts, and both may be in one batch.
        return [
            (statement.format(s=suffix), row)
            for statement, rows in ((_USER, users), (_STARTED, started), (_ENDED, ended))
            for row in rows
        ]
