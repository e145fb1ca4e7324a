"""Every production projection, rebuilt from the log, equals its live tables (issue 3, *Tests*).

A scripted story through the API touches every kind of messaging event: workspaces, invites
(members and a guest), role changes, a removal, public and private channels, joins, leaves,
additions and removals, a DM and a group DM, posts, edits, deletions, thread replies, reactions
and read markers. Then each projection of ``projections.registry.all_projections()`` is rebuilt
with ``verify=True`` while the app runs: every table must come out identical and be swapped in,
and the API must answer the same GETs the same way afterwards, and keep projecting new writes.
The log holds every other test module's events of this session too; they are replayed as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from litestar.testing import AsyncTestClient

from infra.eventstore.postgres import PostgresEventStore
from projections.rebuild import rebuild
from projections.registry import all_projections
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    add_to_channel,
    at,
    create_channel,
    create_workspace,
    join_channel,
    join_workspace,
    open_dm,
)


@dataclass
class Story:
    team: Team
    channels: dict[str, str]
    messages: dict[str, str]


async def command(
    api: AsyncTestClient, team: Team, method: str, path: str, user: User, body: object = None, status: int = 200
) -> dict:
    kwargs = {} if body is None else {"json": body}
    response = await api.request(method, f"{API}{path}", headers=user.auth, **kwargs)
    assert response.status_code == status, f"{method} {path}: {response.text}"
    team.position = max(team.position, int(response.headers["X-Hubbub-Position"]))
    return response.json()


async def post(api: AsyncTestClient, team: Team, channel_id: str, user: User, text: str, **extra: str) -> str:
    body = await command(api, team, "POST", f"/channels/{channel_id}/messages", user, {"text": text, **extra}, 201)
    return body["id"]


async def tell_the_story(api: AsyncTestClient) -> Story:
    team = await create_workspace(api, await register(api, "Owner"), "Rebuilt")
    owner = team.owner
    adm, mem, oth, gst, gone = [
        await join_workspace(api, team, name, role)
        for name, role in (("Adm", "admin"), ("Mem", "member"), ("Oth", "member"), ("Gst", "guest"), ("Gone", "member"))
    ]
    await command(api, team, "PATCH", f"/workspaces/{team.workspace_id}/members/{oth.id}", owner, {"role": "guest"})
    await command(api, team, "PATCH", f"/workspaces/{team.workspace_id}/members/{oth.id}", adm, {"role": "member"})
    public = await create_channel(api, team, mem, "Town-Square", topic="everyone")
    secret = await create_channel(api, team, adm, "secret", private=True)
    await join_channel(api, team, public, oth)
    await join_channel(api, team, public, gone)
    await join_channel(api, team, public, owner)
    await add_to_channel(api, team, secret, adm, mem, gst)
    await add_to_channel(api, team, public, mem, gst)
    await command(api, team, "POST", f"/channels/{public}/leave", oth)
    await command(api, team, "DELETE", f"/channels/{secret}/members/{gst.id}", adm)
    await command(api, team, "PATCH", f"/channels/{public}", mem, {"name": "plaza", "topic": "all of us"})
    dm = await open_dm(api, team, mem, oth)
    group = await open_dm(api, team, mem, oth, gst)

    root = await post(api, team, public, mem, f"hello <@{oth.id}> @here")
    reply = await post(api, team, public, gst, "a reply", thread_root_id=root)
    await post(api, team, public, owner, "another reply", thread_root_id=root)
    edited = await post(api, team, secret, adm, "first draft")
    await command(api, team, "PATCH", f"/messages/{edited}", adm, {"text": "second draft"})
    await command(api, team, "PATCH", f"/messages/{edited}", adm, {"text": f"final, <@{mem.id}>"})
    doomed = await post(api, team, public, gone, "soon a tombstone")
    await command(api, team, "DELETE", f"/messages/{doomed}", owner)
    await command(api, team, "DELETE", f"/messages/{reply}", gst)
    in_dm = await post(api, team, dm, oth, "psst")
    in_group = await post(api, team, group, gst, "hi all", client_msg_id="group-1")
    for user, emoji, message in (
        (owner, "👍", root),
        (gst, "👍", root),
        (mem, ":tada:", root),
        (mem, "❤", in_dm),
        (adm, "👀", edited),
    ):
        await command(api, team, "PUT", f"/messages/{message}/reactions/{quote(emoji, safe='')}", user)
    await command(api, team, "DELETE", f"/messages/{root}/reactions/{quote('👍', safe='')}", gst)
    thread = await api.get(f"{API}/messages/{root}/thread", headers=at(mem, team.position))
    last_seq = thread.json()["replies"][-1]["seq"]
    await command(api, team, "POST", f"/channels/{public}/read", mem, {"seq": last_seq})
    await command(api, team, "POST", f"/channels/{dm}/read", oth, {"seq": 1})
    await command(api, team, "DELETE", f"/workspaces/{team.workspace_id}/members/{gone.id}", adm)
    return Story(
        team,
        {"public": public, "secret": secret, "dm": dm, "group": group},
        {"root": root, "edited": edited, "doomed": doomed, "in_dm": in_dm, "in_group": in_group},
    )


def views(story: Story) -> list[tuple[User, str]]:
    """The GETs compared before and after the rebuilds: lists, histories, threads, versions, members."""
    t, ch, msg = story.team, story.channels, story.messages
    p = t.people
    return [
        *((user, f"/workspaces/{t.workspace_id}/channels") for user in (t.owner, *p.values())),
        (t.owner, "/workspaces"),
        (p["Mem"], f"/workspaces/{t.workspace_id}/members"),
        *((p["Mem"], f"/channels/{c}") for c in ch.values()),
        *((p["Mem"], f"/channels/{c}/messages") for c in ch.values()),
        *((p["Mem"], f"/channels/{c}/members") for c in ch.values()),
        (p["Mem"], f"/messages/{msg['root']}/thread"),
        (p["Adm"], f"/messages/{msg['edited']}/versions"),
        *((p["Gst"], f"/messages/{m}") for m in msg.values()),
        (p["Gone"], f"/workspaces/{t.workspace_id}/channels"),
        (p["Oth"], "/me"),
    ]


async def answers(api: AsyncTestClient, story: Story) -> list[tuple[str, int, object]]:
    found = []
    for user, path in views(story):
        response = await api.get(f"{API}{path}", headers=at(user, story.team.position))
        found.append((f"{user.display_name} GET {path}", response.status_code, response.json()))
    return found


async def test_rebuilding_every_projection_gives_the_live_tables(api: AsyncTestClient, pool, migrated_url: str) -> None:
    story = await tell_the_story(api)
    before = await answers(api, story)
    hidden = [what for what, status, _ in before if status != 200]
    assert len(hidden) == 4, hidden  # Gone's list twice, and the guest reads neither #secret nor the DM
    store = PostgresEventStore(pool, migrated_url)
    try:
        results = [await rebuild(migrated_url, store, projection, verify=True) for projection in all_projections()]
    finally:
        await store.close()
    for result in results:
        assert result.had_live and result.identical, (result.name, [d for d in result.diffs if d.differs])
        assert result.swapped and result.events > 0 and result.position >= story.team.position, result
    assert {r.name for r in results} == {
        "streams",
        "accounts",
        "messages",
        "workspaces",
        "files",
        "search",
        "notifications",
    }
    after = await answers(api, story)
    for (what, status, body), (_, status_after, body_after) in zip(before, after, strict=True):
        assert (status_after, body_after) == (status, body), what

    # The live projectors carry on in the swapped-in tables.
    mem, public = story.team.people["Mem"], story.channels["public"]
    seq = (await command(api, story.team, "POST", f"/channels/{public}/messages", mem, {"text": "after"}, 201))["seq"]
    history = await api.get(f"{API}/channels/{public}/messages", headers=at(mem, story.team.position))
    assert history.json()["items"][0]["text"] == "after" and history.json()["items"][0]["seq"] == seq
    listed = await api.get(f"{API}/workspaces/{story.team.workspace_id}/channels", headers=at(mem, story.team.position))
    assert next(c for c in listed.json()["items"] if c["id"] == public)["last_seq"] == seq
