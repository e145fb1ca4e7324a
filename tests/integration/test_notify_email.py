"""Email for unread mentions and DMs (issue 6, item 6), against a real SMTP server (aiosmtpd):
after the person's delay, one email per person with everything due; nothing read, silenced
(DND, mute), disabled or already emailed; the app sends only with ``HUBBUB_SMTP_URL``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient

from commands import notify_email
from commands.notify_email import EmailNotifier
from commands.shell import CommandShell
from hubbub.app import create_app
from infra.embedded import free_port
from infra.eventstore.postgres import PostgresEventStore
from infra.mail import SmtpMailer
from infra.settings import load_settings
from tests.integration.test_notifications_api import command, open_dm, post, team_of


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, str]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}?from=hubbub@chat.example.com"
    finally:
        controller.stop()


@pytest.fixture
async def notifier(pool, migrated_url: str, smtp: tuple[Inbox, str]):
    store = PostgresEventStore(pool, migrated_url)
    yield EmailNotifier(
        pool=pool, conninfo=migrated_url, shell=CommandShell(store), mailer=SmtpMailer.from_url(smtp[1]), every_s=0.1
    )
    await store.close()


def items(message: EmailMessage) -> list[str]:
    return [line for line in message.get_content().splitlines() if line.startswith("- ")]


async def test_unread_mentions_and_dms_go_out_in_one_email_per_person_after_the_delay(
    api: AsyncTestClient, notifier: EmailNotifier, smtp: tuple[Inbox, str]
) -> None:
    inbox = smtp[0]
    team = await team_of(api, "Bob", "Cy")
    ann, bob = team.people["Ann"], team.people["Bob"]
    await command(api, team, "PUT", "/me/email-notifications", bob, {"enabled": True, "delay_s": 1})
    dm = await open_dm(api, team, ann, bob)
    await post(api, team, team.general_id, ann, f"<@{bob.id}> can you review?")
    await post(api, team, dm, ann, "psst")
    await post(api, team, team.general_id, ann, "@channel lunch")  # not a mention of Bob by name: no email
    read = await post(api, team, team.general_id, ann, f"<@{bob.id}> never mind")
    await post(api, team, dm, ann, "second dm")
    await command(api, team, "POST", f"/channels/{dm}/read", bob, {"seq": 1})  # read the first DM
    await command(api, team, "POST", f"/channels/{team.general_id}/read", bob, {"seq": read["seq"]})
    await api.get("/api/v1/notifications", headers={**bob.auth, "X-Hubbub-Position": str(team.position)})
    await notifier.tick()
    assert inbox.to(bob.email) == []  # not a second old yet
    await asyncio.sleep(1.1)
    await notifier.tick()
    [first] = inbox.to(bob.email)
    assert first["From"] == "hubbub@chat.example.com" and "1 unread mention" in first["Subject"]
    assert items(first) == [items(first)[0]] and "Ann in a direct message" in items(first)[0]
    assert "second dm" in items(first)[0]
    await notifier.tick()
    assert len(inbox.to(bob.email)) == 1  # nothing new: nothing sent again

    await post(api, team, dm, ann, "third")
    await post(api, team, team.general_id, ann, f"<@{bob.id}> and fourth")
    await api.get("/api/v1/notifications", headers={**bob.auth, "X-Hubbub-Position": str(team.position)})
    await asyncio.sleep(1.1)
    await notifier.tick()
    second = inbox.to(bob.email)[1]
    assert "2 unread mentions" in second["Subject"] and len(items(second)) == 2
    assert "third" in items(second)[0] and "in #general" in items(second)[1]


async def test_no_email_when_turned_off_silenced_or_already_read(
    api: AsyncTestClient, notifier: EmailNotifier, smtp: tuple[Inbox, str]
) -> None:
    inbox = smtp[0]
    team = await team_of(api, "Bob", "Cy", "Dee", "Eve")
    ann, bob, cy, dee, eve = (team.people[n] for n in ("Ann", "Bob", "Cy", "Dee", "Eve"))
    for user in (bob, cy, dee, eve):
        await command(api, team, "PUT", "/me/email-notifications", user, {"enabled": True, "delay_s": 0})
    await command(api, team, "PUT", "/me/email-notifications", bob, {"enabled": False})
    await command(api, team, "PUT", "/me/dnd", cy, {"until": "2999-01-01T00:00:00Z"})
    await command(api, team, "PUT", f"/channels/{team.general_id}/notify", dee, {"level": "all", "muted": True})
    await post(api, team, team.general_id, ann, f"<@{bob.id}> <@{cy.id}> <@{dee.id}> <@{eve.id}> hello")
    await command(api, team, "POST", "/notifications/read", eve, {"all": True})
    await api.get("/api/v1/notifications", headers={**eve.auth, "X-Hubbub-Position": str(team.position)})
    await notifier.tick()
    assert [inbox.to(u.email) for u in (bob, cy, dee, eve)] == [[], [], [], []]


async def test_the_app_sends_email_only_with_an_smtp_url(
    service_urls: dict[str, str], migrated_url: str, smtp: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, url = smtp
    monkeypatch.setattr(notify_email, "EVERY_S", 0.1)
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        smtp_url=url,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        team = await team_of(client, "Bob")
        ann, bob = team.people["Ann"], team.people["Bob"]
        await command(client, team, "PUT", "/me/email-notifications", bob, {"enabled": True, "delay_s": 0})
        await post(client, team, await open_dm(client, team, ann, bob), ann, "by email please")
        async with asyncio.timeout(10):
            while not inbox.to(bob.email):
                await asyncio.sleep(0.05)
    assert "by email please" in items(inbox.to(bob.email)[0])[0]
    assert SmtpMailer.from_url("smtps://u%40x:p%3Aw@mail.example.com").port == 465
