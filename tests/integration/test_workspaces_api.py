"""Workspaces and members over HTTP (API.md: workspaces, invites, members, roles)."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient

from tests.integration.conftest import register
from tests.integration.messaging_helpers import (
    API,
    accept,
    at,
    channels_of,
    create_workspace,
    invite,
    join_workspace,
    problem,
)


async def test_creating_a_workspace_makes_an_owner_and_general(api: AsyncTestClient) -> None:
    ada = await register(api, "Ada")
    response = await api.post(f"{API}/workspaces", json={"name": "  Acme  Corp "}, headers=ada.auth)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "Acme Corp" and int(response.headers["X-Hubbub-Position"]) == body["position"] > 0
    mine = await api.get(f"{API}/workspaces", headers=at(ada, body["position"]))
    assert [(w["id"], w["name"], w["role"]) for w in mine.json()["items"]] == [(body["id"], "Acme Corp", "owner")]
    one = await api.get(f"{API}/workspaces/{body['id']}", headers=ada.auth)
    assert one.status_code == 200 and one.json()["role"] == "owner"
    members = (await api.get(f"{API}/workspaces/{body['id']}/members", headers=ada.auth)).json()["items"]
    assert members == [{"user_id": ada.id, "display_name": "Ada", "role": "owner"}]
    channels = await api.get(f"{API}/workspaces/{body['id']}/channels", headers=ada.auth)
    [general] = channels.json()["items"]
    assert general["id"] == body["general_channel_id"] and general["name"] == "general"
    assert general["member"] is True and general["kind"] == "channel" and general["private"] is False


async def test_bad_workspace_bodies(api: AsyncTestClient) -> None:
    ada = await register(api, "Ada")
    url = f"{API}/workspaces"
    assert problem(await api.post(url, json={"name": ""}, headers=ada.auth), 422)["errors"][0]["field"] == "name"
    assert problem(await api.post(url, json={"name": "x" * 81}, headers=ada.auth), 422)["errors"][0]["field"] == "name"
    assert problem(await api.post(url, json={"name": 5}, headers=ada.auth), 422)
    assert problem(await api.post(url, json={"name": "a", "owner": "x"}, headers=ada.auth), 422)
    assert problem(await api.post(url, content=b"{", headers={**ada.auth, "Content-Type": "application/json"}), 400)
    assert problem(await api.post(url, json={"name": "a"}), 401)
    assert (await api.get(url, headers=ada.auth)).json()["items"] == []


async def test_an_idempotency_key_makes_one_workspace(api: AsyncTestClient) -> None:
    ada = await register(api, "Ada")
    headers = {**ada.auth, "Idempotency-Key": "create-acme-1"}
    first = await api.post(f"{API}/workspaces", json={"name": "Acme"}, headers=headers)
    again = await api.post(f"{API}/workspaces", json={"name": "Acme"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    mine = await api.get(f"{API}/workspaces", headers=at(ada, again.json()["position"]))
    assert len(mine.json()["items"]) == 1


async def test_invites_bring_people_in_with_their_role(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    bob = await register(api, "Bob")
    code = await invite(api, team, role="guest")
    response = await api.post(f"{API}/invites/{code}/accept", headers=bob.auth)
    assert response.status_code == 200, response.text
    assert response.json()["workspace_id"] == team.workspace_id and response.json()["role"] == "guest"
    again = await api.post(f"{API}/invites/{code}/accept", headers=bob.auth)  # already in: idempotent
    assert again.status_code == 200 and again.json()["workspace_id"] == team.workspace_id
    members = await api.get(f"{API}/workspaces/{team.workspace_id}/members", headers=at(bob, again.json()["position"]))
    assert {(m["user_id"], m["role"]) for m in members.json()["items"]} == {(team.owner.id, "owner"), (bob.id, "guest")}


async def test_invite_rules(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    member = await join_workspace(api, team, "Mem")
    url = f"{API}/workspaces/{team.workspace_id}/invites"
    assert problem(await api.post(url, json={}, headers=member.auth), 403)
    assert (
        problem(await api.post(url, json={"role": "admin"}, headers=team.owner.auth), 422)["errors"][0]["field"]
        == "role"
    )
    assert problem(await api.post(url, json={"role": 1}, headers=team.owner.auth), 422)
    assert problem(await api.post(url, json={"expires_in_s": 0}, headers=team.owner.auth), 422)
    stranger = await register(api, "Eve")
    assert problem(await api.post(url, json={}, headers=stranger.auth), 404)
    assert problem(await api.post(f"{API}/workspaces/nope/invites", json={}, headers=team.owner.auth), 404)


async def test_used_unknown_and_expired_invites(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    code = await invite(api, team)
    await accept(api, team, await register(api, "Bob"), code)
    carol = await register(api, "Carol")
    assert problem(await api.post(f"{API}/invites/{code}/accept", headers=carol.auth), 409)
    assert problem(await api.post(f"{API}/invites/{code}x/accept", headers=carol.auth), 404)
    assert problem(await api.post(f"{API}/invites/garbage/accept", headers=carol.auth), 404)
    short = await api.post(
        f"{API}/workspaces/{team.workspace_id}/invites", json={"expires_in_s": 1}, headers=team.owner.auth
    )
    await asyncio.sleep(1.1)
    expired = problem(await api.post(f"{API}/invites/{short.json()['code']}/accept", headers=carol.auth), 409)
    assert "expired" in expired["detail"]


async def test_roles_change_by_the_rules(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    admin = await join_workspace(api, team, "Adm", "admin")
    mem = await join_workspace(api, team, "Mem")
    url = f"{API}/workspaces/{team.workspace_id}/members"
    ok = await api.patch(f"{url}/{mem.id}", json={"role": "guest"}, headers=admin.auth)
    assert ok.status_code == 200 and ok.json()["role"] == "guest" and ok.headers["X-Hubbub-Position"]
    assert problem(await api.patch(f"{url}/{mem.id}", json={"role": "admin"}, headers=admin.auth), 403)
    assert problem(await api.patch(f"{url}/{mem.id}", json={"role": "owner"}, headers=admin.auth), 403)
    assert problem(await api.patch(f"{url}/{team.owner.id}", json={"role": "member"}, headers=admin.auth), 403)
    assert problem(await api.patch(f"{url}/{mem.id}", json={"role": "king"}, headers=team.owner.auth), 422)
    assert problem(await api.patch(f"{url}/{mem.id}", json={"role": "member", "x": 1}, headers=team.owner.auth), 422)
    assert problem(await api.patch(f"{url}/nobody", json={"role": "member"}, headers=team.owner.auth), 404)
    last = problem(await api.patch(f"{url}/{team.owner.id}", json={"role": "admin"}, headers=team.owner.auth), 409)
    assert "last owner" in last["detail"]
    promoted = await api.patch(f"{url}/{admin.id}", json={"role": "owner"}, headers=team.owner.auth)
    assert promoted.status_code == 200
    demoted = await api.patch(f"{url}/{team.owner.id}", json={"role": "admin"}, headers=admin.auth)
    assert demoted.status_code == 200, demoted.text
    members = await api.get(url, headers=at(mem, demoted.json()["position"]))
    roles = {m["user_id"]: m["role"] for m in members.json()["items"]}
    assert roles == {team.owner.id: "admin", admin.id: "owner", mem.id: "guest"}


async def test_remove_and_leave(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    admin = await join_workspace(api, team, "Adm", "admin")
    mem = await join_workspace(api, team, "Mem")
    other = await join_workspace(api, team, "Oth")
    url = f"{API}/workspaces/{team.workspace_id}/members"
    assert problem(await api.delete(f"{url}/{other.id}", headers=mem.auth), 403)
    assert problem(await api.delete(f"{url}/{team.owner.id}", headers=admin.auth), 403)
    assert problem(await api.delete(f"{url}/{team.owner.id}", headers=team.owner.auth), 409)  # the last owner
    removed = await api.delete(f"{url}/{other.id}", headers=admin.auth)
    assert removed.status_code == 200 and removed.json()["position"] > 0
    left = await api.delete(f"{url}/{mem.id}", headers=mem.auth)
    assert left.status_code == 200
    assert problem(await api.delete(f"{url}/{mem.id}", headers=mem.auth), 404)
    assert problem(await api.get(url, headers=at(mem, left.json()["position"])), 404)
    assert problem(await api.get(f"{API}/workspaces/{team.workspace_id}/channels", headers=mem.auth), 404)
    assert (await api.get(f"{API}/workspaces", headers=mem.auth)).json()["items"] == []
    assert set(await channels_of(api, team, admin)) == {team.general_id}


async def test_strangers_see_no_workspace(api: AsyncTestClient) -> None:
    team = await create_workspace(api, await register(api, "Ada"))
    eve = await register(api, "Eve")
    for path in ("", "/members", "/channels"):
        assert problem(
            await api.get(f"{API}/workspaces/{team.workspace_id}{path}", headers=at(eve, team.position)), 404
        )
    patch = await api.patch(
        f"{API}/workspaces/{team.workspace_id}/members/{team.owner.id}", json={"role": "member"}, headers=eve.auth
    )
    assert problem(patch, 404)
    assert problem(await api.get(f"{API}/workspaces/{team.workspace_id}/members?limit=0", headers=team.owner.auth), 422)
