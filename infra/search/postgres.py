"""PostgreSQL full-text search: the ``search_messages`` table, kept by the ``search`` projection.

One row per message that is not deleted: its text with a generated ``tsvector`` (the ``english``
configuration: stemmed, stop words dropped) under a GIN index, and what the operators filter on
(channel, author, time, file/link flags, reaction keys, thread). Deleting a message deletes its
row, so a deleted text cannot be found. A root's ``reply_count`` is recounted from its replies'
rows whenever one comes or goes, so replays cannot drift.

Queries never put user text into SQL or into ``tsquery`` syntax: each word list or phrase is a
parameter of ``plainto_tsquery`` / ``phraseto_tsquery``, combined with ``&&`` and ``||`` in SQL.
Those functions are immutable, so with parameters bound per execution (``prepare=False``, a
custom plan every time) the planner folds them into constants: it sees the real ``tsquery``,
estimates its selectivity from the column's statistics and picks between the GIN index and
walking ``(workspace_id, created_at)`` newest first. A part with nothing searchable (only stop
words) is dropped, as PostgreSQL drops it; a query left with no searchable part at all matches
on its operators alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, assert_never

import msgspec
import psycopg
from psycopg import sql

from infra.db import Statement, run_statements
from infra.search.port import (
    BadCursor,
    Change,
    Hit,
    Hits,
    Indexed,
    Reacted,
    Removed,
    Replied,
    SearchQuery,
    TextChanged,
    nothing_to_find,
    searched_channels,
)

_JSON = msgspec.json.Encoder()
CONFIG = "english"
SHORT_TEXT = 280
"""Texts up to this long are highlighted whole; longer ones as up to two fragments."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {t}{s} (
    message_id     text        NOT NULL,
    workspace_id   text        NOT NULL,
    channel_id     text        NOT NULL,
    author_id      text        NOT NULL,
    created_at     timestamptz NOT NULL,
    edited_at      timestamptz,
    text           text        NOT NULL,
    tsv            tsvector    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
    thread_root_id text,
    reply_count    integer     NOT NULL DEFAULT 0,
    has_file       boolean     NOT NULL DEFAULT false,
    has_link       boolean     NOT NULL DEFAULT false,
    reaction_keys  text[]      NOT NULL DEFAULT '{{}}',
    position       bigint      NOT NULL,
    CONSTRAINT {t}{s}_pkey PRIMARY KEY (message_id)
);
CREATE INDEX IF NOT EXISTS {t}{s}_tsv_idx ON {t}{s} USING gin (tsv);
CREATE INDEX IF NOT EXISTS {t}{s}_recent_idx
    ON {t}{s} (workspace_id, created_at DESC, message_id DESC);
CREATE INDEX IF NOT EXISTS {t}{s}_thread_idx ON {t}{s} (thread_root_id)
    WHERE thread_root_id IS NOT NULL;
"""

# Every new document of a batch in one statement, as one JSON parameter (per-row parameters
# were most of the projection's client CPU).
_INDEXED = """
INSERT INTO {t}{s} (message_id, workspace_id, channel_id, author_id, created_at, text, thread_root_id,
                                has_file, has_link, position)
SELECT message_id, workspace_id, channel_id, author_id, created_at, text, thread_root_id, has_file, has_link, position
FROM jsonb_to_recordset(%s::jsonb) AS d(message_id text, workspace_id text, channel_id text, author_id text,
                                         created_at timestamptz, text text, thread_root_id text, has_file boolean,
                                         has_link boolean, position bigint)
