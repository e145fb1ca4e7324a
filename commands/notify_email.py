"""Email for unread mentions and DMs (issue 6, item 6): once a person's unread ``mention`` or
``dm`` notification is their email delay old (default 10 minutes, ``PUT /me/email-notifications``),
everything of theirs that is due goes out in ONE email, and ``notifications.emailed {upto}`` is
appended to their stream, so the next email starts after it. Off when ``HUBBUB_SMTP_URL`` is unset.

Only what was pushed (not silenced by do-not-disturb or mute), is still unread, is at most
``MAX_AGE`` old (turning email on does not mail a backlog), and from a channel the person is in now.
One process sends (``infra/leader.py``'s advisory lock ``notify-email``, like the projections); it looks every
``every_s``. At-least-once: a crash between sending and recording sends that email again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from itertools import groupby

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from commands.shell import CommandShell, Context
from domain import notify as n
from domain.readstate import user_stream
from infra.aio import cancel_and_wait
from infra.leader import Backoff, lead
from infra.mail import Mailer
from projections.members import IN_CHANNEL_NOW

log = structlog.get_logger(__name__)

NAME = "notify-email"
EVERY_S = 15.0
MAX_AGE = "2 days"
PEOPLE_PER_ROUND = 100
SNIPPET = 200
_KINDS = "(" + ", ".join(f"'{k}'" for k in n.DIRECT) + ")"
_ELIGIBLE = f"""NOT n.read AND n.pushed AND n.kind IN {_KINDS} AND n.created_at > now() - interval '{MAX_AGE}'
    AND n.id > coalesce(p.emailed_upto, '')"""
# Per person with something due: every eligible notification up to the newest due one (so one
# that is a moment younger is not skipped by the high-water mark), with what the email shows.
_DUE = f"""
WITH due AS (
    SELECT n.user_id, max(n.id) AS upto FROM notifications n LEFT JOIN notify_users p ON p.user_id = n.user_id
    WHERE {_ELIGIBLE} AND coalesce(p.email_enabled, true)
      AND n.created_at <= now() - make_interval(secs => coalesce(p.email_delay_s, {n.DEFAULT_EMAIL_DELAY_S}))
    GROUP BY n.user_id ORDER BY n.user_id LIMIT {PEOPLE_PER_ROUND}
)
SELECT d.user_id, u.email, u.display_name, n.id, n.kind, n.created_at, coalesce(a.display_name, 'Someone'),
       c.name, m.text
FROM due d
JOIN users u ON u.user_id = d.user_id
JOIN notifications n ON n.user_id = d.user_id AND n.id <= d.upto
LEFT JOIN notify_users p ON p.user_id = d.user_id
JOIN channels c ON c.channel_id = n.channel_id
JOIN messages m ON m.message_id = n.message_id
LEFT JOIN users a ON a.user_id = m.author_id
WHERE {_ELIGIBLE} AND {IN_CHANNEL_NOW.format(user="d.user_id", channel="c.channel_id", workspace="c.workspace_id")}
ORDER BY d.user_id, n.id
"""


@dataclass(frozen=True)
class Due:
    user_id: str
    email: str
    name: str
    id: str
    kind: str
    created_at: dt.datetime
    author: str
    channel: str | None
    text: str


def compose(sender: str, items: Sequence[Due]) -> EmailMessage:
    """One email for one person's due notifications (oldest first)."""
    first = items[0]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = first.email
    count = len(items)
    message["Subject"] = f"Hubbub: {count} unread mention{'s' if count > 1 else ''} and direct messages"
    lines = [f"Hi {first.name},", "", "while you were away:", ""]
    for item in items:
        where = "in a direct message" if item.channel is None else f"in #{item.channel}"
        text = item.text if len(item.text) <= SNIPPET else item.text[:SNIPPET] + "…"
        lines.append(f"- {item.author} {where} ({item.created_at:%Y-%m-%d %H:%M} UTC): {text}")
    lines += [
        "",
        "Open Hubbub to reply. To stop these emails, turn them off in your notification settings",
        '(PUT /api/v1/me/email-notifications {"enabled": false}).',
    ]
    message.set_content("\n".join(lines))
    return message


class EmailNotifier:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        conninfo: str,
        shell: CommandShell,
        mailer: Mailer,
        every_s: float | None = None,
        lock_retry_s: float = 5.0,
    ) -> None:
        self.pool, self.conninfo, self.shell, self.mailer = pool, conninfo, shell, mailer
        self.every_s, self.lock_retry_s = every_s or EVERY_S, lock_retry_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-email")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def tick(self) -> int:
        """Send what is due now; the number of emails sent."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DUE)
            rows = [Due(*row) for row in await cur.fetchall()]
        sent = 0
        for user_id, group in groupby(rows, key=lambda d: d.user_id):
            items = list(group)
            try:
                await self.mailer.send([compose(self.mailer.sender, items)])
            except Exception as exc:  # noqa: BLE001 - the server may be down: the next round tries again
                log.warning("notify.email_failed", user_id=user_id, error=repr(exc))
                continue
            await self.shell.handle(
                n.NOTIFY,
                user_stream(user_id),
                n.RecordEmailed(items[-1].id, len(items)),
                Context(actor_id=None, now=dt.datetime.now(dt.UTC)),
            )
            log.info("notify.emailed", user_id=user_id, notifications=len(items))
            sent += 1
        return sent

    async def _run(self) -> None:
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await lead(conn, NAME, self.lock_retry_s)
                    while True:
                        await self.tick()
                        backoff.reset()
                        await asyncio.sleep(self.every_s)
            except Exception as exc:  # noqa: BLE001 - database trouble, or read models not there yet: try again later
                delay = backoff.next()
                log.warning("notify.email_round_failed", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def running(notifier: EmailNotifier) -> AsyncIterator[EmailNotifier]:
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()
