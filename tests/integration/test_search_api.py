"""``GET /workspaces/{ws}/search`` over HTTP, with the app's projectors feeding the index: names
in operators, who may find what (member, non-member, guest, removed member, DM third party,
membership changes), edits and deletes, read-your-writes, paging, and every kind of bad input.

Run against each search backend: PostgreSQL always, OpenSearch where ``HUBBUB_OPENSEARCH_URL`` is
set (the app then feeds and queries an index of its own, deleted afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    accept,
    add_to_channel,
    at,
    create_channel,
    create_workspace,
    invite,
    join_channel,
    join_workspace,
    open_dm,
    problem,
)

BACKENDS = ["postgres", pytest.param("opensearch", marks=pytest.mark.opensearch)]


@pytest.fixture(scope="module", params=BACKENDS)
async def api(
    request: pytest.FixtureRequest, service_urls: dict[str, str], migrated_url: str
) -> AsyncIterator[AsyncTestClient]:
    extra: dict[str, str] = {}
    if request.param == "opensearch":
        url = os.environ.get("HUBBUB_OPENSEARCH_URL")
        if not url:
            pytest.skip("OpenSearch search tests need HUBBUB_OPENSEARCH_URL (no OpenSearch server on this machine)")
        extra = {
            "search_backend": "opensearch",
            "opensearch_url": url,
            "opensearch_index": f"hubbub-test-{uuid.uuid4().hex[:8]}",
        }
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
        **extra,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client
        if extra:
            index = client.app.state["services"].search
            await index.client.indices.delete(index=index.index_name, ignore_unavailable=True)


async def post(api: AsyncTestClient, team: Team, channel_id: str, user: User, text: str, **extra: object) -> str:
    response = await api.post(f"{API}/channels/{channel_id}/messages", json={"text": text, **extra}, headers=user.auth)
    assert response.status_code == 201, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["id"]


async def command(api: AsyncTestClient, team: Team, method: str, path: str, user: User, body: object = None) -> None:
    response = await api.request(method, f"{API}{path}", headers=user.auth, **({} if body is None else {"json": body}))
    assert response.status_code == 200, response.text
    team.position = max(team.position, int(response.headers["X-Hubbub-Position"]))


async def search(api: AsyncTestClient, team: Team, user: User, q: str, **params: str | int):
    return await api.get(
        f"{API}/workspaces/{team.workspace_id}/search", params={"q": q, **params}, headers=at(user, team.position)
    )


async def found(api: AsyncTestClient, team: Team, user: User, q: str, **params: str | int) -> list[str]:
    response = await search(api, team, user, q, **params)
    assert response.status_code == 200, response.text
    return [item["message"]["id"] for item in response.json()["items"]]


@pytest.fixture
async def team(api: AsyncTestClient) -> Team:
    """Owner, Ada Lovelace and Bob (members), Gus (a guest); #plaza (public, Gus in it), #lobby
    (public, Gus not in it), #secret (private: Owner and Ada)."""
    team = await create_workspace(api, await register(api, "Owner"), "Searchers")
    response = await api.post(
        f"{API}/auth/register",
        json={
            "email": f"ada-{uuid.uuid4().hex[:8]}@example.com",
            "password": "correct horse battery",
            "display_name": "Ada Lovelace",
        },
    )
    assert response.status_code == 201, response.text
    ada = User(response.json()["user"]["id"], "", response.json()["token"], "Ada Lovelace")
    await accept(api, team, ada, await invite(api, team))
    team.people["Ada Lovelace"] = ada
    for name, role in (("Bob", "member"), ("Gus", "guest")):
        await join_workspace(api, team, name, role)
    people = team.people
    team.channels = {  # type: ignore[attr-defined]
        "plaza": await create_channel(api, team, team.owner, "plaza"),
        "lobby": await create_channel(api, team, team.owner, "lobby"),
        "secret": await create_channel(api, team, team.owner, "secret", private=True),
    }
    await add_to_channel(api, team, team.channels["plaza"], team.owner, people["Gus"])  # type: ignore[attr-defined]
    await add_to_channel(api, team, team.channels["secret"], team.owner, people["Ada Lovelace"])  # type: ignore[attr-defined]
    return team


async def test_a_message_is_found_as_soon_as_its_post_is_answered(api: AsyncTestClient, team: Team) -> None:
    message = await post(api, team, team.channels["plaza"], team.owner, "Rollout of the zeppelin feature")
    response = await search(api, team, team.owner, "zeppelins rollout")
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers
    (item,) = response.json()["items"]
    assert (
        item["message"]["id"] == message and item["message"]["seq"] >= 1 and item["message"]["text"].startswith("Roll")
    )
    assert "<mark>zeppelin</mark>" in item["highlight"] and response.json()["next_cursor"] is None


