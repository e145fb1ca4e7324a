"""Messages, threads, reactions over HTTP (API.md), with the workspace and channel routes for setup.

Workspaces, people and channels come from ``messaging_helpers``. The module's own
``api`` app has a roomy posting limit (the concurrency test posts fast); the rate-limit test
gets an app of its own with a tiny one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.eventstore.postgres import PostgresEventStore
from infra.settings import load_settings
from projections import consistency
from projections.messages import Messages
from projections.rebuild import rebuild
from tests.integration import messaging_helpers as helpers
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import problem

V1 = "/api/v1"


def _settings(service_urls: dict[str, str], url: str, **limits: float) -> object:
    return load_settings(
        {},
        database_url=url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        **({"rate_register_per_s": 1000.0, "rate_register_burst": 1000} | limits),
    )


@pytest.fixture(scope="module")
async def api(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[AsyncTestClient]:
    app = create_app(_settings(service_urls, migrated_url, rate_post_per_s=1000.0, rate_post_burst=1000))
    async with AsyncTestClient(app) as client:
        yield client


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


@dataclass
class Team:
    """A workspace: its owner, a member (both in #general), and someone registered but not in it."""

    ws: str
    general: str
    owner: User
    member: User
    outsider: User
    helpers: helpers.Team


async def team(api: AsyncTestClient) -> Team:
    owner = await register(api, "Owner")
    made = await helpers.create_workspace(api, owner, "Team")
    member = await helpers.join_workspace(api, made, "Member")
    await helpers.join_channel(api, made, made.general_id, member)
    return Team(made.workspace_id, made.general_id, owner, member, await register(api, "Out"), made)


async def channel(api: AsyncTestClient, t: Team, creator: User, private: bool = False) -> str:
    return await helpers.create_channel(api, t.helpers, creator, f"c-{uuid.uuid4().hex[:8]}", private=private)


async def post(api: AsyncTestClient, channel_id: str, user: User, text: str = "hello", **extra) -> dict:
    response = await api.post(f"{V1}/channels/{channel_id}/messages", json={"text": text, **extra}, headers=user.auth)
    body = ok(response, 201)
    assert int(response.headers["X-Hubbub-Position"]) == body["position"]
    return body


async def get(api: AsyncTestClient, path: str, user: User, position: int | None = None, **params) -> object:
    headers = user.auth | ({"X-Hubbub-Position": str(position)} if position else {})
    return await api.get(f"{V1}{path}", headers=headers, params=params)


def emoji_path(message_id: str, emoji: str) -> str:
    return f"{V1}/messages/{message_id}/reactions/{quote(emoji, safe='')}"


MESSAGE_FIELDS = {
    "id",
    "channel_id",
    "seq",
    "author_id",
    "text",
    "created_at",
    "edited_at",
    "deleted",
    "thread_root_id",
    "reply_count",
    "last_reply_at",
    "reply_user_ids",
    "reactions",
    "files",
    "mentions",
}


async def test_post_answers_id_seq_position_and_the_message_reads_back(api: AsyncTestClient) -> None:
    t = await team(api)
    first = await post(api, t.general, t.owner, f"  hi <@{t.member.id}> <@{t.outsider.id}> @here  ")
    second = await post(api, t.general, t.member, "second")
    assert second["seq"] == first["seq"] + 1 and second["position"] > first["position"]
    message = ok(await get(api, f"/messages/{first['id']}", t.member, first["position"]))
    assert set(message) == MESSAGE_FIELDS
    assert message["text"] == f"hi <@{t.member.id}> <@{t.outsider.id}> @here"
    assert message["mentions"] == [t.member.id]  # the outsider is no member of the workspace
    assert (message["channel_id"], message["author_id"], message["seq"]) == (t.general, t.owner.id, first["seq"])
    assert message["edited_at"] is None and message["deleted"] is False and message["thread_root_id"] is None
    assert (message["reply_count"], message["last_reply_at"], message["reply_user_ids"]) == (0, None, [])
    assert message["reactions"] == [] and message["files"] == []


async def test_history_is_newest_first_and_pages_on_seq(api: AsyncTestClient) -> None:
    t = await team(api)
    posted = [await post(api, t.general, t.owner, f"m{i}") for i in range(7)]
    seqs = [p["seq"] for p in posted]
    last = posted[-1]["position"]
    page = ok(await get(api, f"/channels/{t.general}/messages", t.member, last, limit=3))
    assert [m["seq"] for m in page["items"]] == seqs[::-1][:3] and page["has_more"] is True
    older = ok(await get(api, f"/channels/{t.general}/messages", t.member, limit=3, before=page["items"][-1]["seq"]))
    assert [m["seq"] for m in older["items"]] == seqs[::-1][3:6]
    newer = ok(await get(api, f"/channels/{t.general}/messages", t.member, after=seqs[1], limit=2))
    assert [m["seq"] for m in newer["items"]] == [seqs[3], seqs[2]] and newer["has_more"] is True
    between = ok(await get(api, f"/channels/{t.general}/messages", t.member, after=seqs[1], before=seqs[4]))
    assert [m["text"] for m in between["items"]] == ["m3", "m2"] and between["has_more"] is False
    everything = ok(await get(api, f"/channels/{t.general}/messages", t.member))
    assert [m["text"] for m in everything["items"]] == [f"m{i}" for i in range(6, -1, -1)]


async def test_seq_is_contiguous_under_twenty_concurrent_posters(api: AsyncTestClient) -> None:
    t = await team(api)
    users = [t.owner, t.member]
    for i in range(18):
        user = await helpers.join_workspace(api, t.helpers, f"Poster{i}")
        await helpers.join_channel(api, t.helpers, t.general, user)
        users.append(user)

    async def poster(user: User) -> list[dict]:
        return [await post(api, t.general, user, f"{user.display_name} {n}") for n in range(3)]

    answers = [a for each in await asyncio.gather(*(poster(u) for u in users)) for a in each]
    seqs = sorted(a["seq"] for a in answers)
    assert seqs == list(range(seqs[0], seqs[0] + 60))
    by_position = [a["seq"] for a in sorted(answers, key=lambda a: a["position"])]
    assert by_position == seqs  # seq follows log order
    page = ok(
        await get(api, f"/channels/{t.general}/messages", t.owner, max(a["position"] for a in answers), limit=200)
    )
    assert [m["seq"] for m in page["items"]] == seqs[::-1]
    # The answers' seqs came with the projector's batches (NOTIFY), not from reading the table.
    notified = api.app.state[consistency.STATE_KEY].watcher.seqs
    assert {a["position"]: a["seq"] for a in answers} == {a["position"]: notified.get(a["position"]) for a in answers}


async def test_client_msg_id_and_idempotency_key_repeats_get_the_first_answer(api: AsyncTestClient) -> None:
    t = await team(api)
    first = await post(api, t.general, t.owner, "once", client_msg_id="abc-1")
    again = await post(api, t.general, t.owner, "once", client_msg_id="abc-1")  # the same post: the same answer
    assert again == first
    other_author = await post(api, t.general, t.member, "once", client_msg_id="abc-1")
    assert other_author["id"] != first["id"]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    keyed = [
        await api.post(f"{V1}/channels/{t.general}/messages", json={"text": "k"}, headers=t.owner.auth | key)
        for _ in range(2)
    ]
    assert ok(keyed[0], 201) == ok(keyed[1], 201)
    racing = await asyncio.gather(
        *(
            api.post(
                f"{V1}/channels/{t.general}/messages",
                json={"text": "race", "client_msg_id": "race-1"},
                headers=t.owner.auth,
            )
            for _ in range(5)
        )
    )
    assert len({ok(r, 201)["id"] for r in racing}) == 1 and len({r.json()["seq"] for r in racing}) == 1
    page = ok(await get(api, f"/channels/{t.general}/messages", t.owner, max(r.json()["position"] for r in racing)))
    assert [m["text"] for m in page["items"]].count("once") == 2  # one per author
    assert [m["text"] for m in page["items"]].count("k") == 1
    assert [m["text"] for m in page["items"]].count("race") == 1


async def test_edit_keeps_versions_and_only_the_author_edits(api: AsyncTestClient) -> None:
    t = await team(api)
    posted = await post(api, t.general, t.owner, "v1")
    mid = posted["id"]
    edit = await api.patch(f"{V1}/messages/{mid}", json={"text": f"v2 <@{t.member.id}>"}, headers=t.owner.auth)
    edited = ok(edit)
    assert edited["id"] == mid and edited["edited_at"] and int(edit.headers["X-Hubbub-Position"]) == edited["position"]
    ok(await api.patch(f"{V1}/messages/{mid}", json={"text": "v3"}, headers=t.owner.auth))
    last = ok(await api.patch(f"{V1}/messages/{mid}", json={"text": "v3"}, headers=t.owner.auth))  # same text: no-op
    message = ok(await get(api, f"/messages/{mid}", t.member, last["position"]))
    assert message["text"] == "v3" and message["edited_at"] is not None and message["seq"] == posted["seq"]
    assert message["mentions"] == []
    versions = ok(await get(api, f"/messages/{mid}/versions", t.member))["items"]
    assert [(v["version"], v["text"]) for v in versions] == [(1, "v1"), (2, f"v2 <@{t.member.id}>"), (3, "v3")]
    problem(await api.patch(f"{V1}/messages/{mid}", json={"text": "mine now"}, headers=t.member.auth), 403)
    assert (
        problem(await api.patch(f"{V1}/messages/{mid}", json={"text": "  "}, headers=t.owner.auth), 422)["errors"][0][
            "field"
        ]
        == "text"
    )
    problem(await api.patch(f"{V1}/messages/{mid}", json={"text": "x", "pin": True}, headers=t.owner.auth), 422)
    problem(await api.patch(f"{V1}/messages/{uuid.uuid4()}", json={"text": "x"}, headers=t.owner.auth), 404)


async def test_delete_leaves_a_tombstone_author_or_admin(api: AsyncTestClient) -> None:
    t = await team(api)
    by_member = await post(api, t.general, t.member, "oops")
    by_owner = await post(api, t.general, t.owner, "mine")
    ok(await api.put(emoji_path(by_member["id"], "👍"), headers=t.owner.auth))
    problem(await api.delete(f"{V1}/messages/{by_owner['id']}", headers=t.member.auth), 403)
    deleted = ok(await api.delete(f"{V1}/messages/{by_member['id']}", headers=t.owner.auth))  # the owner is admin
    assert deleted["deleted"] is True
    again = ok(await api.delete(f"{V1}/messages/{by_member['id']}", headers=t.member.auth))  # idempotent
    assert again["position"] == deleted["position"]
    ok(await api.delete(f"{V1}/messages/{by_owner['id']}", headers=t.owner.auth))
    tomb = ok(await get(api, f"/messages/{by_member['id']}", t.member, deleted["position"]))
    assert tomb["deleted"] is True and tomb["text"] == "" and tomb["reactions"] == [] and tomb["mentions"] == []
    assert tomb["seq"] == by_member["seq"]
    assert ok(await get(api, f"/messages/{by_member['id']}/versions", t.member))["items"] == []
    problem(await api.patch(f"{V1}/messages/{by_member['id']}", json={"text": "x"}, headers=t.member.auth), 409)
    problem(await api.put(emoji_path(by_member["id"], "👍"), headers=t.member.auth), 409)
    problem(await api.delete(f"{V1}/messages/{uuid.uuid4()}", headers=t.owner.auth), 404)


async def test_threads_are_one_level_deep_and_roots_summarise_them(api: AsyncTestClient) -> None:
    t = await team(api)
    root = await post(api, t.general, t.owner, "root")
    first = await post(api, t.general, t.member, "r1", thread_root_id=root["id"])
    second = await post(api, t.general, t.owner, "r2", thread_root_id=root["id"])
    third = await post(api, t.general, t.member, "r3", thread_root_id=root["id"])
    assert [first["seq"], second["seq"], third["seq"]] == [root["seq"] + 1, root["seq"] + 2, root["seq"] + 3]
    nested = await api.post(
        f"{V1}/channels/{t.general}/messages", json={"text": "x", "thread_root_id": first["id"]}, headers=t.owner.auth
    )
    assert problem(nested, 422)["errors"][0]["field"] == "thread_root_id"
    missing = await api.post(
        f"{V1}/channels/{t.general}/messages",
        json={"text": "x", "thread_root_id": str(uuid.uuid4())},
        headers=t.owner.auth,
    )
    problem(missing, 404)
    elsewhere = await channel(api, t, t.owner)
    foreign = await api.post(
        f"{V1}/channels/{elsewhere}/messages", json={"text": "x", "thread_root_id": root["id"]}, headers=t.owner.auth
    )
    problem(foreign, 404)
    thread = ok(await get(api, f"/messages/{root['id']}/thread", t.member, third["position"]))
    assert [r["text"] for r in thread["replies"]] == ["r1", "r2", "r3"]
    assert all(r["thread_root_id"] == root["id"] for r in thread["replies"])
    summary = thread["root"]
    assert summary["reply_count"] == 3 and summary["reply_user_ids"] == [t.member.id, t.owner.id]
    assert summary["last_reply_at"] == thread["replies"][-1]["created_at"]
    assert ok(await get(api, f"/messages/{first['id']}/thread", t.member))["root"]["id"] == root["id"]
    history = ok(await get(api, f"/channels/{t.general}/messages", t.member))
    assert [m["text"] for m in history["items"]] == ["root"]  # replies stay in their thread
    gone = ok(await api.delete(f"{V1}/messages/{third['id']}", headers=t.member.auth))
    root_now = ok(await get(api, f"/messages/{root['id']}", t.member, gone["position"]))
    assert root_now["reply_count"] == 2 and root_now["reply_user_ids"] == [t.member.id, t.owner.id]
    assert root_now["last_reply_at"] == thread["replies"][1]["created_at"]


async def test_reactions_are_idempotent_with_counts_and_user_ids(api: AsyncTestClient) -> None:
    t = await team(api)
    mid = (await post(api, t.general, t.owner, "react to me"))["id"]
    for user, emoji in [(t.owner, "👍"), (t.member, "👍"), (t.member, "👍"), (t.member, ":tada:"), (t.owner, "❤")]:
        added = ok(await api.put(emoji_path(mid, emoji), headers=user.auth))
        assert int(added["position"]) > 0
    message = ok(await get(api, f"/messages/{mid}", t.owner, added["position"]))
    assert message["reactions"] == [
        {"emoji": "👍", "count": 2, "user_ids": [t.owner.id, t.member.id]},
        {"emoji": ":tada:", "count": 1, "user_ids": [t.member.id]},
        {"emoji": "❤️", "count": 1, "user_ids": [t.owner.id]},
    ]
    ok(await api.delete(emoji_path(mid, "👍"), headers=t.owner.auth))
    removed = ok(await api.delete(emoji_path(mid, "👍"), headers=t.owner.auth))  # idempotent
    ok(await api.delete(emoji_path(mid, "❤️"), headers=t.owner.auth))  # either form names the same reaction
    message = ok(await get(api, f"/messages/{mid}", t.owner, removed["position"] + 1))
    assert message["reactions"][0] == {"emoji": "👍", "count": 1, "user_ids": [t.member.id]}
    page = ok(await get(api, f"/channels/{t.general}/messages", t.owner))
    assert page["items"][0]["reactions"] == message["reactions"]
    for bad in ["thumbsup", ":Tada:", "👍👍", "a", ":" + "x" * 65 + ":"]:
        assert problem(await api.put(emoji_path(mid, bad), headers=t.owner.auth), 422)["errors"][0]["field"] == "emoji"
    problem(await api.put(emoji_path(str(uuid.uuid4()), "👍"), headers=t.owner.auth), 404)


async def test_private_channels_and_dms_are_404_for_non_members(api: AsyncTestClient) -> None:
    t = await team(api)
    secret = await channel(api, t, t.owner, private=True)
    dm = await helpers.open_dm(api, t.helpers, t.owner, t.member)
    stranger = await helpers.join_workspace(api, t.helpers, "Stranger")
    for where in (secret, dm):
        root = await post(api, where, t.owner, "secret")
        reply = await post(api, where, t.owner, "reply", thread_root_id=root["id"])
        for who in (stranger, t.outsider):
            problem(await get(api, f"/channels/{where}/messages", who, reply["position"]), 404)
            problem(await get(api, f"/messages/{root['id']}", who), 404)
            problem(await get(api, f"/messages/{root['id']}/thread", who), 404)
            problem(await get(api, f"/messages/{root['id']}/versions", who), 404)
            problem(await api.put(emoji_path(root["id"], "👍"), headers=who.auth), 404)
            problem(await api.delete(emoji_path(root["id"], "👍"), headers=who.auth), 404)
            problem(await api.patch(f"{V1}/messages/{root['id']}", json={"text": "x"}, headers=who.auth), 404)
            problem(await api.delete(f"{V1}/messages/{root['id']}", headers=who.auth), 404)
            problem(await api.post(f"{V1}/channels/{where}/messages", json={"text": "x"}, headers=who.auth), 404)
    dm_root = ok(await get(api, f"/channels/{dm}/messages", t.member))["items"][0]
    assert dm_root["text"] == "secret" and dm_root["reply_count"] == 1


async def test_public_channels_need_joining_to_post_and_archived_ones_refuse_writes(api: AsyncTestClient) -> None:
    t = await team(api)
    public = await channel(api, t, t.owner)
    mid = (await post(api, public, t.owner, "hi"))["id"]
    assert ok(await get(api, f"/channels/{public}/messages", t.member))["items"][0]["id"] == mid  # may read
    problem(await api.post(f"{V1}/channels/{public}/messages", json={"text": "x"}, headers=t.member.auth), 403)
    problem(await api.put(emoji_path(mid, "👍"), headers=t.member.auth), 403)
    ok(await api.post(f"{V1}/channels/{public}/archive", headers=t.owner.auth))
    problem(await api.post(f"{V1}/channels/{public}/messages", json={"text": "x"}, headers=t.owner.auth), 409)
    problem(await api.patch(f"{V1}/messages/{mid}", json={"text": "x"}, headers=t.owner.auth), 409)
    problem(await api.put(emoji_path(mid, "👍"), headers=t.owner.auth), 409)
    problem(await api.delete(f"{V1}/messages/{mid}", headers=t.owner.auth), 409)
    assert ok(await get(api, f"/messages/{mid}", t.owner))["text"] == "hi"  # still readable


async def test_bad_input_is_a_named_4xx_and_writes_nothing(api: AsyncTestClient) -> None:
    t = await team(api)
    url = f"{V1}/channels/{t.general}/messages"
    for body in [{"text": ""}, {"text": " \n "}, {"text": "x" * 40_001}, {"text": "nul\x00"}, {}]:
        assert problem(await api.post(url, json=body, headers=t.owner.auth), 422)["errors"][0]["field"] == "text"
    assert problem(await api.post(url, json={"text": "x", "sticky": 1}, headers=t.owner.auth), 422)["errors"]
    assert problem(await api.post(url, json={"text": 5}, headers=t.owner.auth), 422)
    assert (
        problem(await api.post(url, json={"text": "x", "file_ids": ["f1"]}, headers=t.owner.auth), 404)["errors"][0][
            "field"
        ]
        == "file_ids"
    )  # no such file (files: test_files_api.py)
    problem(await api.post(url, json={"text": "x", "client_msg_id": ""}, headers=t.owner.auth), 422)
    problem(await api.post(url, content=b'{"text": ', headers=t.owner.auth | {"Content-Type": "application/json"}), 400)
    problem(await api.post(f"{V1}/channels/{uuid.uuid4()}/messages", json={"text": "x"}, headers=t.owner.auth), 404)
    problem(await api.post(url, json={"text": "x"}), 401)
    longest = await post(api, t.general, t.owner, "y" * 40_000)
    page = ok(await get(api, f"/channels/{t.general}/messages", t.owner, longest["position"]))
    assert [m["seq"] for m in page["items"]] == [longest["seq"]]  # none of the bad posts took a seq
    for params in [{"limit": 0}, {"limit": 201}, {"limit": "many"}, {"before": -1}, {"after": "x"}, {"before": "1.5"}]:
        problem(await get(api, f"/channels/{t.general}/messages", t.owner, **params), 422)
    problem(await get(api, f"/messages/{longest['id']}/thread", t.owner, limit=0), 422)
    problem(await get(api, f"/channels/{uuid.uuid4()}/messages", t.owner), 404)
    for path in ("", "/thread", "/versions"):
        problem(await get(api, f"/messages/{uuid.uuid4()}{path}", t.owner), 404)
        problem(await get(api, f"/messages/a%00b{path}", t.owner), 404)  # never reaches the database
    for method, path, body in [
        ("PATCH", "/messages/a%00b", {"text": "x"}),
        ("DELETE", "/messages/a%00b", None),
        ("PUT", "/messages/a%00b/reactions/%F0%9F%91%8D", None),
        ("DELETE", "/messages/a%00b/reactions/%F0%9F%91%8D", None),
        ("POST", "/channels/a%00b/messages", {"text": "x"}),
        ("POST", f"/channels/{t.general}/messages", {"text": "x", "thread_root_id": "a\x00b"}),
        ("POST", f"/channels/{t.general}/messages", {"text": "x", "thread_root_id": "nope"}),
    ]:
        problem(await api.request(method, f"{V1}{path}", json=body, headers=t.owner.auth), 404)


async def test_posting_faster_than_the_burst_is_429_with_retry_after(
    service_urls: dict[str, str], migrated_url: str
) -> None:
    app = create_app(_settings(service_urls, migrated_url, rate_post_per_s=0.01, rate_post_burst=3))
    async with AsyncTestClient(app) as limited:
        t = await team(limited)
        for i in range(3):
            await post(limited, t.general, t.owner, f"fast {i}")
        refused = await limited.post(
            f"{V1}/channels/{t.general}/messages", json={"text": "too fast"}, headers=t.owner.auth
        )
        assert problem(refused, 429) and int(refused.headers["Retry-After"]) >= 1
        await post(limited, t.general, t.member, "someone else may")  # buckets are per user


async def test_an_admin_deletes_anyones_message_a_plain_member_does_not(api: AsyncTestClient) -> None:
    t = await team(api)
    admin = await helpers.join_workspace(api, t.helpers, "Admin", role="admin")
    other = await helpers.join_workspace(api, t.helpers, "Other")
    await helpers.join_channel(api, t.helpers, t.general, other)
    mid = (await post(api, t.general, t.member, "by member"))["id"]
    problem(await api.delete(f"{V1}/messages/{mid}", headers=other.auth), 403)
    problem(await api.patch(f"{V1}/messages/{mid}", json={"text": "x"}, headers=admin.auth), 403)  # author only
    deleted = ok(await api.delete(f"{V1}/messages/{mid}", headers=admin.auth))  # not even in the channel
    assert ok(await get(api, f"/messages/{mid}", t.member, deleted["position"]))["deleted"] is True


async def test_guests_see_only_the_channels_they_were_added_to(api: AsyncTestClient) -> None:
    t = await team(api)
    guest = await helpers.join_workspace(api, t.helpers, "Guest", role="guest")
    public = await channel(api, t, t.owner)
    added = await channel(api, t, t.owner)
    await helpers.add_to_channel(api, t.helpers, added, t.owner, guest)
    hidden = await post(api, public, t.owner, "not for guests")
    shown = await post(api, added, t.owner, "for the guest too")
    problem(await get(api, f"/channels/{public}/messages", guest, hidden["position"]), 404)
    problem(await get(api, f"/messages/{hidden['id']}", guest), 404)
    problem(await api.put(emoji_path(hidden["id"], "👍"), headers=guest.auth), 404)
    assert ok(await get(api, f"/channels/{added}/messages", guest, shown["position"]))["items"][0]["id"] == shown["id"]
    ok(await api.put(emoji_path(shown["id"], ":wave:"), headers=guest.auth))
    await post(api, added, guest, "hello from a guest")


async def test_unread_counts_follow_channel_seqs(api: AsyncTestClient) -> None:
    t = await team(api)
    last = [await post(api, t.general, t.owner, f"n{i}") for i in range(3)][-1]
    response = await api.get(f"{V1}/workspaces/{t.ws}/channels", headers=helpers.at(t.member, last["position"]))
    general = next(c for c in ok(response)["items"] if c["id"] == t.general)
    assert general["last_seq"] == last["seq"]


async def test_rebuilding_the_messages_projection_gives_the_live_tables(
    api: AsyncTestClient, pool, migrated_url: str
) -> None:
    # Last in the module: the log holds every test's posts, edits, deletions, threads and reactions.
    t = await team(api)
    root = await post(api, t.general, t.owner, "rebuild me")
    await post(api, t.general, t.member, "reply", thread_root_id=root["id"])
    ok(await api.put(emoji_path(root["id"], "👍"), headers=t.member.auth))
    store = PostgresEventStore(pool, migrated_url)
    try:
        result = await rebuild(migrated_url, store, Messages(), verify=True)
    finally:
        await store.close()
    assert result.identical, [d for d in result.diffs if d.differs]
    assert result.swapped and result.events > 0
    after = await post(api, t.general, t.owner, "after the swap")  # the live projector carries on
    assert after["seq"] == root["seq"] + 2
