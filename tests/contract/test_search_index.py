"""The SearchIndex port's contract, run against every backend: PostgreSQL full text always,
OpenSearch where ``HUBBUB_OPENSEARCH_URL`` points at a server (else skipped, with that reason).

Changes go in through ``write`` as the search projection sends them (one batch per call, in log
order, inside a PostgreSQL transaction); queries are ``SearchQuery``s as the route builds them
from the query language. Every test has a workspace of its own, so tests share one index.
Who may see which channel is the route's business (``visible`` is given here); that the index
never answers from outside ``visible`` is this suite's.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import pytest

from domain.searchquery import InvalidQuery, parse
from infra.search.port import (
    BadCursor,
    Change,
    Indexed,
    Reacted,
    Removed,
    Replied,
    SearchDoc,
    SearchIndex,
    SearchQuery,
    TextChanged,
)
from infra.search.postgres import PostgresSearchIndex
from readapi.search import search_query

BACKENDS = ["postgres", pytest.param("opensearch", marks=pytest.mark.opensearch)]
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module", params=BACKENDS)
async def index(request: pytest.FixtureRequest, pool) -> AsyncIterator[SearchIndex]:
    if request.param == "postgres":
        backend: SearchIndex = PostgresSearchIndex(table="search_contract")  # not the projection's table
        async with pool.connection() as conn:
            await conn.execute(backend.schema())
        yield backend
        return
    url = os.environ.get("HUBBUB_OPENSEARCH_URL")
    if not url:
        pytest.skip("OpenSearch contract tests need HUBBUB_OPENSEARCH_URL (no OpenSearch server on this machine)")
    from infra.search.opensearch import OpenSearchIndex

    opensearch = OpenSearchIndex.connect(url, f"hubbub-contract-{uuid.uuid4().hex[:8]}")
    await opensearch.ensure_index()
    try:
        yield opensearch
    finally:
        await opensearch.client.indices.delete(index=opensearch.index_name, ignore_unavailable=True)
        await opensearch.close()


@dataclass
class Space:
    """A workspace's worth of channels and people, written to ``index`` through ``pool``."""

    index: SearchIndex
    pool: object
    ws: str
    channels: list[str]
    people: list[str]
    position: int = 0

    def doc(
        self,
        text: str,
        *,
        channel: int = 0,
        author: int = 0,
        at: dt.datetime = T0,
        root: str | None = None,
        has_file: bool = False,
        has_link: bool = False,
    ) -> SearchDoc:
        self.position += 1
        return SearchDoc(
            str(uuid.uuid4()),
            self.ws,
            self.channels[channel],
            self.people[author],
            text,
            at,
            root,
            has_file,
            has_link,
            self.position,
        )

    async def write(self, *changes: Change) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await self.index.write(conn, list(changes))

    async def post(self, text: str, **kw) -> str:
        doc = self.doc(text, **kw)
        await self.write(
            Indexed(doc), *([Replied(doc.thread_root_id, doc.message_id, True)] if doc.thread_root_id else [])
        )
        return doc.message_id

    async def page(
        self, query: SearchQuery, visible: Sequence[str] | None = None, limit: int = 50, after: list | None = None
    ):
        async with self.pool.connection() as conn:
            return await self.index.search(conn, query, self.channels if visible is None else visible, limit, after)

    async def ids(self, q: str | SearchQuery, visible: Sequence[str] | None = None, **kw) -> list[str]:
        query = q if isinstance(q, SearchQuery) else self.query(q, **kw)
        return [hit.message_id for hit in (await self.page(query, visible)).hits]

    def query(
        self,
        q: str,
        sort: str = "newest",
        authors: tuple[str, ...] | None = None,
        channels: tuple[str, ...] | None = None,
    ) -> SearchQuery:
        return search_query(parse(q), self.ws, sort, authors, channels)  # type: ignore[arg-type]


@pytest.fixture
def space(index: SearchIndex, pool) -> Space:
    return Space(
        index, pool, str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)], [str(uuid.uuid4()) for _ in range(2)]
    )


