"""``GET /workspaces/{ws}/search``: messages matching a query, from the channels the caller may see.

The query language is ``domain/searchquery.py``'s; the index is the app's ``SearchIndex``
(``infra/search``). Access is decided now, at query time, by ``projections/visibility.py``: the
caller's visible channels (members: public ones and their own; guests: their own; DMs and groups:
their people) are handed to the index, which answers from those only, and every hit is checked
again against them once its message is loaded. So a membership change applies to the very next
search, whatever the index holds. Names are resolved here too: ``from:`` by display name among
the workspace's members (case, spaces, ``.``, ``_`` and ``-`` ignored), ``from:me``, or a user
id; ``in:`` by channel name in the workspace, or a channel id.

Items are message objects as ``GET /messages/{id}`` shows them, with ``highlight``: HTML, the
text escaped and the matched words in ``<mark>``; for a query without words, the text's start.
``next_cursor`` is opaque (base64 of the index's position), ``null`` on the last page.
"""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import NotFound
from domain.searchquery import InvalidQuery, ParsedQuery, parse
from domain.session import Principal
from infra.search.port import BadCursor, Hit, SearchIndex, SearchQuery, Sort
from projections.consistency import ReadConsistency
from projections.members import members_named
from projections.shapes import MessageOut, messages_by_ids
from projections.visibility import visible_channel_ids, workspace_role
from readapi.messages import DEFAULT_LIMIT, MAX_LIMIT

PREVIEW = 200
"""Characters of text shown as the highlight when nothing in it was matched."""

_CHANNELS_NAMED = "SELECT channel_id FROM channels WHERE workspace_id = %(ws)s AND name = ANY(%(names)s)"

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description=f"1 to {MAX_LIMIT}")]


class SearchItem(msgspec.Struct, frozen=True):
    message: MessageOut
    highlight: str


class SearchPage(msgspec.Struct, frozen=True):
    items: list[SearchItem]
    next_cursor: str | None


class _Cursor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sort: Sort
    after: list[Any]


def encode_cursor(sort: Sort, after: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(_Cursor(sort, after))).decode().rstrip("=")


def decode_cursor(cursor: str | None, sort: Sort) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii", "strict") + b"=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(raw, type=_Cursor)
    except (UnicodeEncodeError, binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidQuery(
            "cursor is not one this search handed out; pass next_cursor unchanged, or leave it out for the first page",
            field="cursor",
        ) from None
    if decoded.sort != sort:
        raise InvalidQuery(
            f"cursor belongs to a search sorted by {decoded.sort}; send sort={decoded.sort} with it", field="cursor"
        )
    return decoded.after


async def _authors(
    conn: psycopg.AsyncConnection, parsed: ParsedQuery, workspace_id: str, user_id: str
) -> tuple[str, ...] | None:
    if not parsed.from_users:
        return None
    ids = {user_id if v.lower() == "me" else v for v in parsed.from_users if v.lower() == "me" or looks_like_id(v)}
    named = [v for v in parsed.from_users if v.lower() != "me" and not looks_like_id(v)]
    ids.update(await members_named(conn, workspace_id, named))
    return tuple(sorted(ids))


async def _channels(conn: psycopg.AsyncConnection, parsed: ParsedQuery, workspace_id: str) -> tuple[str, ...] | None:
    if not parsed.in_channels:
        return None
    ids = {v for v in parsed.in_channels if looks_like_id(v)}
    names = [v for v in parsed.in_channels if not looks_like_id(v)]
    if names:
        cur = await conn.execute(_CHANNELS_NAMED, {"ws": workspace_id, "names": names})
        ids.update(row[0] for row in await cur.fetchall())
    return tuple(sorted(ids))


def search_query(
    parsed: ParsedQuery,
    workspace_id: str,
    sort: Sort,
    authors: tuple[str, ...] | None,
    channels: tuple[str, ...] | None,
) -> SearchQuery:
    return SearchQuery(
        workspace_id,
        parsed.words,
        parsed.phrases,
        parsed.not_words,
        parsed.not_phrases,
        authors,
        channels,
        "file" in parsed.has,
        "link" in parsed.has,
        "reaction" in parsed.has,
        parsed.is_thread,
        parsed.dates.start,
        parsed.dates.end,
        sort,
    )


def preview(text: str) -> str:
    return html.escape(text[:PREVIEW], quote=False) + ("…" if len(text) > PREVIEW else "")


def _items(hits: Sequence[Hit], messages: dict[str, MessageOut], visible: set[str]) -> list[SearchItem]:
    """Hits as items, leaving out any whose message is gone, deleted, or (belt and braces) in a
    channel the caller may not see: the index may be a moment ahead of the messages read model."""
    items = []
    for hit in hits:
        message = messages.get(hit.message_id)
        if message is None or message.deleted or message.channel_id not in visible:
            continue
        items.append(SearchItem(message, hit.highlight or preview(message.text)))
    return items


async def search_workspace(
    conn: psycopg.AsyncConnection,
    index: SearchIndex,
    workspace_id: str,
    user_id: str,
    parsed: ParsedQuery,
    sort: Sort,
    limit: int,
    after: list[Any] | None,
) -> SearchPage:
    """One page of ``parsed``'s results in ``workspace_id`` for ``user_id`` (404 if not a member)."""
    if await workspace_role(conn, workspace_id, user_id) is None:
        raise NotFound("no such workspace")
    visible = await visible_channel_ids(conn, workspace_id, user_id)
    query = search_query(
        parsed,
        workspace_id,
        sort,
        await _authors(conn, parsed, workspace_id, user_id),
        await _channels(conn, parsed, workspace_id),
    )
    try:
        found = await index.search(conn, query, visible, limit, after)
    except BadCursor:
        raise InvalidQuery(
            "cursor is not one this search handed out; pass next_cursor unchanged", field="cursor"
        ) from None
    messages = await messages_by_ids(conn, [hit.message_id for hit in found.hits])
    next_cursor = encode_cursor(sort, found.after) if found.after is not None else None
    return SearchPage(_items(found.hits, messages, set(visible)), next_cursor)


class SearchQueries(Controller):
    path = "/workspaces/{workspace_id:str}/search"
    tags = ["search"]

    @get(operation_id="searchMessages")
    async def search(
        self,
        workspace_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        search: NamedDependency[SearchIndex],
        q: Annotated[str | None, Parameter(description="the query; see docs/search.md")] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
        sort: Annotated[
            Literal["newest", "relevance"], Parameter(description="newest first (default), or best match first")
        ] = "newest",
    ) -> SearchPage:
        """Messages of the workspace that match ``q`` and that the caller may see now."""
        await consistency.wait(principal.since_position)
        parsed = parse(q)
        after = decode_cursor(cursor, sort)
        async with pool.connection() as conn:
            return await search_workspace(conn, search, workspace_id, principal.user_id, parsed, sort, limit, after)
