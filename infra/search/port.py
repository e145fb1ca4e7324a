"""The search index port: the documents the ``search`` projection writes, and the queries the
search route runs. Backends: PostgreSQL full text (``infra/search/postgres.py``, the default)
and OpenSearch (``infra/search/opensearch.py``); one contract suite runs against both
(``tests/contract/test_search_index.py``).

A backend gets every change of a projection batch in log order, in one ``write`` call, inside
the projection's PostgreSQL transaction (``conn``): a batch that fails is retried whole, so
each change must be idempotent when applied again in the same order. A query names the
channels the caller may see now; a backend returns nothing outside them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import psycopg

Sort = Literal["newest", "relevance"]


@dataclass(frozen=True)
class SearchDoc:
    """One message as the index holds it when it is posted."""

    message_id: str
    workspace_id: str
    channel_id: str
    author_id: str
    text: str
    created_at: dt.datetime
    thread_root_id: str | None
    has_file: bool
    has_link: bool
    position: int


@dataclass(frozen=True)
class Indexed:
    doc: SearchDoc


@dataclass(frozen=True)
class TextChanged:
    message_id: str
    text: str
    has_link: bool
    edited_at: dt.datetime


@dataclass(frozen=True)
class Reacted:
    """``key`` ("{emoji} {user}") joined (``present``) or left the message's reactions."""

    message_id: str
    key: str
    present: bool


@dataclass(frozen=True)
class Replied:
    """``reply_id`` joined (``present``) or left the thread of ``root_id``."""

    root_id: str
    reply_id: str
    present: bool


@dataclass(frozen=True)
class Removed:
    message_id: str


Change = Indexed | TextChanged | Reacted | Replied | Removed


@dataclass(frozen=True)
class SearchQuery:
    """A parsed query with its names resolved to ids. ``authors``/``channels`` None: any;
    an empty tuple: none (a ``from:`` naming nobody finds nothing)."""

    workspace_id: str
    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    not_words: tuple[str, ...] = ()
    not_phrases: tuple[str, ...] = ()
    authors: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    has_file: bool = False
    has_link: bool = False
    has_reaction: bool = False
    is_thread: bool = False
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    sort: Sort = "newest"

    @property
    def has_text(self) -> bool:
        return bool(self.words or self.phrases)


@dataclass(frozen=True)
class Hit:
    message_id: str
    highlight: str
    """HTML: the text escaped, matches in ``<mark>``...``</mark>``; empty when the backend has
    nothing to highlight (the caller shows the message's start instead)."""


@dataclass(frozen=True)
class Hits:
    hits: list[Hit]
    after: list[Any] | None = None
    """Where the next page starts (JSON-able, backend-specific), None on the last page."""


class BadCursor(ValueError):
    """A cursor ``after`` that this backend did not hand out."""


def searched_channels(query: SearchQuery, visible: Sequence[str]) -> list[str]:
    """The channels to search: the visible ones, narrowed to ``in:``'s when it named any."""
    if query.channels is None:
        return list(visible)
    wanted = set(query.channels)
    return [c for c in visible if c in wanted]


def nothing_to_find(query: SearchQuery, channels: Sequence[str]) -> bool:
    """Whether the answer is empty without asking the index (no channel, no author, no time)."""
    no_time = query.start is not None and query.end is not None and query.start >= query.end
    return not channels or query.authors == () or no_time


@runtime_checkable
class SearchIndex(Protocol):
    projection_name: str
    """The name of the projection (and its checkpoint) that feeds this backend."""
    tables: Sequence[str]
    """The PostgreSQL tables the feeding projection owns."""

    def schema(self, suffix: str = "") -> str:
        """CREATE ... IF NOT EXISTS for ``tables`` (each name + ``suffix``)."""
        ...

    async def write(self, conn: psycopg.AsyncConnection, changes: Sequence[Change], suffix: str = "") -> None:
        """Apply ``changes`` in order, idempotently, within ``conn``'s transaction where it can."""
        ...

    async def search(
        self,
        conn: psycopg.AsyncConnection,
        query: SearchQuery,
        visible: Sequence[str],
        limit: int,
        after: list[Any] | None,
    ) -> Hits:
        """Up to ``limit`` hits from the channels in ``visible`` only, in ``query.sort`` order,
        starting after ``after``; ``conn`` is the caller's (the OpenSearch backend ignores it).
        Raises ``BadCursor`` for an ``after`` it did not hand out."""
        ...