async def test_from_and_in_by_name_or_id(api: AsyncTestClient, team: Team) -> None:
    ada, bob = team.people["Ada Lovelace"], team.people["Bob"]
    await join_channel(api, team, team.channels["plaza"], ada)
    await join_channel(api, team, team.channels["lobby"], bob)
    by_ada = await post(api, team, team.channels["plaza"], ada, "quarterly numbers")
    by_bob = await post(api, team, team.channels["lobby"], bob, "quarterly numbers")
    assert await found(api, team, bob, "quarterly") == [by_bob, by_ada]
    for q in ('from:@"Ada Lovelace"', "from:@ada.lovelace", "from:adalovelace", f"from:{ada.id}", "from:@ADA_LOVELACE"):
        assert await found(api, team, bob, f"quarterly {q}") == [by_ada], q
    assert await found(api, team, bob, "quarterly from:me") == [by_bob]
    assert await found(api, team, bob, "quarterly from:@ada from:@nobody") == []
    assert await found(api, team, bob, "quarterly from:@ada.lovelace from:@bob") == [by_bob, by_ada]
    assert await found(api, team, bob, "quarterly in:#lobby") == [by_bob]
    assert await found(api, team, bob, f"quarterly in:{team.channels['plaza']}") == [by_ada]
    assert await found(api, team, bob, "quarterly in:#nowhere") == []


async def test_each_person_finds_only_what_they_may_see_now(api: AsyncTestClient, team: Team) -> None:
    owner, ada, bob, gus = team.owner, team.people["Ada Lovelace"], team.people["Bob"], team.people["Gus"]
    ch = team.channels
    plaza = await post(api, team, ch["plaza"], owner, "walrus in the plaza")
    lobby = await post(api, team, ch["lobby"], owner, "walrus in the lobby")
    secret = await post(api, team, ch["secret"], ada, "walrus in the secret room")
    dm = await post(api, team, await open_dm(api, team, owner, ada), ada, "walrus, between us")
    group = await post(api, team, await open_dm(api, team, owner, ada, gus), gus, "walrus for three")
    assert set(await found(api, team, owner, "walrus")) == {plaza, lobby, secret, dm, group}
    assert set(await found(api, team, ada, "walrus")) == {plaza, lobby, secret, dm, group}
    assert set(await found(api, team, bob, "walrus")) == {plaza, lobby}  # public channels, not joined: yes
    assert set(await found(api, team, gus, "walrus")) == {plaza, group}  # a guest: only their channels
    assert await found(api, team, bob, f"walrus in:{ch['secret']}") == []
    stranger = await register(api, "Stranger")
    problem(await search(api, team, stranger, "walrus"), 404)

    await add_to_channel(api, team, ch["secret"], owner, bob)
    assert set(await found(api, team, bob, "walrus")) == {plaza, lobby, secret}
    await command(api, team, "DELETE", f"/channels/{ch['secret']}/members/{ada.id}", owner)
    assert set(await found(api, team, ada, "walrus")) == {plaza, lobby, dm, group}
    await command(api, team, "DELETE", f"/workspaces/{team.workspace_id}/members/{gus.id}", owner)
    problem(await search(api, team, gus, "walrus"), 404)


async def test_edits_are_reindexed_and_deleted_messages_disappear(api: AsyncTestClient, team: Team) -> None:
    owner = team.owner
    message = await post(api, team, team.channels["plaza"], owner, "the first draft")
    root = await post(api, team, team.channels["plaza"], owner, "a thread about drafts")
    reply = await post(api, team, team.channels["plaza"], owner, "a reply about drafts", thread_root_id=root)
    await command(api, team, "PATCH", f"/messages/{message}", owner, {"text": "the final version, see www.example.com"})
    assert await found(api, team, owner, "first") == []
    assert await found(api, team, owner, "draft") == [reply, root]
    assert await found(api, team, owner, "final") == [message]
    assert await found(api, team, owner, "has:link") == [message]
    await command(api, team, "PUT", f"/messages/{message}/reactions/{quote('👍', safe='')}", owner)
    assert await found(api, team, owner, "has:reaction") == [message]
    assert await found(api, team, owner, "is:thread") == [reply, root]
    await command(api, team, "DELETE", f"/messages/{reply}", owner)
    assert await found(api, team, owner, "drafts") == [root]
    assert await found(api, team, owner, "is:thread") == []
    await command(api, team, "DELETE", f"/messages/{message}", owner)
    assert await found(api, team, owner, "final") == [] and await found(api, team, owner, "has:reaction") == []


