"""Notification preferences and notification read state: events on the user's own stream
``user-{id}`` (the stream that holds read markers), so every device of a user shares them.

Preferences: a level per channel (``all`` / ``mentions`` / ``nothing``) and mute, do-not-disturb
until a time, keywords, and whether (and after how long) unread mentions and DMs are emailed.
Read state: ``notifications.read`` (some ids, or all there are at that point of the log) and,
written by the email sender, ``notifications.emailed`` (the newest notification an email covered).
The notifications themselves are a read model (``projections/notifications.py``): these events,
the message and membership events are all it needs, so it can be rebuilt from the log.

Rules where the API is silent (``docs/notifications.md`` has the rest):
- keywords: at most 50, each 1 to 64 characters with at least one letter or digit; they match
  whole words, case-insensitively (``deploy`` matches "Deploy!" but not "deployed"); a keyword of
  several words matches those words in a row. Repeats (by that matching) are kept once.
- DND ``until`` must carry a time zone and lie in the future; ``null`` ends it.
- the email delay is 0 to 86,400 seconds (default 600).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, assert_never

from domain.decider import Decider
from domain.errors import DomainError
from domain.events import Event

Level = Literal["all", "mentions", "nothing"]
LEVELS: tuple[str, ...] = ("all", "mentions", "nothing")
MAX_KEYWORDS = 50
MAX_KEYWORD = 64
MAX_READ_IDS = 500
DEFAULT_EMAIL_DELAY_S = 600
MAX_EMAIL_DELAY_S = 86_400
_WORD = re.compile(r"\w+")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

KINDS: tuple[str, ...] = ("dm", "mention", "channel", "here", "thread_reply", "keyword", "message")
"""In order of precedence: a message notifies a person once, as the first kind that applies.
``message`` is every message of a channel whose level is ``all``."""
COUNTED: tuple[str, ...] = ("mention", "channel", "here", "dm", "keyword")
"""The kinds that the channel list's ``mention_count`` counts while unread."""
DIRECT: tuple[str, ...] = ("mention", "dm")
"""Addressed to the person: still recorded (silently) in a muted channel; the ones emailed."""


class ChannelNotifySet(Event, frozen=True, tag="notify.channel_set"):
    channel_id: str
    level: str
    muted: bool = False


class DndSet(Event, frozen=True, tag="notify.dnd_set"):
    until: dt.datetime | None


class KeywordsSet(Event, frozen=True, tag="notify.keywords_set"):
    keywords: list[str]


class EmailNotifySet(Event, frozen=True, tag="notify.email_set"):
    enabled: bool
    delay_s: int = DEFAULT_EMAIL_DELAY_S


class NotificationsRead(Event, frozen=True, tag="notifications.read"):
    """``ids`` of the user's notifications, or ``all`` of them that exist at this position."""

    ids: list[str] = []
    all: bool = False


class NotificationsEmailed(Event, frozen=True, tag="notifications.emailed"):
    """An email went out for the user's notifications up to ``upto`` (an id; ids sort in log order)."""

    upto: str
    count: int


@dataclass(frozen=True)
class SetChannelNotify:
    channel_id: str
    level: str
    muted: bool | None = None
    """None: keep the current mute."""


@dataclass(frozen=True)
class SetDnd:
    until: dt.datetime | None
    now: dt.datetime


@dataclass(frozen=True)
class SetKeywords:
    keywords: Sequence[str]


@dataclass(frozen=True)
class SetEmailNotify:
    enabled: bool
    delay_s: int | None = None
    """None: keep the current delay."""


@dataclass(frozen=True)
class MarkRead:
    ids: Sequence[str] = ()
    all: bool = False
    unread: bool = True
    """Whether any of these is unread, as the notifications read model says (the caller reads it
    first: ``check_read``, then the table); False: nothing would change, nothing is appended."""


@dataclass(frozen=True)
class RecordEmailed:
    upto: str
    count: int


NotifyCommand = SetChannelNotify | SetDnd | SetKeywords | SetEmailNotify | MarkRead | RecordEmailed


@dataclass(frozen=True)
class ChannelPref:
    level: str = "mentions"
    muted: bool = False


@dataclass(frozen=True)
class NotifyPrefs:
    channels: Mapping[str, ChannelPref] = field(default_factory=dict)
    dnd_until: dt.datetime | None = None
    keywords: tuple[str, ...] = ()
    email_enabled: bool = True
    email_delay_s: int = DEFAULT_EMAIL_DELAY_S
    emailed_upto: str = ""

    def channel(self, channel_id: str) -> ChannelPref:
        return self.channels.get(channel_id, ChannelPref())


def notification_id(position: int, user_id_hash: str) -> str:
    """A notification's id: the log position of its message (so ids sort in log order) and 12 hex
    digits of md5(user id), shaped like a UUID. Deterministic, so a rebuild gives the same ids
    and ``notifications.read`` events keep naming the right ones. The SQL that writes them builds
    the same string (``projections/notifications.py``)."""
    return id_prefix(position) + user_id_hash[:12]