ON CONFLICT (message_id) DO NOTHING
"""
_TEXT = """UPDATE {t}{s} SET text = %(text)s, has_link = %(has_link)s, edited_at = %(edited_at)s
           WHERE message_id = %(message_id)s"""
_REACTED = """UPDATE {t}{s} SET reaction_keys = array_append(reaction_keys, %(key)s)
              WHERE message_id = %(message_id)s AND NOT (%(key)s = ANY(reaction_keys))"""
_UNREACTED = """UPDATE {t}{s} SET reaction_keys = array_remove(reaction_keys, %(key)s)
                WHERE message_id = %(message_id)s"""
_REPLIES = """UPDATE {t}{s} AS m SET reply_count = (
                  SELECT count(*) FROM {t}{s} r WHERE r.thread_root_id = m.message_id)
              WHERE m.message_id = ANY(%s::text[])"""
_REMOVED = "DELETE FROM {t}{s} WHERE message_id = %(message_id)s"


def _statement(change: Change) -> tuple[str, dict[str, Any]]:
    match change:
        case TextChanged():
            return _TEXT, vars(change)
        case Reacted(present=present):
            return (_REACTED if present else _UNREACTED), {"message_id": change.message_id, "key": change.key}
        case Removed():
            return _REMOVED, {"message_id": change.message_id}
        case Indexed() | Replied():
            raise TypeError(f"not applied one by one: {change!r}")
        case _:
            assert_never(change)


class PostgresSearchIndex:
    """``table`` is ``search_messages`` but for tests that need a table the projection does not own."""

    projection_name = "search"

    def __init__(self, table: str = "search_messages") -> None:
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        self.table = table
        self.tables: Sequence[str] = (table,)

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(t=self.table, s=suffix)

    async def write(self, conn: psycopg.AsyncConnection, changes: Sequence[Change], suffix: str = "") -> None:
        await run_statements(conn, self.statements(changes, suffix))  # one round trip for the batch

    def statements(self, changes: Sequence[Change], suffix: str = "") -> list[Statement]:
        """What ``write`` runs, for the projector to send with the batch's other statements."""
        if not changes:
            return []
        # The batch's new documents first, in one statement: every other change concerns a message
        # posted before it (its document is earlier in this order too). Then the rest in log order,
        # and last the reply counts of the roots the batch touched, each recounted once from the rows.
        docs = [c.doc for c in changes if isinstance(c, Indexed)]
        roots = sorted({c.root_id for c in changes if isinstance(c, Replied)})
        statements: list[tuple[str, Any]] = [(_INDEXED, (_JSON.encode(docs).decode(),))] if docs else []
        statements += [_statement(c) for c in changes if not isinstance(c, Indexed | Replied)]
        if roots:
            statements.append((_REPLIES, (roots,)))
        return [(statement.format(t=self.table, s=suffix), params) for statement, params in statements]

    async def search(
        self,
        conn: psycopg.AsyncConnection,
        query: SearchQuery,
        visible: Sequence[str],
        limit: int,
        after: list[Any] | None,
    ) -> Hits:
        channels = searched_channels(query, visible)
        if nothing_to_find(query, channels):
            return Hits([])
        statement, params = _select(self.table, query, channels, limit + 1, _cursor(query, after))
        cur = await conn.execute(statement, params, prepare=False)
        rows = await cur.fetchall()
        hits = [Hit(message_id, _marked(highlight)) for message_id, _, _, highlight in rows[:limit]]
        return Hits(hits, _next(rows[limit - 1]) if len(rows) > limit > 0 else None)


def _tsquery(words: Sequence[str], phrases: Sequence[str], key: str, joiner: str) -> tuple[sql.Composable, dict]:
    """``plainto_tsquery(all words) && phraseto_tsquery(p1) && ...`` for what must match, or
    ``plainto_tsquery(w1) || ... || phraseto_tsquery(p1) || ...`` for what must not; every word
    and phrase is a parameter named after ``key``."""
    values = [" ".join(words)] if joiner == "&&" and words else list(words)
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for kind, texts in (("plainto_tsquery", values), ("phraseto_tsquery", phrases)):
        for text in texts:
            name = f"{key}{len(params)}"
            params[name] = text
            parts.append(sql.SQL("{}('english'::regconfig, {})").format(sql.SQL(kind), sql.Placeholder(name)))
    if not parts:
        return sql.SQL("''::tsquery"), params
    return sql.SQL("(") + sql.SQL(f" {joiner} ").join(parts) + sql.SQL(")"), params


_ESCAPED = sql.SQL(
    "replace(replace(replace(translate(h.text, chr(1) || chr(2), ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
)
_WHOLE = "HighlightAll=true, StartSel=\x01, StopSel=\x02"
_FRAGMENTS = 'MaxFragments=2, MaxWords=24, MinWords=10, FragmentDelimiter=" … ", StartSel=\x01, StopSel=\x02'


def _headline(pos: sql.Composable) -> sql.Composable:
    """The text HTML-escaped, matches between \\x01 and \\x02 (no message holds either: control
    characters are refused), which ``_marked`` turns into ``<mark>`` tags."""
    return sql.SQL("""CASE WHEN numnode({pos}) = 0 THEN ''
        WHEN length(h.text) <= %(short)s THEN ts_headline('english'::regconfig, {text}, {pos}, %(whole)s)
        ELSE ts_headline('english'::regconfig, {text}, {pos}, %(fragments)s) END""").format(pos=pos, text=_ESCAPED)


def _marked(headline: str | None) -> str:
    return (headline or "").replace("\x01", "<mark>").replace("\x02", "</mark>")


