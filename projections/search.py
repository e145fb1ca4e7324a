"""``search`` (or ``search_opensearch``): the message search index, through the SearchIndex port.

Reads: ``message.posted``, ``message.edited``, ``message.deleted``, ``reaction.added``,
``reaction.removed``.
Writes: through its backend (``infra/search``): with PostgreSQL, the ``search_messages`` table;
with OpenSearch, the index (and a one-row table naming it, so the runtime can tell it was set up).
A post is indexed with its channel, author, time, thread root and whether it carries files or a
link; an edit replaces the text (and the link flag); a deletion removes the message from the
index; reactions are kept as a set of "{emoji} {user}" keys (for ``has:reaction``) and a
thread's replies count on its root (for ``is:thread``).
Times are the events' ``occurred_at`` (else ``recorded_at``), as in ``messages``, so a hit's time
is its message's. Idempotency: the changes of a batch are applied in log order and each can be
applied again (an insert of an existing message, a set add or remove, a recount, a delete).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg

from domain.events import RecordedEvent
from domain.message import MessageDeleted, MessageEdited, MessagePosted, ReactionAdded, ReactionRemoved
from infra.db import Statement
from infra.search.port import Change, Indexed, Reacted, Removed, Replied, SearchDoc, SearchIndex, TextChanged
from infra.search.postgres import PostgresSearchIndex

_LINK = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>]+|\bmailto:[^\s<>]+")


def has_link(text: str) -> bool:
    """A URL (``scheme://...``), a ``www.`` address or a ``mailto:`` in the text."""
    return _LINK.search(text) is not None


def changes_for(recorded: RecordedEvent) -> list[Change]:
    at = recorded.meta.occurred_at or recorded.recorded_at
    match recorded.event:
        case MessagePosted() as e:
            doc = SearchDoc(
                e.message_id,
                e.workspace_id,
                e.channel_id,
                e.author_id,
                e.text,
                at,
                e.thread_root_id,
                bool(e.file_ids),
                has_link(e.text),
                recorded.position,
            )
            replied = [Replied(e.thread_root_id, e.message_id, True)] if e.thread_root_id else []
            return [Indexed(doc), *replied]
        case MessageEdited() as e:
            return [TextChanged(e.message_id, e.text, has_link(e.text), at)]
        case MessageDeleted() as e:
            replied = [Replied(e.thread_root_id, e.message_id, False)] if e.thread_root_id else []
            return [Removed(e.message_id), *replied]
        case ReactionAdded() as e:
            return [Reacted(e.message_id, f"{e.emoji} {e.user_id}", True)]
        case ReactionRemoved() as e:
            return [Reacted(e.message_id, f"{e.emoji} {e.user_id}", False)]
    return []


class Search:
    """The search projection over ``index`` (PostgreSQL full text unless told otherwise)."""

    def __init__(self, index: SearchIndex | None = None) -> None:
        self.index: SearchIndex = index or PostgresSearchIndex()
        self.name = self.index.projection_name
        self.tables = self.index.tables

    def schema(self, suffix: str = "") -> str:
        return self.index.schema(suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        changes = [change for recorded in events for change in changes_for(recorded)]
        if changes:
            await self.index.write(conn, changes, suffix)

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement] | None:
        """The index's writes as statements when it lives in PostgreSQL; None (``handle``) otherwise."""
        if not isinstance(self.index, PostgresSearchIndex):
            return None
        return self.index.statements([change for recorded in events for change in changes_for(recorded)], suffix)


def with_search_backend(projections: Sequence[object], index: SearchIndex) -> list[object]:
    """``projections`` with the default search projection replaced by one over ``index``."""
    return [Search(index) if isinstance(p, Search) else p for p in projections]


def split_external(projections: Sequence[object]) -> list[list[object]]:
    """``projections`` in runner groups: those writing to PostgreSQL together, and a search
    projection over an external index (OpenSearch) apart, so that while that index is down the
    read models in PostgreSQL, which share one transaction per batch, do not wait for it."""
    external = [p for p in projections if isinstance(p, Search) and not isinstance(p.index, PostgresSearchIndex)]
    local = [p for p in projections if p not in external]
    return [group for group in (local, external) if group]
