"""OpenSearch as the search index (``HUBBUB_SEARCH_BACKEND=opensearch``), through opensearch-py.

The projection ``search_opensearch`` feeds it; its checkpoint stays in PostgreSQL with the others,
beside a one-row table ``search_opensearch_index`` that names the alias it writes. Dropping that
table makes the runtime replay the log into the index from the start (the way to re-feed a lost or
wiped index); ``hubbub projections rebuild`` is refused for it, because a replay would write old
states of messages over newer ones in the live index while it ran.

Writes: every change of a projection batch goes out as one ``_bulk`` request, in log order, with
``refresh=true`` (so that a query that waited for the checkpoint finds the change: read your
writes) and ``require_alias=true`` (an index that was deleted is reported, never recreated by the
write with a guessed mapping). A post indexes the whole document; an edit is a partial update;
reactions and thread replies are scripted set additions and removals; a deletion deletes. Each
can be applied again after a batch is retried. An update or delete of a document that is not
there (a deleted message) is not an error.

Queries: the same language as the PostgreSQL backend, as a ``bool`` query: words in one ``match``
(operator ``and``), each phrase a ``match_phrase``, exclusions in ``must_not``, every operator a
``filter``. A part with nothing searchable after analysis (stop words) matches everything
(``zero_terms_query: all``), as PostgreSQL drops such a part. The ``english`` analyzer stems as
PostgreSQL's ``english`` configuration does (both Porter-style); rare words may stem differently.
Highlights are HTML-escaped by the highlighter (``encoder: html``), matches in ``<mark>``.
Cursors are ``search_after`` on the hit's sort values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, assert_never

import psycopg
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import RequestError

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

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,200}")
MAPPING_VERSION = 1

SETTINGS = {"index": {"number_of_shards": 1, "refresh_interval": "1s"}}
MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "message_id": {"type": "keyword"},
        "workspace_id": {"type": "keyword"},
        "channel_id": {"type": "keyword"},
        "author_id": {"type": "keyword"},
        "created_at": {"type": "date"},
        "edited_at": {"type": "date"},
        "text": {"type": "text", "analyzer": "english", "index_options": "offsets"},
        "thread_root_id": {"type": "keyword"},
        "reply_ids": {"type": "keyword"},
        "has_file": {"type": "boolean"},
        "has_link": {"type": "boolean"},
        "reaction_keys": {"type": "keyword"},
        "position": {"type": "long"},
    },
}

_ADD = (
    "if (ctx._source[params.f] == null) { ctx._source[params.f] = []; } "
    "if (ctx._source[params.f].contains(params.v)) { ctx.op = 'noop'; } else { ctx._source[params.f].add(params.v); }"
)
_REMOVE = (
    "if (ctx._source[params.f] != null && ctx._source[params.f].contains(params.v)) { "
    "ctx._source[params.f].remove(ctx._source[params.f].indexOf(params.v)); } else { ctx.op = 'noop'; }"
)


class OpenSearchWriteError(RuntimeError):
    """A bulk request had failures other than "that document is not there"; the batch is retried."""


class RebuildRefused(RuntimeError):
    pass


def bulk_body(alias: str, changes: Sequence[Change]) -> list[dict[str, Any]]:
    """The ``_bulk`` lines for ``changes``, in order."""
    body: list[dict[str, Any]] = []
    for change in changes:
        match change:
            case Indexed(doc=d):
                body += [
                    {"index": {"_index": alias, "_id": d.message_id}},
                    {
                        "message_id": d.message_id,
                        "workspace_id": d.workspace_id,
                        "channel_id": d.channel_id,
                        "author_id": d.author_id,
                        "created_at": d.created_at.isoformat(),
                        "text": d.text,
                        "thread_root_id": d.thread_root_id,
                        "has_file": d.has_file,
                        "has_link": d.has_link,
                        "reaction_keys": [],
                        "reply_ids": [],
                        "position": d.position,
                    },
                ]
            case TextChanged():
                body += [
                    {"update": {"_index": alias, "_id": change.message_id}},
                    {
                        "doc": {
                            "text": change.text,
                            "has_link": change.has_link,
                            "edited_at": change.edited_at.isoformat(),
                        }
                    },
                ]
            case Reacted():
                body += _scripted(alias, change.message_id, "reaction_keys", change.key, change.present)
            case Replied():
                body += _scripted(alias, change.root_id, "reply_ids", change.reply_id, change.present)
            case Removed():
                body.append({"delete": {"_index": alias, "_id": change.message_id}})
            case _:
                assert_never(change)
    return body


def _scripted(alias: str, doc_id: str, field: str, value: str, add: bool) -> list[dict[str, Any]]:
    return [
        {"update": {"_index": alias, "_id": doc_id}},
        {"script": {"lang": "painless", "source": _ADD if add else _REMOVE, "params": {"f": field, "v": value}}},
    ]


def bulk_failures(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The failed items of a ``_bulk`` response, leaving out updates and deletes of missing docs."""
    if not response.get("errors"):
        return []
    failed = []
    for item in response.get("items", []):
        ((action, result),) = item.items()
        if result.get("status", 200) < 300 or (result.get("status") == 404 and action in ("update", "delete")):
            continue
        failed.append({action: result})
    return failed