async def test_pages_follow_next_cursor_to_the_end(api: AsyncTestClient, team: Team) -> None:
    posted = [await post(api, team, team.channels["lobby"], team.owner, f"tick {i}") for i in range(5)]
    for sort in ("newest", "relevance"):
        seen, cursor = [], None
        while True:
            params: dict[str, str | int] = {"limit": 2, "sort": sort, **({"cursor": cursor} if cursor else {})}
            body = (await search(api, team, team.owner, "tick", **params)).json()
            seen += [item["message"]["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == posted[::-1], sort


@pytest.mark.parametrize(
    ("q", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 1001, "at most 1000"),
        ("on:2024-02-30", "not a date"),
        ("before:tomorrow", "not a date"),
        ("after:2024-13-01", "not a date"),
        ("has:pizza", "has: takes"),
        ("is:dm", "is: takes"),
        ("&& || ;", "nothing to search for"),
    ],
)
async def test_bad_queries_are_a_422_on_q(api: AsyncTestClient, team: Team, q: str, why: str) -> None:
    body = problem(await search(api, team, team.owner, q), 422)
    assert why in body["detail"] and body["errors"][0]["field"] == "q"


async def test_a_missing_q_is_a_422(api: AsyncTestClient, team: Team) -> None:
    response = await api.get(f"{API}/workspaces/{team.workspace_id}/search", headers=at(team.owner, team.position))
    assert problem(response, 422)["errors"][0]["field"] == "q"


@pytest.mark.parametrize(
    "q",
    [
        '"unbalanced quote',
        'two "unbalanced" quotes"',
        "'; DROP TABLE search_messages; --",
        "text' OR '1'='1",
        "title:walrus AND (body:x OR y)~2 +must -not \\*",
        "walrus:* & !x | y <-> z",
        "unknown:operator walrus",
        "walrus\x00nul",
        "wal%rus_",
        "a" * 1000,
        "walrus " * 142,
        "🎉 字 é walrus",
        'from:@"\'; DROP TABLE users; --"',
        "in:#'; DELETE FROM channels; --",
        '-walrus -"x y"',
    ],
)
async def test_odd_queries_are_searched_and_never_leak(api: AsyncTestClient, team: Team, q: str) -> None:
    await post(api, team, team.channels["secret"], team.owner, "walrus with secret plans: '; DROP TABLE x; --")
    response = await search(api, team, team.people["Bob"], q)
    assert response.status_code == 200, response.text
    assert all(item["message"]["channel_id"] != team.channels["secret"] for item in response.json()["items"])


@pytest.mark.parametrize(
    "raw",
    [
        "q=%FF%FE",
        "q=%ED%A0%80walrus",
        "q=walrus&q=again",
        "q=%00",
        "q=walrus&limit=0",
        "q=walrus&limit=201",
        "q=walrus&limit=ten",
        "q=walrus&sort=oldest",
        "q=walrus&cursor=not-a-cursor",
        "q=walrus&cursor=%FF",
        "q=walrus&cursor=eyJ9",
    ],
)
async def test_malformed_parameters_are_a_4xx_or_a_search(api: AsyncTestClient, team: Team, raw: str) -> None:
    response = await api.get(
        f"{API}/workspaces/{team.workspace_id}/search?{raw}", headers=at(team.owner, team.position)
    )
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_cursor_goes_with_its_sort(api: AsyncTestClient, team: Team) -> None:
    for i in range(3):
        await post(api, team, team.channels["lobby"], team.owner, f"tock {i}")
    cursor = (await search(api, team, team.owner, "tock", limit=1)).json()["next_cursor"]
    body = problem(await search(api, team, team.owner, "tock", limit=1, sort="relevance", cursor=cursor), 422)
    assert body["errors"][0]["field"] == "cursor" and "sort=newest" in body["detail"]


@pytest.mark.parametrize("workspace", ["nope", "00000000-0000-0000-0000-000000000000", "%00"])
async def test_an_unknown_workspace_is_a_404(api: AsyncTestClient, team: Team, workspace: str) -> None:
    problem(await api.get(f"{API}/workspaces/{workspace}/search", params={"q": "x"}, headers=team.owner.auth), 404)


async def test_a_bad_position_header_is_a_400_and_no_token_a_401(api: AsyncTestClient, team: Team) -> None:
    path = f"{API}/workspaces/{team.workspace_id}/search"
    problem(await api.get(path, params={"q": "x"}, headers={**team.owner.auth, "X-Hubbub-Position": "soon"}), 400)
    problem(await api.get(path, params={"q": "x"}), 401)


async def test_has_file_finds_messages_that_share_files(api: AsyncTestClient, team: Team) -> None:
    owner, channel = team.owner, team.channels["lobby"]  # type: ignore[attr-defined]
    response = await api.post(
        f"{API}/workspaces/{team.workspace_id}/files",
        files={"file": ("notes.txt", b"meeting notes", "text/plain")},
        headers=owner.auth,
    )
    assert response.status_code == 201, response.text
    team.position = max(team.position, response.json()["position"])
    with_file = await post(api, team, channel, owner, "notes attached", file_ids=[response.json()["id"]])
    await post(api, team, channel, owner, "notes to follow")
    assert await found(api, team, owner, "notes has:file") == [with_file]
    assert await found(api, team, team.people["Gus"], "has:file") == []  # a guest outside #lobby
