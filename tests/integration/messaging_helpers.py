"""Shared steps for messaging tests over HTTP (workspaces, invites, channels, DMs).

Stable for other test modules: each helper asserts the answer it needs and returns ids, so a
test reads as its story. Every helper sends the caller's token and, on queries, the last
position it was given (read-your-writes); ``User`` and ``register`` come from ``conftest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.testing import AsyncTestClient

from tests.integration.conftest import User, register

API = "/api/v1"
PROBLEM = "application/problem+json"
STALE = "x-hubbub-stale"
"""Set on a query whose ``X-Hubbub-Position`` wait timed out (``projections/consistency.py``): the read
models were behind, so the answer may say less than it should."""


def problem(response, status: int) -> dict:
    """Assert ``response`` is an RFC 9457 problem with ``status``, answered by read models that
    were up to date (a 404 that only meant "not projected yet" must not pass for "not yours");
    its body."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert STALE not in response.headers, f"stale answer: {response.text}"
    body = response.json()
    assert body["status"] == status and {"type", "title", "detail"} <= body.keys(), body
    return body


def at(user: User, position: int) -> dict[str, str]:
    """Headers for a query by ``user`` that must see writes up to ``position``."""
    return {**user.auth, "X-Hubbub-Position": str(position)}


@dataclass
class Team:
    """A workspace with an owner and, by role, the people invited into it."""

    workspace_id: str
    general_id: str
    owner: User
    people: dict[str, User] = field(default_factory=dict)
    position: int = 0


async def create_workspace(api: AsyncTestClient, owner: User, name: str = "Acme") -> Team:
    """POST /workspaces as ``owner``: the team with its #general."""
    response = await api.post(f"{API}/workspaces", json={"name": name}, headers=owner.auth)
    assert response.status_code == 201, response.text
    body = response.json()
    return Team(body["id"], body["general_channel_id"], owner, position=body["position"])


async def invite(api: AsyncTestClient, team: Team, by: User | None = None, role: str = "member") -> str:
    """An invite code made by ``by`` (the owner by default)."""
    response = await api.post(
        f"{API}/workspaces/{team.workspace_id}/invites", json={"role": role}, headers=(by or team.owner).auth
    )
    assert response.status_code == 201, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["code"]


async def accept(api: AsyncTestClient, team: Team, user: User, code: str) -> int:
    response = await api.post(f"{API}/invites/{code}/accept", headers=user.auth)
    assert response.status_code == 200, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["position"]


async def join_workspace(api: AsyncTestClient, team: Team, name: str, role: str = "member") -> User:
    """Register ``name`` and bring them into the team with ``role`` (any role: admins and owners
    are invited as members, then promoted by the owner)."""
    user = await register(api, name)
    await accept(api, team, user, await invite(api, team, role="guest" if role == "guest" else "member"))
    if role in ("admin", "owner"):
        response = await api.patch(
            f"{API}/workspaces/{team.workspace_id}/members/{user.id}", json={"role": role}, headers=team.owner.auth
        )
        assert response.status_code == 200, response.text
        team.position = max(team.position, response.json()["position"])
    team.people[name] = user
    return user


async def create_channel(
    api: AsyncTestClient, team: Team, by: User, name: str, private: bool = False, topic: str = ""
) -> str:
    """POST /workspaces/{ws}/channels; the new channel's id (``by`` is its first member)."""
    response = await api.post(
        f"{API}/workspaces/{team.workspace_id}/channels",
        json={"name": name, "private": private, "topic": topic},
        headers=by.auth,
    )
    assert response.status_code == 201, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["id"]


async def add_to_channel(api: AsyncTestClient, team: Team, channel_id: str, by: User, *users: User) -> int:
    response = await api.post(
        f"{API}/channels/{channel_id}/members", json={"user_ids": [u.id for u in users]}, headers=by.auth
    )
    assert response.status_code == 200, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["position"]


async def join_channel(api: AsyncTestClient, team: Team, channel_id: str, user: User) -> int:
    response = await api.post(f"{API}/channels/{channel_id}/join", headers=user.auth)
    assert response.status_code == 200, response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["position"]


async def open_dm(api: AsyncTestClient, team: Team, by: User, *others: User) -> str:
    """POST /workspaces/{ws}/dms: the id of the DM (or group DM) of ``by`` and ``others``."""
    response = await api.post(
        f"{API}/workspaces/{team.workspace_id}/dms", json={"user_ids": [u.id for u in others]}, headers=by.auth
    )
    assert response.status_code in (200, 201), response.text
    team.position = max(team.position, response.json()["position"])
    return response.json()["id"]


async def channels_of(api: AsyncTestClient, team: Team, user: User) -> dict[str, dict]:
    """GET /workspaces/{ws}/channels as ``user``, after every write so far: items by id."""
    response = await api.get(
        f"{API}/workspaces/{team.workspace_id}/channels", params={"limit": 200}, headers=at(user, team.position)
    )
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}
