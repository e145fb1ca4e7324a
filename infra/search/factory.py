"""The search backend ``HUBBUB_SEARCH_BACKEND`` names, opened for the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from infra.aio import close_within
from infra.search.port import SearchIndex
from infra.search.postgres import PostgresSearchIndex
from infra.settings import Settings


@contextlib.asynccontextmanager
async def open_search_index(settings: Settings) -> AsyncIterator[SearchIndex]:
    """PostgreSQL full text (nothing to open), or an OpenSearch client whose index is created
    with its mapping if missing; closed on exit."""
    if settings.search_backend != "opensearch":
        yield PostgresSearchIndex()
        return
    from infra.search.opensearch import OpenSearchIndex  # only deployments that use it need the client

    assert settings.opensearch_url is not None  # load_settings refuses opensearch without a URL
    index = OpenSearchIndex.connect(settings.opensearch_url, settings.opensearch_index)
    try:
        await index.ensure_index()
        yield index
    finally:
        await close_within("opensearch client", index.close)
