"""The ``search`` projection rebuilt from the log equals its live table (``search_messages``),
and searches answer the same before and after the swap; the live projector carries on in the
swapped-in table. The story touches every event the projection reads: posts (with links and
thread replies), edits, deletions of replies and roots, reactions added and removed."""

from __future__ import annotations

from urllib.parse import quote

from litestar.testing import AsyncTestClient

from infra.eventstore.postgres import PostgresEventStore
from projections.rebuild import rebuild
from projections.search import Search
from tests.integration.conftest import register
from tests.integration.messaging_helpers import API, Team, at, create_channel, create_workspace, join_workspace
from tests.integration.test_search_api import command, found, post

QUERIES = ["plan", "draft", "has:link", "has:reaction", "is:thread", "-plan", '"the plan"', "from:me has:reaction"]


async def tell(api: AsyncTestClient) -> Team:
    team = await create_workspace(api, await register(api, "Owner"), "Rebuilt search")
    mem = await join_workspace(api, team, "Mem")
    channel = await create_channel(api, team, team.owner, "plans")
    await command(api, team, "POST", f"/channels/{channel}/members", team.owner, {"user_ids": [mem.id]})
    root = await post(api, team, channel, team.owner, "the plan, see https://example.com/plan")
    reply = await post(api, team, channel, mem, "a draft of the plan", thread_root_id=root)
    await post(api, team, channel, mem, "another draft reply", thread_root_id=root)
    edited = await post(api, team, channel, mem, "first draft")
    await command(api, team, "PATCH", f"/messages/{edited}", mem, {"text": "final plan at www.example.org"})
    doomed_root = await post(api, team, channel, team.owner, "a doomed plan")
    await post(api, team, channel, mem, "reply to a doomed plan", thread_root_id=doomed_root)
    await command(api, team, "DELETE", f"/messages/{doomed_root}", team.owner)
    await command(api, team, "DELETE", f"/messages/{reply}", mem)
    for user, emoji, message in ((team.owner, "👍", root), (mem, "👍", root), (mem, ":tada:", edited)):
        await command(api, team, "PUT", f"/messages/{message}/reactions/{quote(emoji, safe='')}", user)
    await command(api, team, "DELETE", f"/messages/{root}/reactions/{quote('👍', safe='')}", mem)
    team.channels = {"plans": channel}  # type: ignore[attr-defined]
    return team


async def answers(api: AsyncTestClient, team: Team) -> list[list[str]]:
    people = [team.owner, *team.people.values()]
    return [await found(api, team, user, q) for user in people for q in QUERIES]


async def test_rebuilding_search_gives_the_live_table(api: AsyncTestClient, pool, migrated_url: str) -> None:
    team = await tell(api)
    before = await answers(api, team)
    assert all(before[:4])
    store = PostgresEventStore(pool, migrated_url)
    try:
        result = await rebuild(migrated_url, store, Search(), verify=True)
    finally:
        await store.close()
    assert result.had_live and result.identical, [d for d in result.diffs if d.differs]
    assert result.swapped and result.position >= team.position and result.diffs[0].live_rows > 0
    assert await answers(api, team) == before

    after = await post(api, team, team.channels["plans"], team.owner, "a plan after the rebuild")  # type: ignore[attr-defined]
    assert (await found(api, team, team.owner, "plan"))[0] == after
    response = await api.get(
        f"{API}/workspaces/{team.workspace_id}/search", params={"q": "rebuild"}, headers=at(team.owner, team.position)
    )
    assert [item["message"]["id"] for item in response.json()["items"]] == [after]
