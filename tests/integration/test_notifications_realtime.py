"""Notifications over a real WebSocket (issue 6, item 4): ``notification.created`` reaches the
person notified, right after the message it is about and with the same position, and nobody
else; do-not-disturb and mute record without pushing; a resume replays missed notifications;
``notifications.read`` reaches the person's other sockets.

"Never" is checked as in ``test_realtime.py``: after what must not arrive, a sentinel message is
posted; events come in log order, so the next event must be the sentinel.
"""

from __future__ import annotations

import httpx

from tests.integration.conftest import User
from tests.integration.messaging_helpers import API, Team, at, open_dm
from tests.integration.test_realtime import api, post, server, ws
from tests.integration.test_realtime import team_of as _team_of

__all__ = ["api", "server"]


async def team_of(api: httpx.AsyncClient, *names: str) -> Team:
    """``test_realtime.team_of``, once the read models hold it (a socket opened before they
    exist, in a module that runs first, would be closed with 1011)."""
    team = await _team_of(api, *names)
    response = await api.get(f"{API}/workspaces/{team.workspace_id}/channels", headers=at(team.owner, team.position))
    assert response.status_code == 200, response.text
    return team


async def _phone(api: httpx.AsyncClient, user: User) -> User:
    login = await api.post(f"{API}/auth/login", json={"email": user.email, "password": "correct horse battery"})
    assert login.status_code == 200, login.text
    return User(user.id, user.email, login.json()["token"], user.display_name + "'s phone")


async def test_the_notified_person_gets_the_message_then_its_notification(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cal")
    owner, bea, cal = team.owner, team.people["Bea"], team.people["Cal"]
    async with ws(server, bea) as bea_sock, ws(server, cal) as cal_sock:
        sent = await post(api, owner, team.general_id, f"hey <@{bea.id}>")
        posted = await bea_sock.event()
        created = await bea_sock.event()
        sentinel = await post(api, owner, team.general_id, "sentinel")
        assert (await cal_sock.message())["id"] == sent["id"]
        assert (await cal_sock.event())["data"]["id"] == sentinel["id"]  # no notification for Cal
        assert (await bea_sock.event())["data"]["id"] == sentinel["id"]  # and one only for Bea
    assert posted["type"] == "message.posted" and posted["data"]["id"] == sent["id"]
    assert created["type"] == "notification.created" and created["position"] == posted["position"]
    listed = (await api.get(f"{API}/notifications", headers=bea.auth)).json()["items"]
    assert created["data"] == listed[0] and created["data"]["kind"] == "mention"
    assert created["channel_id"] == team.general_id and created["workspace_id"] == team.workspace_id


async def test_at_channel_pushes_to_every_member_but_the_author(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cal", "Dan")
    async with (
        ws(server, team.people["Bea"]) as bea,
        ws(server, team.people["Cal"]) as cal,
        ws(server, team.people["Dan"]) as dan,
        ws(server, team.owner) as author,
    ):
        sent = await post(api, team.owner, team.general_id, "@channel fire drill")
        for sock in (bea, cal, dan):
            assert (await sock.message())["id"] == sent["id"]
            created = await sock.event()
            assert created["type"] == "notification.created" and created["data"]["kind"] == "channel"
        assert (await author.message())["id"] == sent["id"]
        sentinel = await post(api, team.people["Bea"], team.general_id, "sentinel")
        assert (await author.event())["data"]["id"] == sentinel["id"]


async def test_dnd_and_mute_record_without_pushing(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea", "Cal")
    owner, bea, cal = team.owner, team.people["Bea"], team.people["Cal"]
    assert (await api.put(f"{API}/me/dnd", json={"until": "2999-01-01T00:00:00Z"}, headers=bea.auth)).status_code == 200
    muted = await api.put(
        f"{API}/channels/{team.general_id}/notify", json={"level": "mentions", "muted": True}, headers=cal.auth
    )
    assert muted.status_code == 200
    async with ws(server, bea) as bea_sock, ws(server, cal) as cal_sock:
        sent = await post(api, owner, team.general_id, f"<@{bea.id}> <@{cal.id}> urgent")
        sentinel = await post(api, owner, team.general_id, "sentinel")
        for sock in (bea_sock, cal_sock):
            assert (await sock.message())["id"] == sent["id"]
            assert (await sock.event())["data"]["id"] == sentinel["id"]
    for user in (bea, cal):
        listed = (
            await api.get(f"{API}/notifications", headers={**user.auth, "X-Hubbub-Position": str(sentinel["position"])})
        ).json()["items"]
        assert [n["message_id"] for n in listed] == [sent["id"]]


async def test_a_resume_replays_missed_notifications(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    dm = await open_dm(api, team, owner, bea)  # type: ignore[arg-type]
    async with ws(server, bea) as sock:
        first = await post(api, owner, team.general_id, "seen live")
        last = (await sock.event("message.posted"))["position"]
        assert first["position"] == last
    missed = await post(api, owner, dm, "while you were away")
    async with ws(server, bea, resume_from=last) as sock:
        assert sock.ready["resumed"] is True
        posted, created = await sock.event(), await sock.event()
    assert posted["type"] == "message.posted" and posted["data"]["id"] == missed["id"]
    assert created["type"] == "notification.created" and created["data"]["kind"] == "dm"
    assert created["position"] == posted["position"] == missed["position"]


async def test_reading_notifications_reaches_the_other_devices(api: httpx.AsyncClient, server: str) -> None:
    team = await team_of(api, "Bea")
    owner, bea = team.owner, team.people["Bea"]
    phone = await _phone(api, bea)
    dm = await open_dm(api, team, owner, bea)  # type: ignore[arg-type]
    async with ws(server, bea) as laptop, ws(server, phone) as handset:
        await post(api, owner, dm, "ping")
        created = await laptop.event("notification.created")
        assert (await handset.event("notification.created"))["data"] == created["data"]
        read = await api.post(f"{API}/notifications/read", json={"ids": [created["data"]["id"]]}, headers=phone.auth)
        assert read.status_code == 200, read.text
        for sock in (laptop, handset):
            frame = await sock.event("notifications.read")
            assert frame["data"] == {"ids": [created["data"]["id"]], "all": False}
            assert frame["position"] == read.json()["position"]
        await post(api, owner, dm, "pong")  # something unread: marking all read changes something (item 19)
        await handset.event("notification.created")
        everything = await api.post(f"{API}/notifications/read", json={"all": True}, headers=bea.auth)
        assert (await handset.event("notifications.read"))["data"] == {"ids": [], "all": True}
        assert everything.status_code == 200