def id_prefix(position: int) -> str:
    h = f"{position:020x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"


def words(text: str) -> list[str]:
    """The words of ``text`` as keywords are matched: runs of letters, digits and ``_``, case-folded."""
    return _WORD.findall(text.casefold())


def keyword_phrase(keyword: str) -> str:
    """A keyword as it is matched: its words, case-folded, one space apart."""
    return " ".join(words(keyword))


def check_keywords(keywords: Sequence[str]) -> list[str]:
    if len(keywords) > MAX_KEYWORDS:
        raise DomainError(f"at most {MAX_KEYWORDS} keywords, not {len(keywords):,}", field="keywords")
    kept: dict[str, str] = {}
    for raw in keywords:
        keyword = raw.strip()
        if not 1 <= len(keyword) <= MAX_KEYWORD:
            raise DomainError(f"each keyword must be 1 to {MAX_KEYWORD} characters", field="keywords")
        if not keyword.isprintable():
            raise DomainError("keywords must not contain control characters", field="keywords")
        phrase = keyword_phrase(keyword)
        if not phrase:
            raise DomainError(f"keyword {keyword!r} has no letter or digit to match", field="keywords")
        kept.setdefault(phrase, keyword)
    return list(kept.values())


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise DomainError(f"level must be one of {', '.join(LEVELS)}", field="level")
    return level


def decide(state: NotifyPrefs, command: NotifyCommand) -> Sequence[Event]:
    match command:
        case SetChannelNotify():
            return _channel(state, command)
        case SetDnd():
            return _dnd(state, command)
        case SetKeywords():
            keywords = check_keywords(command.keywords)
            return [] if tuple(keywords) == state.keywords else [KeywordsSet(keywords=keywords)]
        case SetEmailNotify():
            return _email(state, command)
        case MarkRead():
            return _read(command)
        case RecordEmailed():
            return (
                [NotificationsEmailed(upto=command.upto, count=command.count)]
                if command.upto > state.emailed_upto
                else []
            )
        case _:
            assert_never(command)


def _channel(state: NotifyPrefs, command: SetChannelNotify) -> Sequence[Event]:
    level = check_level(command.level)
    current = state.channel(command.channel_id)
    muted = current.muted if command.muted is None else command.muted
    if ChannelPref(level, muted) == current and command.channel_id in state.channels:
        return []
    return [ChannelNotifySet(channel_id=command.channel_id, level=level, muted=muted)]


def _dnd(state: NotifyPrefs, command: SetDnd) -> Sequence[Event]:
    until = command.until
    if until is not None:
        if until.tzinfo is None:
            raise DomainError("until needs a time zone, e.g. 2030-01-01T09:00:00Z", field="until")
        if until <= command.now:
            raise DomainError("until must be in the future; send null to end do-not-disturb", field="until")
        until = until.astimezone(dt.UTC)
    if until == state.dnd_until:
        return []
    return [DndSet(until=until)]


def _email(state: NotifyPrefs, command: SetEmailNotify) -> Sequence[Event]:
    delay = state.email_delay_s if command.delay_s is None else command.delay_s
    if not 0 <= delay <= MAX_EMAIL_DELAY_S:
        raise DomainError(f"delay_s must be between 0 and {MAX_EMAIL_DELAY_S:,} seconds", field="delay_s")
    if (command.enabled, delay) == (state.email_enabled, state.email_delay_s):
        return []
    return [EmailNotifySet(enabled=command.enabled, delay_s=delay)]


def _read(command: MarkRead) -> Sequence[Event]:
    check_read(command)
    if not command.unread:
        return []
    return [NotificationsRead(ids=list(dict.fromkeys(command.ids)), all=command.all)]


def check_read(command: MarkRead) -> MarkRead:
    if command.all == bool(command.ids):
        raise DomainError("send either ids (a non-empty list) or all: true", field="ids")
    if len(command.ids) > MAX_READ_IDS:
        raise DomainError(f"at most {MAX_READ_IDS} ids at a time; or send all: true", field="ids")
    if not all(_ID.fullmatch(i) for i in command.ids):
        raise DomainError("ids must be notification ids as GET /notifications lists them", field="ids")
    return command


def evolve(state: NotifyPrefs, event: Event) -> NotifyPrefs:
    match event:
        case ChannelNotifySet():
            return replace(state, channels={**state.channels, event.channel_id: ChannelPref(event.level, event.muted)})
        case DndSet():
            return replace(state, dnd_until=event.until)
        case KeywordsSet():
            return replace(state, keywords=tuple(event.keywords))
        case EmailNotifySet():
            return replace(state, email_enabled=event.enabled, email_delay_s=event.delay_s)
        case NotificationsEmailed():
            return replace(state, emailed_upto=max(state.emailed_upto, event.upto))
    return state


NOTIFY: Decider[NotifyPrefs, NotifyCommand] = Decider("notify", NotifyPrefs(), evolve, decide)