def search_body(query: SearchQuery, channels: Sequence[str], size: int, after: list[Any] | None) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [
        {"term": {"workspace_id": query.workspace_id}},
        {"terms": {"channel_id": list(channels)}},
    ]
    if query.authors is not None:
        filters.append({"terms": {"author_id": list(query.authors)}})
    if query.start is not None or query.end is not None:
        bounds = {
            "gte": query.start.isoformat() if query.start else None,
            "lt": query.end.isoformat() if query.end else None,
        }
        filters.append({"range": {"created_at": {k: v for k, v in bounds.items() if v is not None}}})
    filters += [
        {"term": {flag: True}} for flag, on in (("has_file", query.has_file), ("has_link", query.has_link)) if on
    ]
    if query.has_reaction:
        filters.append({"exists": {"field": "reaction_keys"}})
    if query.is_thread:
        filters.append(
            {
                "bool": {
                    "should": [{"exists": {"field": "thread_root_id"}}, {"exists": {"field": "reply_ids"}}],
                    "minimum_should_match": 1,
                }
            }
        )
    must = _positive(query)
    must_not = [{"match": {"text": {"query": w, "operator": "and"}}} for w in query.not_words]
    must_not += [{"match_phrase": {"text": {"query": p}}} for p in query.not_phrases]
    body: dict[str, Any] = {
        "size": size,
        "_source": False,
        "track_total_hits": False,
        "query": {"bool": {"filter": filters, "must": must, "must_not": must_not}},
        "sort": _sort(query),
    }
    if must:
        body["highlight"] = {
            "type": "unified",
            "encoder": "html",
            "pre_tags": ["<mark>"],
            "post_tags": ["</mark>"],
            "fields": {"text": {"fragment_size": 150, "number_of_fragments": 2, "no_match_size": 0}},
        }
    if after is not None:
        body["search_after"] = after
    return body


def _positive(query: SearchQuery) -> list[dict[str, Any]]:
    must: list[dict[str, Any]] = []
    if query.words:
        must.append({"match": {"text": {"query": " ".join(query.words), "operator": "and", "zero_terms_query": "all"}}})
    must += [{"match_phrase": {"text": {"query": p, "zero_terms_query": "all"}}} for p in query.phrases]
    return must


def _sort(query: SearchQuery) -> list[dict[str, Any]]:
    newest = [{"created_at": {"order": "desc"}}, {"message_id": {"order": "desc"}}]
    return [{"_score": {"order": "desc"}}, *newest] if query.sort == "relevance" else newest


def check_after(query: SearchQuery, after: list[Any] | None) -> None:
    """``after`` must look like the sort values this backend hands out for ``query.sort``."""
    if after is None:
        return
    kinds: tuple[tuple[type, ...], ...] = ((int,), (str,))
    if query.sort == "relevance":
        kinds = ((int, float), *kinds)
    if len(after) != len(kinds) or not all(
        isinstance(v, k) and not isinstance(v, bool) for v, k in zip(after, kinds, strict=True)
    ):
        raise BadCursor("not a search cursor of this server")
    if len(after[-1]) > 64:
        raise BadCursor("not a search cursor of this server")


def hits_of(response: dict[str, Any], limit: int) -> Hits:
    found = response.get("hits", {}).get("hits", [])
    hits = [Hit(h["_id"], " … ".join(h.get("highlight", {}).get("text", []))) for h in found[:limit]]
    return Hits(hits, list(found[limit - 1]["sort"]) if len(found) > limit > 0 else None)


class OpenSearchIndex:
    projection_name = "search_opensearch"
    tables: Sequence[str] = ("search_opensearch_index",)

    def __init__(self, client: AsyncOpenSearch, alias: str) -> None:
        if not _NAME.fullmatch(alias):
            raise ValueError(
                f"HUBBUB_OPENSEARCH_INDEX must be lower-case letters, digits, '.', '_' or '-', not {alias!r}"
            )
        self.client = client
        self.alias = alias

    @classmethod
    def connect(cls, url: str, alias: str) -> OpenSearchIndex:
        return cls(
            AsyncOpenSearch(hosts=[url], http_compress=True, timeout=10, max_retries=2, retry_on_timeout=True), alias
        )

    @property
    def index_name(self) -> str:
        return f"{self.alias}-v{MAPPING_VERSION}"

    async def ensure_index(self) -> None:
        """Create the index with its mapping, behind the alias, unless the alias exists."""
        if await self.client.indices.exists_alias(name=self.alias):
            return
        body = {"settings": SETTINGS, "mappings": MAPPINGS, "aliases": {self.alias: {}}}
        try:
            await self.client.indices.create(index=self.index_name, body=body)
        except RequestError as exc:
            if exc.error != "resource_already_exists_exception":  # another process made it first
                raise

    async def close(self) -> None:
        await self.client.close()

    def schema(self, suffix: str = "") -> str:
        table = f"search_opensearch_index{suffix}"
        return (
            f"CREATE TABLE IF NOT EXISTS {table} (alias text NOT NULL, "
            f"CONSTRAINT {table}_pkey PRIMARY KEY (alias));\n"
            f"INSERT INTO {table} (alias) VALUES ('{self.alias}') ON CONFLICT DO NOTHING;\n"
        )

    async def write(self, conn: psycopg.AsyncConnection, changes: Sequence[Change], suffix: str = "") -> None:
        if suffix:
            raise RebuildRefused(
                "the OpenSearch index is not rebuilt beside the live one; to re-feed it from the "
                "log, DROP TABLE search_opensearch_index and restart (the projection starts over)"
            )
        if not changes:
            return
        response = await self.client.bulk(body=bulk_body(self.alias, changes), refresh="true", require_alias="true")
        if failed := bulk_failures(response):
            raise OpenSearchWriteError(f"{len(failed)} bulk item(s) failed, first: {failed[0]}")

    async def search(
        self,
        conn: psycopg.AsyncConnection,
        query: SearchQuery,
        visible: Sequence[str],
        limit: int,
        after: list[Any] | None,
    ) -> Hits:
        check_after(query, after)
        channels = searched_channels(query, visible)
        if nothing_to_find(query, channels):
            return Hits([])
        response = await self.client.search(index=self.alias, body=search_body(query, channels, limit + 1, after))
        return hits_of(response, limit)
