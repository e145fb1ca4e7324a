"""Notifications over HTTP (issue 6, items 4-5): each kind, each level, mute, DND, keywords,
@here vs @channel, no self-notify, mention_count and the read marker, read state shared by a
person's sessions, deletions, visibility, and bad input.

What is pushed (and what DND and mute keep silent) is checked over a real socket in
``test_notifications_realtime.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    Team,
    add_to_channel,
    at,
    channels_of,
    create_channel,
    create_workspace,
    join_workspace,
    open_dm,
    problem,
)


async def team_of(api: AsyncTestClient, *names: str) -> Team:
    """A workspace of an owner ``Ann`` and ``names`` (all in #general)."""
    team = await create_workspace(api, await register(api, "Ann"), "Notify")
    team.people["Ann"] = team.owner
    for name in names:
        await join_workspace(api, team, name)
    return team


async def command(
    api: AsyncTestClient, team: Team, method: str, path: str, user: User, body: Any = None, status: int = 200
) -> dict:
    response = await api.request(method, f"{API}{path}", headers=user.auth, **({} if body is None else {"json": body}))
    assert response.status_code == status, f"{method} {path}: {response.text}"
    team.position = max(team.position, int(response.headers["X-Hubbub-Position"]))
    return response.json()


async def post(api: AsyncTestClient, team: Team, channel_id: str, user: User, text: str, **extra: Any) -> dict:
    return await command(api, team, "POST", f"/channels/{channel_id}/messages", user, {"text": text, **extra}, 201)


async def notifications(api: AsyncTestClient, team: Team, user: User, **params: Any) -> list[dict]:
    response = await api.get(f"{API}/notifications", params=params, headers=at(user, team.position))
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def kinds(api: AsyncTestClient, team: Team, message: dict) -> dict[str, str]:
    """Who was notified of ``message`` and how: name -> kind."""
    found = {}
    for name, user in team.people.items():
        for item in await notifications(api, team, user):
            if item["message_id"] == message["id"]:
                found[name] = item["kind"]
    return found


async def test_a_mention_notifies_the_mentioned_member_and_never_the_author(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy")
    ann, bob = team.people["Ann"], team.people["Bob"]
    message = await post(api, team, team.general_id, ann, f"hi <@{bob.id}> and me <@{ann.id}>")
    assert await kinds(api, team, message) == {"Bob": "mention"}
    [item] = await notifications(api, team, bob)
    assert item == {
        "id": item["id"],
        "kind": "mention",
        "channel_id": team.general_id,
        "message_id": message["id"],
        "workspace_id": team.workspace_id,
        "created_at": item["created_at"],
        "read": False,
    }
    assert (await channels_of(api, team, bob))[team.general_id]["mention_count"] == 1
    assert (await channels_of(api, team, ann))[team.general_id]["mention_count"] == 0


async def test_at_channel_reaches_every_member_and_at_here_only_those_online(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy", "Dee")
    ann, bob, cy = team.people["Ann"], team.people["Bob"], team.people["Cy"]
    everyone = await post(api, team, team.general_id, ann, "@channel standup in 5")
    assert await kinds(api, team, everyone) == {"Bob": "channel", "Cy": "channel", "Dee": "channel"}
    for user, status in ((bob, "active"), (cy, "away"), (ann, "active")):
        response = await api.put(f"{API}/presence", json={"status": status}, headers=user.auth)
        assert response.status_code == 200, response.text
    here = await post(api, team, team.general_id, ann, "@here who is around?")
    assert await kinds(api, team, here) == {"Bob": "here"}  # Cy is away, Dee offline, Ann wrote it
    both = await post(api, team, team.general_id, ann, f"@here and <@{cy.id}>")
    assert await kinds(api, team, both) == {"Bob": "here", "Cy": "mention"}  # one notification each, the nearest kind


async def test_every_dm_and_group_message_notifies_the_other_people(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy", "Dee")
    ann, bob, cy = team.people["Ann"], team.people["Bob"], team.people["Cy"]
    dm = await open_dm(api, team, ann, bob)
    group = await open_dm(api, team, bob, ann, cy)
    assert await kinds(api, team, await post(api, team, dm, ann, "psst")) == {"Bob": "dm"}
    assert await kinds(api, team, await post(api, team, group, bob, f"hi <@{cy.id}>")) == {"Ann": "dm", "Cy": "dm"}
    assert (await channels_of(api, team, bob))[dm]["mention_count"] == 1


async def test_replies_notify_who_started_or_replied_in_the_thread(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy", "Dee")
    ann, bob, cy = team.people["Ann"], team.people["Bob"], team.people["Cy"]
    root = await post(api, team, team.general_id, ann, "lunch?")
    first = await post(api, team, team.general_id, bob, "yes", thread_root_id=root["id"])
    assert await kinds(api, team, first) == {"Ann": "thread_reply"}
    second = await post(api, team, team.general_id, cy, "me too", thread_root_id=root["id"])
    assert await kinds(api, team, second) == {"Ann": "thread_reply", "Bob": "thread_reply"}
    third = await post(api, team, team.general_id, ann, "12:30", thread_root_id=root["id"])
    assert await kinds(api, team, third) == {"Bob": "thread_reply", "Cy": "thread_reply"}
    assert (await channels_of(api, team, bob))[team.general_id]["mention_count"] == 0  # replies are not mentions


async def test_keywords_match_whole_words_whatever_the_case(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy")
    ann, bob = team.people["Ann"], team.people["Bob"]
    body = await command(api, team, "PUT", "/me/keywords", bob, {"keywords": ["deploy", " Release Train "]})
    assert body["keywords"] == ["deploy", "Release Train"]
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "Deploying now")) == {}
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "DEPLOY!")) == {"Bob": "keyword"}
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "the release  train leaves")) == {
        "Bob": "keyword"
    }
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "train release")) == {}
    await command(api, team, "PUT", "/me/keywords", bob, {"keywords": []})
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "deploy")) == {}


