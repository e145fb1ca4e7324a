"""Channels, DMs and read markers over HTTP (API.md: *Channels and direct messages*)."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient

from infra.eventstore.postgres import PostgresEventStore
from projections.rebuild import rebuild
from projections.workspaces import Workspaces
from tests.integration.conftest import register
from tests.integration.messaging_helpers import (
    API,
    Team,
    accept,
    add_to_channel,
    at,
    channels_of,
    create_channel,
    create_workspace,
    invite,
    join_channel,
    join_workspace,
    open_dm,
    problem,
)

ITEM_FIELDS = {
    "id",
    "name",
    "kind",
    "private",
    "topic",
    "member",
    "last_seq",
    "last_read_seq",
    "unread_count",
    "mention_count",
}


async def team_of(api: AsyncTestClient) -> Team:
    team = await create_workspace(api, await register(api, "Ada"))
    for name, role in (("Adm", "admin"), ("Mem", "member"), ("Oth", "member"), ("Gst", "guest")):
        await join_workspace(api, team, name, role)
    return team


async def test_create_list_and_get_channels(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem = team.people["Mem"]
    response = await api.post(
        f"{API}/workspaces/{team.workspace_id}/channels", json={"name": "Dev-Ops", "topic": "builds"}, headers=mem.auth
    )
    assert response.status_code == 201, response.text
    cid, position = response.json()["id"], response.json()["position"]
    assert int(response.headers["X-Hubbub-Position"]) == position
    listed = await api.get(f"{API}/workspaces/{team.workspace_id}/channels", headers=at(mem, position))
    items = {i["id"]: i for i in listed.json()["items"]}
    assert set(items) == {team.general_id, cid}
    assert set(items[cid]) >= ITEM_FIELDS
    assert {k: items[cid][k] for k in ITEM_FIELDS} == {
        "id": cid,
        "name": "dev-ops",
        "kind": "channel",
        "private": False,
        "topic": "builds",
        "member": True,
        "last_seq": 0,
        "last_read_seq": 0,
        "unread_count": 0,
        "mention_count": 0,
    }
    other = await api.get(f"{API}/channels/{cid}", headers=at(team.people["Oth"], position))
    assert other.status_code == 200 and other.json()["member"] is False and other.json()["name"] == "dev-ops"
    members = await api.get(f"{API}/channels/{cid}/members", headers=at(team.people["Oth"], position))
    assert members.json()["items"] == [{"user_id": mem.id, "display_name": "Mem", "role": "member"}]


async def test_channel_names_follow_slack_rules_and_are_unique(api: AsyncTestClient) -> None:
    team = await team_of(api)
    url = f"{API}/workspaces/{team.workspace_id}/channels"
    auth = team.people["Mem"].auth
    for bad in ["", "a b", "a.b", "x" * 81, "emoji🎉"]:
        assert problem(await api.post(url, json={"name": bad}, headers=auth), 422)["errors"][0]["field"] == "name"
    assert (await api.post(url, json={"name": "日本語"}, headers=auth)).status_code == 201
    await create_channel(api, team, team.people["Mem"], "taken")
    for name in ("taken", "TAKEN", "#taken", "general"):
        assert problem(await api.post(url, json={"name": name}, headers=auth), 409)["errors"][0]["field"] == "name"
    await create_channel(api, team, team.people["Mem"], "secret-taken", private=True)
    assert problem(await api.post(url, json={"name": "secret-taken"}, headers=team.people["Oth"].auth), 409)
    assert problem(await api.post(url, json={"name": "x", "topic": "t" * 251}, headers=auth), 422)
    assert problem(await api.post(url, json={"name": "x", "private": "yes"}, headers=auth), 422)
    assert problem(await api.post(url, json={"name": "x", "colour": "red"}, headers=auth), 422)
    assert problem(await api.post(url, content=b"[", headers={**auth, "Content-Type": "application/json"}), 400)
    assert problem(await api.post(url, json={"name": "x"}, headers=team.people["Gst"].auth), 403)
    assert problem(await api.post(url, json={"name": "x"}, headers=(await register(api, "Eve")).auth), 404)


async def test_racing_creations_of_one_name_make_one_channel(api: AsyncTestClient) -> None:
    team = await team_of(api)
    url = f"{API}/workspaces/{team.workspace_id}/channels"
    racers = [team.owner, *team.people.values()][:4] * 2
    responses = await asyncio.gather(*(api.post(url, json={"name": "race"}, headers=u.auth) for u in racers))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7, [r.text for r in responses]
    team.position = max(int(r.headers.get("X-Hubbub-Position", 0)) for r in responses)
    assert [c["name"] for c in (await channels_of(api, team, team.owner)).values()].count("race") == 1


async def test_rename_topic_and_archive(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth = team.people["Mem"], team.people["Oth"]
    cid = await create_channel(api, team, mem, "old")
    url = f"{API}/channels/{cid}"
    renamed = await api.patch(url, json={"name": "New", "topic": "hello"}, headers=mem.auth)
    assert renamed.status_code == 200 and renamed.json()["name"] == "new" and renamed.json()["topic"] == "hello"
    assert await create_channel(api, team, oth, "old")  # the old name is free again
    assert problem(await api.patch(url, json={"name": "old"}, headers=mem.auth), 409)["errors"][0]["field"] == "name"
    assert problem(await api.patch(url, json={"name": "x"}, headers=oth.auth), 403)
    assert problem(await api.patch(url, json={"topic": "x" * 251}, headers=mem.auth), 422)
    assert problem(await api.patch(url, json={"name": 3}, headers=mem.auth), 422)
    assert problem(
        await api.patch(f"{API}/channels/{team.general_id}", json={"name": "lobby"}, headers=team.owner.auth), 409
    )
    assert problem(await api.post(f"{url}/archive", headers=oth.auth), 403)
    archived = await api.post(f"{url}/archive", headers=team.people["Adm"].auth)
    assert archived.status_code == 200 and archived.json()["position"] > 0
    for method, path, body in [
        ("patch", "", {"topic": "x"}),
        ("post", "/archive", None),
        ("post", "/join", None),
        ("post", "/leave", None),
        ("post", "/members", {"user_ids": [oth.id]}),
        ("delete", f"/members/{mem.id}", None),
    ]:
        kwargs = {"json": body} if body is not None else {}
        assert problem(
            await getattr(api, method)(
                url + path, headers=team.owner.auth if method == "delete" else mem.auth, **kwargs
            ),
            409,
        ), path
    got = await api.get(url, headers=at(mem, archived.json()["position"]))
    assert got.json()["archived"] is True and got.json()["name"] == "new"
    assert problem(await api.post(f"{API}/channels/{team.general_id}/archive", headers=team.owner.auth), 409)


async def test_join_leave_add_remove(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth, gst = team.people["Mem"], team.people["Oth"], team.people["Gst"]
    cid = await create_channel(api, team, mem, "room")
    first = await join_channel(api, team, cid, oth)
    again = await api.post(f"{API}/channels/{cid}/join", headers=oth.auth)  # like Slack: already in is fine
    assert again.status_code == 200 and again.json()["position"] >= first
    assert problem(await api.post(f"{API}/channels/{cid}/join", headers=gst.auth), 404)
    await add_to_channel(api, team, cid, oth, gst)  # members add guests
    assert cid in await channels_of(api, team, gst)
    assert problem(
        await api.post(f"{API}/channels/{cid}/members", json={"user_ids": ["nobody"]}, headers=mem.auth), 404
    )
    assert problem(await api.post(f"{API}/channels/{cid}/members", json={"user_ids": []}, headers=mem.auth), 422)
    assert problem(await api.post(f"{API}/channels/{cid}/members", json={"user_ids": "x"}, headers=mem.auth), 422)
    assert problem(await api.delete(f"{API}/channels/{cid}/members/{gst.id}", headers=oth.auth), 403)
    removed = await api.delete(f"{API}/channels/{cid}/members/{gst.id}", headers=mem.auth)
    assert removed.status_code == 200
    assert problem(await api.delete(f"{API}/channels/{cid}/members/{gst.id}", headers=mem.auth), 404)
    left = await api.post(f"{API}/channels/{cid}/leave", headers=oth.auth)
    assert left.status_code == 200
    team.position = max(team.position, left.json()["position"], removed.json()["position"])
    assert cid not in await channels_of(api, team, gst)
    assert (await channels_of(api, team, oth))[cid]["member"] is False
    assert problem(await api.post(f"{API}/channels/{team.general_id}/leave", headers=oth.auth), 409)
    assert problem(await api.post(f"{API}/channels/nope/join", headers=oth.auth), 404)


async def test_private_channels_are_invisible_to_non_members(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth, adm = team.people["Mem"], team.people["Oth"], team.people["Adm"]
    cid = await create_channel(api, team, mem, "secret", private=True)
    await add_to_channel(api, team, cid, mem, oth)
    assert cid in await channels_of(api, team, oth)
    for outsider in (adm, team.owner, team.people["Gst"]):
        assert cid not in await channels_of(api, team, outsider)
        for path in ("", "/members"):
            assert problem(await api.get(f"{API}/channels/{cid}{path}", headers=at(outsider, team.position)), 404)
        for method, path, body in [
            ("patch", "", {"topic": "x"}),
            ("post", "/archive", None),
            ("post", "/join", None),
            ("post", "/leave", None),
            ("post", "/members", {"user_ids": [outsider.id]}),
            ("delete", f"/members/{mem.id}", None),
            ("post", "/read", {"seq": 0}),
        ]:
            kwargs = {"json": body} if body is not None else {}
            response = await getattr(api, method)(f"{API}/channels/{cid}{path}", headers=outsider.auth, **kwargs)
            assert problem(response, 404)["detail"] == "no such channel", path


async def test_guests_see_only_the_channels_they_were_added_to(api: AsyncTestClient) -> None:
    team = await team_of(api)
    gst, mem = team.people["Gst"], team.people["Mem"]
    public = await create_channel(api, team, mem, "public-room")
    shared = await create_channel(api, team, mem, "with-guest")
    await add_to_channel(api, team, shared, mem, gst)
    assert set(await channels_of(api, team, gst)) == {shared}  # not even #general: guests are not put in it
    assert problem(await api.get(f"{API}/channels/{public}", headers=gst.auth), 404)
    listed = await channels_of(api, team, mem)
    assert public in listed and listed[team.general_id]["member"] is True  # members join #general on accepting


async def test_dms_are_one_per_set_of_people(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth, gst, adm = (team.people[n] for n in ("Mem", "Oth", "Gst", "Adm"))
    url = f"{API}/workspaces/{team.workspace_id}/dms"
    first = await api.post(url, json={"user_ids": [oth.id]}, headers=mem.auth)
    assert first.status_code == 201 and first.json()["kind"] == "dm"
    back = await api.post(url, json={"user_ids": [mem.id, mem.id]}, headers=oth.auth)
    assert back.status_code == 200 and back.json()["id"] == first.json()["id"]
    group = await open_dm(api, team, mem, oth, gst)
    assert group not in (first.json()["id"],)
    items = await channels_of(api, team, gst)
    assert items[group]["kind"] == "group" and items[group]["private"] is True and items[group]["name"] is None
    assert first.json()["id"] not in items
    for path in ("", "/members"):
        assert problem(await api.get(f"{API}/channels/{group}{path}", headers=at(adm, team.position)), 404)
    members = await api.get(f"{API}/channels/{group}/members", headers=gst.auth)
    assert {m["user_id"] for m in members.json()["items"]} == {mem.id, oth.id, gst.id}
    assert problem(await api.post(url, json={"user_ids": []}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={"user_ids": [mem.id]}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={"user_ids": ["stranger"]}, headers=mem.auth), 404)
    assert problem(await api.post(url, json={"user_ids": [f"u{i}" for i in range(10)]}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={"user_ids": [oth.id], "x": 1}, headers=mem.auth), 422)
    assert problem(await api.post(f"{API}/channels/{group}/leave", headers=gst.auth), 422)


async def test_racing_dm_creations_give_one_id(api: AsyncTestClient) -> None:
    team = await team_of(api)
    people = [team.people[n] for n in ("Mem", "Oth", "Adm")]
    url = f"{API}/workspaces/{team.workspace_id}/dms"
    responses = await asyncio.gather(
        *(api.post(url, json={"user_ids": [p.id for p in people if p is not me]}, headers=me.auth) for me in people * 3)
    )
    assert {r.json()["id"] for r in responses} == {responses[0].json()["id"]}
    assert sorted(r.status_code for r in responses) == [200] * 8 + [201]


async def test_read_markers_move_forward_only(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem = team.people["Mem"]
    cid = await create_channel(api, team, mem, "reading")
    url = f"{API}/channels/{cid}/read"
    zero = await api.post(url, json={"seq": 0}, headers=mem.auth)  # an empty channel: 0 is its last seq
    assert zero.status_code == 200 and zero.json()["last_read_seq"] == 0 and "X-Hubbub-Position" in zero.headers
    assert problem(await api.post(url, json={"seq": 1}, headers=mem.auth), 422)["errors"][0]["field"] == "seq"
    assert problem(await api.post(url, json={"seq": -1}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={"seq": "1"}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={}, headers=mem.auth), 422)
    assert problem(await api.post(url, json={"seq": 0}, headers=team.people["Oth"].auth), 403)  # not joined


async def post_message(api: AsyncTestClient, team: Team, channel_id: str, user, text: str = "hi") -> int:
    response = await api.post(f"{API}/channels/{channel_id}/messages", json={"text": text}, headers=user.auth)
    assert response.status_code == 201, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["seq"]


async def test_unread_counts_follow_messages_and_read_markers(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth, adm = team.people["Mem"], team.people["Oth"], team.people["Adm"]
    cid = await create_channel(api, team, mem, "busy")
    await join_channel(api, team, cid, oth)
    seqs = [await post_message(api, team, cid, mem, f"m{i}") for i in range(3)]
    assert seqs == [1, 2, 3]
    item = (await channels_of(api, team, oth))[cid]
    assert (item["last_seq"], item["last_read_seq"], item["unread_count"]) == (3, 0, 3)
    outsider = (await channels_of(api, team, adm))[cid]  # public, not joined: no unread count
    assert (outsider["member"], outsider["last_seq"], outsider["unread_count"]) == (False, 3, 0)
    url = f"{API}/channels/{cid}/read"
    moved = await api.post(url, json={"seq": 2}, headers=oth.auth)
    assert moved.status_code == 200 and moved.json()["last_read_seq"] == 2
    stale = await api.post(url, json={"seq": 1}, headers=oth.auth)  # a slower device: no-op, current marker
    assert stale.status_code == 200 and stale.json()["last_read_seq"] == 2
    assert stale.json()["position"] == moved.json()["position"]
    assert problem(await api.post(url, json={"seq": 4}, headers=oth.auth), 422)["errors"][0]["field"] == "seq"
    team.position = max(team.position, moved.json()["position"])
    item = (await channels_of(api, team, oth))[cid]
    assert (item["last_seq"], item["last_read_seq"], item["unread_count"]) == (3, 2, 1)
    assert (await channels_of(api, team, mem))[cid]["unread_count"] == 3  # markers are per person
    one = await api.get(f"{API}/channels/{cid}", headers=at(oth, team.position))
    assert one.json()["unread_count"] == 1


async def test_idempotency_keys_on_channel_commands(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth = team.people["Mem"], team.people["Oth"]
    headers = {**mem.auth, "Idempotency-Key": "new-room-1"}
    url = f"{API}/workspaces/{team.workspace_id}/channels"
    first = await api.post(url, json={"name": "keyed"}, headers=headers)
    again = await api.post(url, json={"name": "keyed"}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    dm = {**mem.auth, "Idempotency-Key": "dm-1"}
    dm_first = await api.post(f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": [oth.id]}, headers=dm)
    dm_again = await api.post(f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": [oth.id]}, headers=dm)
    assert dm_first.json() == dm_again.json()
    team.position = max(team.position, again.json()["position"], dm_again.json()["position"])
    assert [c["name"] for c in (await channels_of(api, team, mem)).values()].count("keyed") == 1


async def test_rebuilding_the_workspaces_projection_gives_the_live_tables(
    api: AsyncTestClient, pool, migrated_url: str
) -> None:
    # The log holds every earlier test's workspaces, channels, DMs and markers.
    team = await team_of(api)
    cid = await create_channel(api, team, team.people["Mem"], "rebuilt", private=True)
    await add_to_channel(api, team, cid, team.people["Mem"], team.people["Gst"])
    store = PostgresEventStore(pool, migrated_url)
    try:
        result = await rebuild(migrated_url, store, Workspaces(), verify=True)
    finally:
        await store.close()
    assert result.identical, [d for d in result.diffs if d.differs]
    assert result.swapped and result.events > 0
    assert cid in await channels_of(api, team, team.people["Gst"])  # the swapped-in tables serve queries
    later = await create_channel(api, team, team.owner, "after-swap")  # the live projector carries on
    assert later in await channels_of(api, team, team.owner)


async def test_ids_that_cannot_exist_are_404_never_500(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    auth = team.owner.auth
    for bad in ["%00", "a%00b", "x" * 5000, "%C3%A9", team.general_id.upper() + "0", "nope"]:
        for method, path, kwargs in [
            ("get", f"/channels/{bad}", {}),
            ("get", f"/channels/{bad}/members", {}),
            ("post", f"/channels/{bad}/join", {}),
            ("patch", f"/channels/{bad}", {"json": {"topic": "x"}}),
            ("post", f"/channels/{bad}/read", {"json": {"seq": 0}}),
            ("post", f"/invites/{bad}/accept", {}),
            ("post", f"/invites/{bad}.x/accept", {}),
            ("get", f"/workspaces/{bad}", {}),
            ("get", f"/workspaces/{bad}/channels", {}),
            ("get", f"/workspaces/{bad}/members", {}),
            ("post", f"/workspaces/{bad}/channels", {"json": {"name": "x"}}),
            ("post", f"/workspaces/{bad}/invites", {"json": {}}),
            ("post", f"/workspaces/{bad}/dms", {"json": {"user_ids": [team.owner.id]}}),
            ("delete", f"/workspaces/{team.workspace_id}/members/{bad}", {}),
        ]:
            response = await getattr(api, method)(API + path, headers=auth, **kwargs)
            assert problem(response, 404), (method, path[:60])
    dm = await api.post(f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": ["a\u0000b"]}, headers=auth)
    assert problem(dm, 404)["errors"][0]["field"] == "user_ids"


async def _member_count(api: AsyncTestClient, team: Team, channel_id: str, position: int) -> tuple[int, int]:
    """The channel's member_count, and how many its member list shows."""
    viewer = at(team.owner, max(team.position, position))
    found = await api.get(f"{API}/channels/{channel_id}", headers=viewer)
    listed = await api.get(f"{API}/channels/{channel_id}/members", headers=viewer)
    assert found.status_code == 200 and listed.status_code == 200, (found.text, listed.text)
    return found.json()["member_count"], len(listed.json()["items"])


async def test_member_count_follows_people_out_of_the_workspace_and_back(api: AsyncTestClient) -> None:
    team = await team_of(api)
    mem, oth = team.people["Mem"], team.people["Oth"]
    cid = await create_channel(api, team, mem, "room")
    await join_channel(api, team, cid, oth)
    assert await _member_count(api, team, cid, team.position) == (2, 2)
    left = await api.delete(f"{API}/workspaces/{team.workspace_id}/members/{oth.id}", headers=oth.auth)
    assert left.status_code == 200, left.text
    assert await _member_count(api, team, cid, left.json()["position"]) == (1, 1)
    back = await accept(api, team, oth, await invite(api, team))  # their channel memberships are kept
    assert await _member_count(api, team, cid, back) == (2, 2)
    assert await _member_count(api, team, team.general_id, back) == (4, 4)  # Ada, Adm, Mem, Oth: guests are not in it