def later(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


async def test_words_must_all_match_stemmed_and_in_any_case(space: Space) -> None:
    deploying = await space.post("We are DEPLOYING the release now", at=later(1))
    deployed = await space.post("deployed it yesterday, release notes follow", at=later(2))
    await space.post("lunch anyone?", at=later(3))
    assert await space.ids("deploy") == [deployed, deploying]
    assert await space.ids("Deploy RELEASES") == [deployed, deploying]
    assert await space.ids("deploy notes") == [deployed]
    assert await space.ids("deploy pizza") == []


async def test_an_exact_phrase_needs_its_words_in_that_order(space: Space) -> None:
    exact = await space.post("the quick fox jumps", at=later(1))
    await space.post("the fox is quick", at=later(2))
    await space.post("quick brown fox", at=later(3))
    assert await space.ids('"quick fox"') == [exact]
    assert set(await space.ids("quick fox")) == {exact, *await space.ids("fox quick")}


async def test_negated_words_and_phrases_exclude(space: Space) -> None:
    plain = await space.post("deploy on monday", at=later(1))
    friday = await space.post("deploy on friday", at=later(2))
    phrase = await space.post("deploy to production servers", at=later(3))
    assert await space.ids("deploy -friday") == [phrase, plain]
    assert await space.ids('deploy -"production servers"') == [friday, plain]
    assert await space.ids("-friday") == [phrase, plain]


async def test_stop_words_and_punctuation_alone_do_not_narrow(space: Space) -> None:
    one = await space.post("deploy the thing", at=later(1))
    two = await space.post("another deploy", at=later(2))
    assert await space.ids("the deploy") == [two, one]
    assert await space.ids('deploy "the"') == [two, one]
    assert await space.ids("deploy -the") == [two, one]


async def test_authors_and_channels_narrow_and_an_empty_set_finds_nothing(space: Space) -> None:
    ada = await space.post("status update", author=0, channel=0, at=later(1))
    bob = await space.post("status update", author=1, channel=1, at=later(2))
    assert await space.ids(space.query("status", authors=(space.people[0],))) == [ada]
    assert await space.ids(space.query("status", authors=(space.people[0], space.people[1]))) == [bob, ada]
    assert await space.ids(space.query("status", authors=())) == []
    assert await space.ids(space.query("status", channels=(space.channels[1],))) == [bob]
    assert await space.ids(space.query("status", channels=())) == []


async def test_nothing_from_outside_the_visible_channels(space: Space) -> None:
    mine = await space.post("secret plans", channel=0, at=later(1))
    await space.post("secret plans", channel=1, at=later(2))
    visible = [space.channels[0]]
    assert await space.ids("secret", visible=visible) == [mine]
    assert await space.ids(space.query("secret", channels=(space.channels[1],)), visible=visible) == []
    assert await space.ids("from:me", visible=[]) == []
    other = replace(space.query("secret"), workspace_id=str(uuid.uuid4()))  # same channels, other workspace
    assert await space.ids(other) == []


async def test_has_file_link_and_reaction(space: Space) -> None:
    file = await space.post("see attached", has_file=True, at=later(1))
    link = await space.post("see https://example.com", has_link=True, at=later(2))
    reacted = await space.post("see you", at=later(3))
    await space.write(
        Reacted(reacted, "👍 u1", True), Reacted(reacted, "👍 u1", True), Reacted(reacted, ":tada: u2", True)
    )
    assert await space.ids("has:file") == [file]
    assert await space.ids("see has:link") == [link]
    assert await space.ids("has:reaction") == [reacted]
    assert await space.ids("has:reaction has:file") == []
    await space.write(Reacted(reacted, "👍 u1", False))
    assert await space.ids("has:reaction") == [reacted]
    await space.write(Reacted(reacted, ":tada: u2", False), Reacted(reacted, ":tada: u2", False))
    assert await space.ids("has:reaction") == []


async def test_is_thread_means_a_reply_or_a_root_with_replies(space: Space) -> None:
    root = await space.post("root message", at=later(1))
    await space.post("lonely message", at=later(2))
    reply = await space.post("a reply", root=root, at=later(3))
    assert await space.ids("is:thread") == [reply, root]
    assert await space.ids("message is:thread") == [root]
    await space.write(Removed(reply), Replied(root, reply, False))
    assert await space.ids("is:thread") == []


async def test_dates_are_half_open_utc_days(space: Space) -> None:
    day = dt.datetime(2024, 2, 29, tzinfo=dt.UTC)
    before = await space.post("report", at=day - dt.timedelta(microseconds=1))
    start = await space.post("report", at=day)
    end = await space.post("report", at=day + dt.timedelta(hours=23, minutes=59, seconds=59))
    after = await space.post("report", at=day + dt.timedelta(days=1))
    assert await space.ids("report on:2024-02-29") == [end, start]
    assert await space.ids("report before:2024-02-29") == [before]
    assert await space.ids("report after:2024-02-29") == [after]
    assert await space.ids("report after:2024-02-28 before:2024-03-01") == [end, start]
    assert await space.ids("report after:2024-03-01 before:2024-03-01") == []


async def test_an_edit_replaces_the_text_and_link_flag(space: Space) -> None:
    message = await space.post("first draft at https://example.com", has_link=True, at=later(1))
    await space.write(TextChanged(message, "final version", False, later(5)))
    assert await space.ids("draft") == []
    assert await space.ids("final") == [message]
    assert await space.ids("has:link") == []


async def test_a_deleted_message_is_gone(space: Space) -> None:
    message = await space.post("regrettable words", at=later(1))
    await space.write(
        Removed(message),
        Removed(message),
        TextChanged(message, "regrettable", False, later(2)),
        Reacted(message, "👍 u1", True),
    )
    assert await space.ids("regrettable") == []
    assert await space.ids("has:reaction") == []


async def test_a_batch_applied_twice_ends_the_same(space: Space) -> None:
    doc = space.doc("version one", at=later(1))
    batch = [
        Indexed(doc),
        TextChanged(doc.message_id, "version two", False, later(2)),
        Reacted(doc.message_id, "👀 u1", True),
    ]
    await space.write(*batch)
    await space.write(*batch)
    assert await space.ids("two has:reaction") == [doc.message_id]
    assert await space.ids("one") == []


async def test_newest_first_pages_without_gaps_or_repeats(space: Space) -> None:
    posted = [await space.post(f"page item {i}", at=later(i % 3)) for i in range(7)]  # ties in time too
    query = space.query("item")
    seen, after = [], None
    while True:
        page = await space.page(query, limit=3, after=after)
        seen += [hit.message_id for hit in page.hits]
        if page.after is None:
            break
        after = page.after
    assert sorted(seen) == sorted(posted) and len(seen) == len(set(seen))
    assert seen == await space.ids(query)
    times = {m: later(i % 3) for i, m in enumerate(posted)}
    assert [times[m] for m in seen] == sorted((times[m] for m in seen), reverse=True)


async def test_relevance_puts_the_best_match_first_and_pages_too(space: Space) -> None:
    weak = await space.post("incident report: the database was slow, we looked at many other things today", at=later(2))
    strong = await space.post("database database database", at=later(1))
    query = space.query("database", sort="relevance")
    assert (await space.ids(query))[0] == strong
    first = await space.page(query, limit=1)
    second = await space.page(query, limit=1, after=first.after)
    assert [h.message_id for h in first.hits + second.hits] == [strong, weak] and second.after is None
    assert await space.ids("database") == [weak, strong]


async def test_highlights_mark_matches_in_escaped_html(space: Space) -> None:
    await space.post("use <script>alert(1)</script> & deploy carefully", at=later(1))
    (hit,) = (await space.page(space.query("deploy"))).hits
    assert "<mark>deploy</mark>" in hit.highlight
    assert "<script>" not in hit.highlight and "&lt;script&gt;" in hit.highlight
    (hit,) = (await space.page(space.query("from:me"))).hits
    assert hit.highlight == ""  # no words, nothing to mark: the route shows the text's start


@pytest.mark.parametrize(
    "after",
    [
        [],
        ["x"],
        [1, 2, 3, 4],
        ["a", "b", "c"],
        [0.5, "not a time", "id"],
        [0.5, "2024-01-01T00:00:00", "id"],
        [True, 1, "x"],
    ],
)
async def test_a_cursor_it_did_not_hand_out_is_refused(space: Space, after: list) -> None:
    with pytest.raises(BadCursor):
        await space.page(space.query("anything", sort="relevance"), after=after)


async def test_any_query_the_language_accepts_runs(space: Space) -> None:
    await space.post("ordinary words, a https://link and some 'quotes'", at=later(1))
    rng = random.Random(6)
    alphabet = [
        '"',
        "-",
        ":",
        "@",
        "#",
        " ",
        " ",
        "from:",
        "in:",
        "has:link",
        "is:thread",
        "on:2024-03-01",
        "before:9999-12-31",
        "after:0001-01-01",
        "'",
        ";",
        "\\",
        "(",
        ")",
        "*",
        "~",
        "&",
        "|",
        "!",
        "<->",
        "AND",
        "OR",
        "NOT",
        "é",
        "字",
        "🎉",
        "words",
        "ordinary",
        ":*",
        "\ud800",
        "\x00",
        "%",
        "_",
    ]
    for _ in range(150):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
        try:
            parsed = parse(q)
        except InvalidQuery:
            continue
        for sort in ("newest", "relevance"):
            await space.page(search_query(parsed, space.ws, sort, None, None))  # type: ignore[arg-type]
