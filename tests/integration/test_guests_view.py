"""What a guest sees of a workspace's people, on every path (issue 16 item 21): themselves, the
owners and admins, and the people they share a conversation with; a member sees everyone.

Over the gateway of test_realtime (same fixtures): the member list, the presence list (a page and
by ids), presence over the socket, and naming people (DMs, adding to a channel).
"""

from __future__ import annotations

import httpx

from tests.integration.conftest import User
from tests.integration.messaging_helpers import (
    API,
    Team,
    add_to_channel,
    at,
    create_channel,
    join_workspace,
    open_dm,
    problem,
)
from tests.integration.test_realtime import api, server, team_of, ws  # api, server: fixtures
from tests.integration.test_realtime_presence import _presence

__all__ = ["api", "server"]


async def _scene(api: httpx.AsyncClient) -> tuple[Team, User, set[str]]:
    """Owner, admin Adi, members Bea and Cat, guest Gus in #secret with Cat: Gus sees Owner, Adi,
    Cat and himself (not Bea). Returns the team, Gus, and the ids he sees."""
    team = await team_of(api, "Bea", "Cat")
    adi = await join_workspace(api, team, "Adi", role="admin")  # type: ignore[arg-type]
    gus = await join_workspace(api, team, "Gus", role="guest")  # type: ignore[arg-type]
    secret = await create_channel(api, team, team.owner, "secret", private=True)  # type: ignore[arg-type]
    await add_to_channel(api, team, secret, team.owner, team.people["Cat"], gus)  # type: ignore[arg-type]
    return team, gus, {team.owner.id, adi.id, team.people["Cat"].id, gus.id}


async def _listed(api: httpx.AsyncClient, team: Team, user: User, what: str, **params: str) -> set[str]:
    response = await api.get(
        f"{API}/workspaces/{team.workspace_id}/{what}", params={"limit": 200, **params}, headers=at(user, team.position)
    )
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers, response.text
    return {item["user_id"] for item in response.json()["items"]}


async def test_a_guest_lists_only_the_people_it_sees_and_a_member_everyone(api: httpx.AsyncClient) -> None:
    team, gus, seen = await _scene(api)
    bea = team.people["Bea"]
    everyone = seen | {bea.id}
    for what in ("members", "presence"):
        assert await _listed(api, team, gus, what) == seen, what
        assert await _listed(api, team, bea, what) == everyone, what
    # Paged, the pages hold the same people.
    first = await api.get(f"{API}/workspaces/{team.workspace_id}/members", params={"limit": 2}, headers=gus.auth)
    rest = await _listed(api, team, gus, "members", after=first.json()["next_cursor"])
    assert {m["user_id"] for m in first.json()["items"]} | rest == seen
    # Asked by id, the people a guest does not see are left out as strangers are.
    asked = ",".join(sorted(everyone | {"01900000-0000-7000-8000-000000000000"}))
    assert await _listed(api, team, gus, "presence", user_ids=asked) == seen
    assert await _listed(api, team, bea, "presence", user_ids=asked) == everyone


async def test_sharing_a_conversation_makes_people_visible_to_a_guest(api: httpx.AsyncClient) -> None:
    team, gus, seen = await _scene(api)
    bea = team.people["Bea"]
    await open_dm(api, team, bea, gus)  # type: ignore[arg-type]  # a member may name anyone
    assert await _listed(api, team, gus, "members") == seen | {bea.id}


async def test_a_guest_cannot_name_people_it_does_not_see(api: httpx.AsyncClient) -> None:
    team, gus, _ = await _scene(api)
    bea, cat = team.people["Bea"], team.people["Cat"]
    dm = await api.post(
        f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": [bea.id]}, headers=at(gus, team.position)
    )
    assert problem(dm, 404)["detail"] == "some of these people are not in this workspace"
    group = await api.post(
        f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": [cat.id, bea.id]}, headers=at(gus, team.position)
    )
    problem(group, 404)
    await open_dm(api, team, gus, cat)  # type: ignore[arg-type]  # someone it shares #secret with
    secret = await create_channel(api, team, team.owner, "gus-and-owner", private=True)  # type: ignore[arg-type]
    await add_to_channel(api, team, secret, team.owner, gus)  # type: ignore[arg-type]
    added = await api.post(
        f"{API}/channels/{secret}/members", json={"user_ids": [bea.id]}, headers=at(gus, team.position)
    )
    assert problem(added, 404)["detail"] == "some of these people are not in this workspace"
    await add_to_channel(api, team, secret, gus, cat)  # type: ignore[arg-type]


async def test_a_guest_s_socket_hears_the_presence_of_the_people_it_sees_only(
    api: httpx.AsyncClient, server: str
) -> None:
    team, gus, _ = await _scene(api)
    bea, cat = team.people["Bea"], team.people["Cat"]
    async with ws(server, team.owner) as member, ws(server, gus) as guest:
        assert await _presence(member, gus.id) == "online"  # members see guests too
        async with ws(server, bea):
            assert await _presence(member, bea.id) == "online"
            async with ws(server, cat):
                assert await _presence(member, cat.id) == "online"
                named: set[str] = set()
                while cat.id not in named:  # every frame up to the one that names Cat
                    frame = await guest.event("presence.changed")
                    assert frame["workspace_id"] == team.workspace_id and "position" not in frame
                    data = frame["data"]
                    named |= {*data["online"], *data["away"], *(item["user_id"] for item in data["offline"])}
                assert bea.id not in named and cat.id in named