async def test_levels_all_mentions_and_nothing(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy", "Dee")
    ann, bob, cy = team.people["Ann"], team.people["Bob"], team.people["Cy"]
    general = team.general_id
    assert (await command(api, team, "PUT", f"/channels/{general}/notify", bob, {"level": "all"}))["level"] == "all"
    await command(api, team, "PUT", f"/channels/{general}/notify", cy, {"level": "nothing"})
    assert await kinds(api, team, await post(api, team, general, ann, "plain words")) == {"Bob": "message"}
    mention = await post(api, team, general, ann, f"<@{bob.id}> <@{cy.id}> <@{team.people['Dee'].id}>")
    assert await kinds(api, team, mention) == {"Bob": "mention", "Dee": "mention"}  # Cy: nothing at all
    assert await kinds(api, team, await post(api, team, general, ann, "@channel")) == {
        "Bob": "channel",
        "Dee": "channel",
    }
    root = await post(api, team, general, cy, "a thread")
    assert await kinds(api, team, await post(api, team, general, ann, "reply", thread_root_id=root["id"])) == {}
    assert (await channels_of(api, team, bob))[general]["mention_count"] == 2  # the message kind is not counted


async def test_a_muted_channel_records_only_direct_mentions(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy")
    ann, bob = team.people["Ann"], team.people["Bob"]
    general = team.general_id
    body = await command(api, team, "PUT", f"/channels/{general}/notify", bob, {"level": "mentions", "muted": True})
    assert body == {"channel_id": general, "level": "mentions", "muted": True, "position": body["position"]}
    assert (await command(api, team, "PUT", f"/channels/{general}/notify", bob, {"level": "all"}))["muted"] is True
    assert await kinds(api, team, await post(api, team, general, ann, "@channel hello")) == {"Cy": "channel"}
    assert await kinds(api, team, await post(api, team, general, ann, f"<@{bob.id}> look")) == {"Bob": "mention"}
    await command(api, team, "PUT", f"/channels/{general}/notify", bob, {"level": "all", "muted": False})
    assert await kinds(api, team, await post(api, team, general, ann, "hello")) == {"Bob": "message"}
    settings = (await api.get(f"{API}/me/notification-settings", headers=at(bob, team.position))).json()
    assert settings["channels"] == [{"channel_id": general, "level": "all", "muted": False}]


async def test_dnd_still_records_notifications(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    body = await command(api, team, "PUT", "/me/dnd", bob, {"until": "2999-01-01T10:00:00+02:00"})
    assert body["until"] == "2999-01-01T08:00:00Z"
    assert await kinds(api, team, await post(api, team, team.general_id, ann, f"<@{bob.id}>")) == {"Bob": "mention"}
    assert (await api.get(f"{API}/me/notification-settings", headers=at(bob, team.position))).json()[
        "dnd_until"
    ] == "2999-01-01T08:00:00Z"
    assert (await command(api, team, "PUT", "/me/dnd", bob, {"until": None}))["until"] is None


async def test_the_read_marker_clears_mention_count_and_marks_notifications_read(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    general = team.general_id
    one = await post(api, team, general, ann, f"<@{bob.id}> one")
    two = await post(api, team, general, ann, "@channel two")
    await post(api, team, general, ann, "plain")
    three = await post(api, team, general, ann, f"<@{bob.id}> three")
    listed = (await channels_of(api, team, bob))[general]
    assert listed["mention_count"] == 3 and listed["unread_count"] == 4
    await command(api, team, "POST", f"/channels/{general}/read", bob, {"seq": two["seq"]})
    listed = (await channels_of(api, team, bob))[general]
    assert listed["mention_count"] == 1 and listed["unread_count"] == 2
    unread = await notifications(api, team, bob, unread="true")
    assert [n["message_id"] for n in unread] == [three["id"]]
    assert {n["message_id"]: n["read"] for n in await notifications(api, team, bob)} == {
        one["id"]: True,
        two["id"]: True,
        three["id"]: False,
    }
    await command(api, team, "POST", f"/channels/{general}/read", bob, {"seq": three["seq"]})
    assert (await channels_of(api, team, bob))[general]["mention_count"] == 0


async def test_read_state_is_shared_by_every_session_of_a_person(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    login = await api.post(f"{API}/auth/login", json={"email": bob.email, "password": "correct horse battery"})
    phone = User(bob.id, bob.email, login.json()["token"], "Bob's phone")
    dm = await open_dm(api, team, ann, bob)
    posted = [await post(api, team, dm, ann, f"dm {i}") for i in range(3)]
    items = await notifications(api, team, phone)
    assert [n["message_id"] for n in items] == [p["id"] for p in reversed(posted)]  # newest first
    await command(api, team, "POST", "/notifications/read", bob, {"ids": [items[0]["id"]]})
    assert [n["message_id"] for n in await notifications(api, team, phone, unread="true")] == [
        posted[1]["id"],
        posted[0]["id"],
    ]
    assert (await channels_of(api, team, phone))[dm]["mention_count"] == 2
    await command(api, team, "POST", "/notifications/read", phone, {"all": True})
    assert await notifications(api, team, bob, unread="true") == []
    assert (await channels_of(api, team, bob))[dm]["mention_count"] == 0
    later = await post(api, team, dm, ann, "after all")  # "all" covered what existed then, not what came after
    assert [n["message_id"] for n in await notifications(api, team, phone, unread="true")] == [later["id"]]


async def test_marking_read_what_is_already_read_appends_nothing(api: AsyncTestClient, pool: Any) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    dm = await open_dm(api, team, ann, bob)
    await post(api, team, dm, ann, "ping")
    [item] = await notifications(api, team, bob)
    read = await command(api, team, "POST", "/notifications/read", bob, {"ids": [item["id"]]})
    logged = await user_events(pool, bob)
    for body in ({"ids": [item["id"]]}, {"all": True}, {"ids": [item["id"][:-1] + "0"]}):  # read, all read, not his
        again = await command(api, team, "POST", "/notifications/read", bob, body)
        assert again["position"] == read["position"], body  # the current position, as other no-ops answer
    assert await user_events(pool, bob) == logged
    await post(api, team, dm, ann, "pong")  # something unread again: marking it is recorded
    assert (await command(api, team, "POST", "/notifications/read", bob, {"all": True}))["position"] > read["position"]
    assert await user_events(pool, bob) == logged + 1
    assert await notifications(api, team, bob, unread="true") == []


async def user_events(pool: Any, user: User) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM events WHERE stream_id = %s", (f"user-{user.id}",))
        return (await cur.fetchone())[0]


async def test_pages_newest_first(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    dm = await open_dm(api, team, ann, bob)
    posted = [(await post(api, team, dm, ann, f"n{i}"))["id"] for i in range(5)]
    first = (await api.get(f"{API}/notifications", params={"limit": 2}, headers=at(bob, team.position))).json()
    second = (
        await api.get(
            f"{API}/notifications", params={"limit": 2, "before": first["next_cursor"]}, headers=at(bob, team.position)
        )
    ).json()
    assert [n["message_id"] for n in first["items"] + second["items"]] == posted[::-1][:4]


async def test_a_deleted_message_takes_its_notifications_along(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    message = await post(api, team, team.general_id, ann, f"oops <@{bob.id}>")
    assert (await channels_of(api, team, bob))[team.general_id]["mention_count"] == 1
    await command(api, team, "DELETE", f"/messages/{message['id']}", ann)
    assert await notifications(api, team, bob) == []
    assert (await channels_of(api, team, bob))[team.general_id]["mention_count"] == 0


async def test_notifications_need_membership_and_vanish_with_visibility(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob", "Cy")
    ann, bob, cy = team.people["Ann"], team.people["Bob"], team.people["Cy"]
    secret = await create_channel(api, team, ann, "secret", private=True)
    assert await kinds(api, team, await post(api, team, secret, ann, f"<@{bob.id}> not here")) == {}
    await add_to_channel(api, team, secret, ann, bob)
    assert await kinds(api, team, await post(api, team, secret, ann, f"<@{bob.id}> now")) == {"Bob": "mention"}
    await command(api, team, "DELETE", f"/channels/{secret}/members/{bob.id}", ann)
    assert await notifications(api, team, bob) == []  # removed: no longer listed
    await command(api, team, "DELETE", f"/workspaces/{team.workspace_id}/members/{cy.id}", ann)
    assert await kinds(api, team, await post(api, team, team.general_id, ann, "@channel")) == {"Bob": "channel"}


async def test_bad_input_is_a_problem_naming_the_field(api: AsyncTestClient) -> None:
    team = await team_of(api, "Bob")
    ann, bob = team.people["Ann"], team.people["Bob"]
    secret = await create_channel(api, team, ann, "hidden", private=True)

    async def put(path: str, body: Any, user: User = bob) -> Any:
        return await api.put(f"{API}{path}", json=body, headers=user.auth)

    field = lambda response, status: problem(response, status).get("errors", [{}])[0].get("field")  # noqa: E731
    assert field(await put(f"/channels/{team.general_id}/notify", {"level": "loud"}), 422) == "level"
    assert field(await put(f"/channels/{team.general_id}/notify", {"level": "all", "volume": 3}), 422) == "volume"
    assert field(await put(f"/channels/{team.general_id}/notify", {"muted": True}), 422) == "level"
    for hidden in (secret, str(uuid.uuid4()), "not-an-id", "%00"):
        problem(await put(f"/channels/{hidden}/notify", {"level": "all"}), 404)
    assert field(await put("/me/keywords", {"keywords": ["x" * 65]}), 422) == "keywords"
    assert field(await put("/me/keywords", {"keywords": [f"k{i}" for i in range(10_000)]}), 422) == "keywords"
    assert field(await put("/me/keywords", {"keywords": ["\x00"]}), 422) == "keywords"
    assert field(await put("/me/keywords", {"keywords": "deploy"}), 422) == "keywords"
    problem(await put("/me/keywords", {"keywords": ["k" * 60] * 20_000}), 413)
    assert field(await put("/me/dnd", {"until": "2999-01-01T10:00:00"}), 422) == "until"
    assert field(await put("/me/dnd", {"until": "2001-01-01T10:00:00Z"}), 422) == "until"
    assert field(await put("/me/dnd", {"until": "tomorrow"}), 422) == "until"
    assert field(await put("/me/dnd", {}), 422) == "until"
    assert field(await put("/me/email-notifications", {"enabled": True, "delay_s": -5}), 422) == "delay_s"
    for body in (
        {},
        {"all": False},
        {"ids": [], "all": False},
        {"ids": ["x"]},
        {"ids": [str(uuid.uuid4())], "all": True},
    ):
        response = await api.post(f"{API}/notifications/read", json=body, headers=bob.auth)
        assert field(response, 422) == "ids", body
    for params in ({"limit": 0}, {"limit": 201}, {"unread": "maybe"}, {"before": "x" * 100}):
        response = await api.get(f"{API}/notifications", params=params, headers=bob.auth)
        assert 400 <= response.status_code < 500, (params, response.text)
    problem(await api.get(f"{API}/notifications"), 401)
    # someone else's notification id marks nothing of theirs
    dm = await open_dm(api, team, ann, bob)
    await post(api, team, dm, ann, "hi")
    [mine] = await notifications(api, team, bob)
    await command(api, team, "POST", "/notifications/read", ann, {"ids": [mine["id"]]})
    assert (await notifications(api, team, bob))[0]["read"] is False
