"""The notification preferences decider (``domain/notify.py``): given(events).when(command).then(events);
keyword normalisation and the notification id."""

from __future__ import annotations

import datetime as dt
import hashlib

from domain.errors import DomainError
from domain.mentions import says_here
from domain.message import MESSAGE, Message, MessagePosted, Post
from domain.notify import (
    MAX_KEYWORDS,
    NOTIFY,
    ChannelNotifySet,
    DndSet,
    EmailNotifySet,
    KeywordsSet,
    MarkRead,
    NotificationsEmailed,
    NotificationsRead,
    RecordEmailed,
    SetChannelNotify,
    SetDnd,
    SetEmailNotify,
    SetKeywords,
    keyword_phrase,
    notification_id,
    words,
)
from tests.unit.given import given

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ID = "00000000-0000-0000-0000-0000000000ab"


def test_a_channel_level_is_set_and_mute_kept_when_left_out() -> None:
    given(NOTIFY).when(SetChannelNotify("c1", "all")).then(ChannelNotifySet(channel_id="c1", level="all", muted=False))
    muted = ChannelNotifySet(channel_id="c1", level="mentions", muted=True)
    given(NOTIFY, muted).when(SetChannelNotify("c1", "nothing")).then(
        ChannelNotifySet(channel_id="c1", level="nothing", muted=True)
    )
    given(NOTIFY, muted).when(SetChannelNotify("c1", "mentions", True)).then()
    given(NOTIFY).when(SetChannelNotify("c1", "loud")).then_rejects(DomainError, field="level")


def test_dnd_needs_a_future_time_with_a_zone_and_null_ends_it() -> None:
    until = NOW + dt.timedelta(hours=1)
    given(NOTIFY).when(SetDnd(until, NOW)).then(DndSet(until=until))
    given(NOTIFY, DndSet(until=until)).when(SetDnd(until, NOW)).then()
    given(NOTIFY, DndSet(until=until)).when(SetDnd(None, NOW)).then(DndSet(until=None))
    given(NOTIFY).when(SetDnd(None, NOW)).then()
    given(NOTIFY).when(SetDnd(NOW - dt.timedelta(seconds=1), NOW)).then_rejects(DomainError, field="until")
    given(NOTIFY).when(SetDnd(until.replace(tzinfo=None), NOW)).then_rejects(DomainError, field="until")
    paris = dt.timezone(dt.timedelta(hours=1))
    given(NOTIFY).when(SetDnd(until.astimezone(paris), NOW)).then(DndSet(until=until))


def test_keywords_are_trimmed_deduplicated_by_their_words_and_bounded() -> None:
    given(NOTIFY).when(SetKeywords([" Deploy ", "deploy!", "Release Train", "release   train"])).then(
        KeywordsSet(keywords=["Deploy", "Release Train"])
    )
    given(NOTIFY, KeywordsSet(keywords=["deploy"])).when(SetKeywords(["deploy"])).then()
    given(NOTIFY).when(SetKeywords([])).then()
    given(NOTIFY, KeywordsSet(keywords=["deploy"])).when(SetKeywords([])).then(KeywordsSet(keywords=[]))
    for bad in (["x" * 65], [""], ["   "], ["!!!"], ["a\x00b"], [f"k{i}" for i in range(MAX_KEYWORDS + 1)]):
        given(NOTIFY).when(SetKeywords(bad)).then_rejects(DomainError, field="keywords")
    given(NOTIFY).when(SetKeywords([f"k{i}" for i in range(MAX_KEYWORDS)])).then(
        KeywordsSet(keywords=[f"k{i}" for i in range(MAX_KEYWORDS)])
    )


def test_keywords_match_whole_words_case_insensitively() -> None:
    assert words("Deploy! the DEPLOYED straße") == ["deploy", "the", "deployed", "strasse"]
    assert keyword_phrase("  Release   TRAIN ") == "release train"


def test_email_setting_bounds_its_delay_and_keeps_it_when_left_out() -> None:
    given(NOTIFY).when(SetEmailNotify(False)).then(EmailNotifySet(enabled=False, delay_s=600))
    given(NOTIFY).when(SetEmailNotify(True, 60)).then(EmailNotifySet(enabled=True, delay_s=60))
    given(NOTIFY).when(SetEmailNotify(True)).then()
    given(NOTIFY).when(SetEmailNotify(True, -1)).then_rejects(DomainError, field="delay_s")
    given(NOTIFY).when(SetEmailNotify(True, 86_401)).then_rejects(DomainError, field="delay_s")


def test_marking_read_takes_ids_or_all_but_not_both_nor_neither() -> None:
    given(NOTIFY).when(MarkRead((ID, ID))).then(NotificationsRead(ids=[ID], all=False))
    given(NOTIFY).when(MarkRead(all=True)).then(NotificationsRead(ids=[], all=True))
    given(NOTIFY).when(MarkRead()).then_rejects(DomainError, field="ids")
    given(NOTIFY).when(MarkRead((ID,), all=True)).then_rejects(DomainError, field="ids")
    given(NOTIFY).when(MarkRead(("not-an-id",))).then_rejects(DomainError, field="ids")
    given(NOTIFY).when(MarkRead((ID,) * 501)).then_rejects(DomainError, field="ids")


def test_marking_read_what_is_not_unread_records_nothing_but_is_still_checked() -> None:
    given(NOTIFY).when(MarkRead(all=True, unread=False)).then()
    given(NOTIFY).when(MarkRead((ID,), unread=False)).then()
    given(NOTIFY).when(MarkRead(("not-an-id",), unread=False)).then_rejects(DomainError, field="ids")


def test_an_email_is_recorded_once_per_high_water_mark() -> None:
    given(NOTIFY).when(RecordEmailed(ID, 2)).then(NotificationsEmailed(upto=ID, count=2))
    given(NOTIFY, NotificationsEmailed(upto=ID, count=2)).when(RecordEmailed(ID, 2)).then()


def test_notification_ids_sort_in_log_order_and_look_like_uuids() -> None:
    h = hashlib.md5(b"user").hexdigest()
    first, later = notification_id(9, h), notification_id(1_000_000, h)
    assert first < later and len(first) == 36 and first.count("-") == 4


def test_a_post_records_who_was_online_only_with_at_here() -> None:
    post = Post(
        message_id="m1",
        channel_id="c1",
        workspace_id="w1",
        author_id="ada",
        text="hi @here",
        workspace_members=frozenset({"ada", "bob"}),
        online_ids=frozenset({"bob", "cy"}),
    )
    [posted] = MESSAGE.decide(Message(), post)
    assert isinstance(posted, MessagePosted) and posted.mention_here and posted.here_user_ids == ["bob", "cy"]
    [plain] = MESSAGE.decide(Message(), Post(**{**{f: getattr(post, f) for f in post.__struct_fields__}, "text": "hi"}))
    assert plain.here_user_ids == []
    assert says_here("@here now") and not says_here("mail me@here.com") and not says_here("@heres")
