"""A post decided on one process's cached session, channel and workspace is fenced: when another
process changed one of them meanwhile, the post is decided again on what the log says now.

Two apps on one database stand for two server processes: ``api`` (where the poster's process
cached everything by posting once) and ``other``, where the change happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration.conftest import register
from tests.integration.messaging_helpers import (
    API,
    Team,
    add_to_channel,
    at,
    create_channel,
    create_workspace,
    join_workspace,
    problem,
)


@pytest.fixture(scope="module")
async def other(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def post(api: AsyncTestClient, channel_id: str, headers: dict[str, str], text: str):
    return await api.post(f"{API}/channels/{channel_id}/messages", json={"text": text}, headers=headers)


async def texts(api: AsyncTestClient, team: Team, channel_id: str) -> list[str]:
    response = await api.get(
        f"{API}/channels/{channel_id}/messages", params={"limit": 100}, headers=at(team.owner, team.position)
    )
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["items"]]


async def setup(api: AsyncTestClient) -> tuple[Team, str, dict[str, str]]:
    team = await create_workspace(api, await register(api, "Owner"))
    bob = await join_workspace(api, team, "Bob")
    secret = await create_channel(api, team, team.owner, "secret", private=True)
    await add_to_channel(api, team, secret, team.owner, bob)
    first = await post(api, secret, at(bob, team.position), "first, read from the log")
    assert first.status_code == 201, first.text
    team.position = max(team.position, first.json()["position"])
    return team, secret, bob.auth


async def test_a_member_removed_on_another_process_cannot_post_through_a_stale_copy(
    api: AsyncTestClient, other: AsyncTestClient
) -> None:
    team, secret, bob = await setup(api)
    bob_id = team.people["Bob"].id
    removed = await other.delete(f"{API}/channels/{secret}/members/{bob_id}", headers=team.owner.auth)
    assert removed.status_code == 200, removed.text
    team.position = max(team.position, removed.json()["position"])
    problem(await post(api, secret, bob, "after my removal"), 404)  # private: gone, not forbidden
    assert await texts(api, team, secret) == ["first, read from the log"]


async def test_a_session_revoked_on_another_process_cannot_post_through_a_stale_copy(
    api: AsyncTestClient, other: AsyncTestClient
) -> None:
    team, secret, bob = await setup(api)
    assert (await other.post(f"{API}/auth/logout", headers=bob)).status_code == 204
    problem(await post(api, secret, bob, "after logging out"), 401)
    assert await texts(api, team, secret) == ["first, read from the log"]


async def test_a_change_that_does_not_matter_costs_a_retry_not_the_post(
    api: AsyncTestClient, other: AsyncTestClient
) -> None:
    team, secret, bob = await setup(api)
    cy = await join_workspace(other, team, "Cy")  # the workspace stream moves
    team.position = max(team.position, await add_to_channel(other, team, secret, team.owner, cy))  # and the channel
    answer = await post(api, secret, bob, "still a member")
    assert answer.status_code == 201, answer.text
    team.position = max(team.position, answer.json()["position"])
    assert await texts(api, team, secret) == ["still a member", "first, read from the log"]


async def test_a_member_added_on_another_process_can_post_at_once(api: AsyncTestClient, other: AsyncTestClient) -> None:
    """The stale copy says "not a member": that refusal is not answered before a read."""
    team, secret, _ = await setup(api)
    cy = await join_workspace(api, team, "Cy")
    probe = await post(api, secret, at(cy, team.position), "not yet a member")
    problem(probe, 404)  # this process now holds a channel without Cy
    team.position = max(team.position, await add_to_channel(other, team, secret, team.owner, cy))
    answer = await post(api, secret, cy.auth, "added elsewhere")
    assert answer.status_code == 201, answer.text
