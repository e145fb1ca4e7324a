"""The ``notifications`` projection rebuilt from the log equals its live tables (issue 6).

A story touches every input of the projection: each kind of notification, levels, mute, DND,
keywords set and cleared, ``@here`` with someone online, thread replies, DMs, a deleted message,
read markers, reads by id and ``all``, an email recorded, a removal from a channel and from the
workspace. Then the projection is rebuilt with ``verify=True`` while the app runs (the log holds
every other module's events too); the tables must match and the API answer as before.
"""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from infra.eventstore.postgres import PostgresEventStore
from projections.notifications import Notifications
from projections.rebuild import rebuild
from tests.integration.messaging_helpers import API, add_to_channel, at, create_channel, open_dm
from tests.integration.test_notifications_api import command, notifications, post, team_of


async def test_rebuilt_notifications_equal_the_live_ones(api: AsyncTestClient, pool, migrated_url: str) -> None:
    team = await team_of(api, "Bob", "Cy", "Dee", "Eve")
    ann, bob, cy, dee, eve = (team.people[n] for n in ("Ann", "Bob", "Cy", "Dee", "Eve"))
    general = team.general_id
    secret = await create_channel(api, team, ann, "plans", private=True)
    await add_to_channel(api, team, secret, ann, bob, cy)
    await command(api, team, "PUT", f"/channels/{general}/notify", bob, {"level": "all"})
    await command(api, team, "PUT", f"/channels/{secret}/notify", cy, {"level": "mentions", "muted": True})
    await command(api, team, "PUT", "/me/keywords", dee, {"keywords": ["deploy", "Release Train"]})
    await command(api, team, "PUT", "/me/dnd", eve, {"until": "2999-01-01T00:00:00Z"})
    await command(api, team, "PUT", "/me/email-notifications", dee, {"enabled": False})
    assert (await api.put(f"{API}/presence", json={"status": "active"}, headers=cy.auth)).status_code == 200
    root = await post(api, team, general, ann, f"hi <@{bob.id}> @here, deploy at 5")
    await post(api, team, general, cy, "on it", thread_root_id=root["id"])
    await post(api, team, general, dee, "me too", thread_root_id=root["id"])
    await post(api, team, secret, ann, f"@channel <@{cy.id}> the release train")
    doomed = await post(api, team, general, ann, f"<@{eve.id}> oops")
    await command(api, team, "DELETE", f"/messages/{doomed['id']}", ann)
    dm = await open_dm(api, team, ann, bob, cy)
    for i in range(3):
        await post(api, team, dm, ann, f"group {i}")
    await command(api, team, "PUT", "/me/keywords", dee, {"keywords": []})
    await post(api, team, general, ann, "@channel deploy done")
    await command(api, team, "POST", f"/channels/{general}/read", bob, {"seq": root["seq"]})
    [first, *_] = await notifications(api, team, cy)
    await command(api, team, "POST", "/notifications/read", cy, {"ids": [first["id"]]})
    await command(api, team, "POST", "/notifications/read", bob, {"all": True})
    await post(api, team, dm, cy, "after all")
    await command(api, team, "DELETE", f"/channels/{secret}/members/{cy.id}", ann)
    await command(api, team, "DELETE", f"/workspaces/{team.workspace_id}/members/{eve.id}", ann)
    await post(api, team, general, ann, "@channel last")

    async def views() -> list:
        out = []
        for user in team.people.values():
            out.append((await api.get(f"{API}/notifications", headers=at(user, team.position))).json())
            out.append(
                (
                    await api.get(f"{API}/workspaces/{team.workspace_id}/channels", headers=at(user, team.position))
                ).json()
            )
            out.append((await api.get(f"{API}/me/notification-settings", headers=at(user, team.position))).json())
        return out

    before = await views()
    assert any(item["mention_count"] for view in before[1::3] if "items" in view for item in view["items"])
    store = PostgresEventStore(pool, migrated_url)
    try:
        result = await rebuild(migrated_url, store, Notifications(), verify=True)
    finally:
        await store.close()
    assert result.had_live and result.identical, [d for d in result.diffs if d.differs]
    assert result.swapped and result.position >= team.position
    assert await views() == before
    after = await post(api, team, general, ann, f"<@{bob.id}> still live")
    assert (await notifications(api, team, bob))[0]["message_id"] == after["id"]