_NEWEST = ("m.created_at DESC, m.message_id DESC", "h.created_at DESC, h.message_id DESC")
_RELEVANCE = ("rank DESC, m.created_at DESC, m.message_id DESC", "h.rank DESC, h.created_at DESC, h.message_id DESC")


def _select(
    table: str, query: SearchQuery, channels: Sequence[str], limit: int, cursor: tuple[Any, ...] | None
) -> tuple[sql.Composable, dict[str, Any]]:
    pos, params = _tsquery(query.words, query.phrases, "pos", "&&")
    neg, neg_params = _tsquery(query.not_words, query.not_phrases, "neg", "||")
    params |= neg_params | {
        "workspace_id": query.workspace_id,
        "channels": list(channels),
        "limit": limit,
        "authors": list(query.authors or ()),
        "start": query.start,
        "end": query.end,
        "short": SHORT_TEXT,
        "whole": _WHOLE,
        "fragments": _FRAGMENTS,
    }
    where = [sql.SQL("m.workspace_id = %(workspace_id)s"), sql.SQL("m.channel_id = ANY(%(channels)s)")]
    if query.has_text:
        # Folded at plan time into either "true" (nothing searchable) or the bare, indexable @@.
        where.append(sql.SQL("(numnode({pos}) = 0 OR m.tsv @@ {pos})").format(pos=pos))
    if query.not_words or query.not_phrases:
        where.append(sql.SQL("(numnode({neg}) = 0 OR NOT m.tsv @@ {neg})").format(neg=neg))
    where += _filters(query)
    rank = (
        sql.SQL("CASE WHEN numnode({pos}) = 0 THEN 0::real ELSE ts_rank(m.tsv, {pos}) END").format(pos=pos)
        if query.has_text
        else sql.SQL("0::real")
    )
    inner_order, outer_order = _RELEVANCE if query.sort == "relevance" else _NEWEST
    if cursor is not None:
        params |= {"c_rank": cursor[0], "c_at": cursor[1], "c_id": cursor[2]}
        where.append(
            sql.SQL("({rank}, m.created_at, m.message_id) < (%(c_rank)s::real, %(c_at)s, %(c_id)s)").format(rank=rank)
            if query.sort == "relevance"
            else sql.SQL("(m.created_at, m.message_id) < (%(c_at)s, %(c_id)s)")
        )
    statement = sql.SQL("""SELECT h.message_id, h.created_at, h.rank, {headline} FROM (
            SELECT m.message_id, m.created_at, m.text, {rank} AS rank FROM {table} m
            WHERE {where} ORDER BY {inner_order} LIMIT %(limit)s) AS h
        ORDER BY {outer_order}""").format(
        headline=_headline(pos) if query.has_text else sql.SQL("''"),
        rank=rank,
        table=sql.Identifier(table),
        where=sql.SQL(" AND ").join(where),
        inner_order=sql.SQL(inner_order),
        outer_order=sql.SQL(outer_order),
    )
    return statement, params


def _cursor(query: SearchQuery, after: list[Any] | None) -> tuple[Any, ...] | None:
    """``after`` as handed out by ``_next``: ``[rank, created_at, message_id]``."""
    if after is None:
        return None
    match after:
        case [int() | float() as rank, str() as at, str() as message_id] if len(message_id) <= 64:
            try:
                created_at = dt.datetime.fromisoformat(at)
            except ValueError:
                raise BadCursor("not a time") from None
            if created_at.tzinfo is None:
                raise BadCursor("not an aware time")
            return float(rank), created_at, message_id
    raise BadCursor("not a search cursor of this server")


def _next(row: tuple[Any, ...]) -> list[Any]:
    message_id, created_at, rank, _ = row
    return [float(rank), created_at.isoformat(), message_id]


def _filters(query: SearchQuery) -> list[sql.Composable]:
    found = []
    if query.authors is not None:
        found.append(sql.SQL("m.author_id = ANY(%(authors)s)"))
    if query.start is not None:
        found.append(sql.SQL("m.created_at >= %(start)s"))
    if query.end is not None:
        found.append(sql.SQL("m.created_at < %(end)s"))
    if query.has_file:
        found.append(sql.SQL("m.has_file"))
    if query.has_link:
        found.append(sql.SQL("m.has_link"))
    if query.has_reaction:
        found.append(sql.SQL("m.reaction_keys <> '{}'"))
    if query.is_thread:
        found.append(sql.SQL("(m.thread_root_id IS NOT NULL OR m.reply_count > 0)"))
    return found
