"""A decider's ``fold`` must give exactly what ``evolve`` one event at a time gives."""

from __future__ import annotations

import datetime as dt
import functools

from hypothesis import given
from hypothesis import strategies as st

from domain import channel as ch
from domain import readstate as rs
from domain import workspace as ws

USERS = st.sampled_from(["u1", "u2", "u3", "u4"])
ROLES = st.sampled_from(["owner", "admin", "member", "guest"])
CODES = st.sampled_from(["c1", "c2", "c3"])
WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

channel_events = st.one_of(
    st.builds(
        ch.ChannelCreated,
        channel_id=st.just("ch"),
        workspace_id=st.just("ws"),
        name=st.just("room"),
        kind=st.just("channel"),
        private=st.booleans(),
        topic=st.just(""),
        created_by=USERS,
    ),
    st.builds(ch.ChannelRenamed, name=st.sampled_from(["a", "b"])),
    st.builds(ch.ChannelTopicSet, topic=st.sampled_from(["x", "y"])),
    st.builds(ch.ChannelArchived),
    st.builds(ch.ChannelMemberJoined, user_id=USERS),
    st.builds(ch.ChannelMemberLeft, user_id=USERS),
)
workspace_events = st.one_of(
    st.builds(ws.WorkspaceCreated, workspace_id=st.just("ws"), name=st.just("Acme"), owner_id=USERS),
    st.builds(ws.InviteCreated, code_hash=CODES, role=ROLES, expires_at=st.just(WHEN), created_by=USERS),
    st.builds(ws.MemberJoined, user_id=USERS, role=ROLES, via=st.just("invite"), code_hash=st.none() | CODES),
    st.builds(ws.RoleChanged, user_id=USERS, role=ROLES),
    st.builds(ws.MemberLeft, user_id=USERS),
)


@given(st.lists(channel_events, max_size=30), st.lists(channel_events, max_size=5))
def test_channel_fold_is_evolve_one_by_one(history, more) -> None:
    start = functools.reduce(ch.evolve, history, ch.Channel())
    assert ch.fold(start, more) == functools.reduce(ch.evolve, more, start)
    assert ch.fold(ch.Channel(), history) == start


@given(st.lists(workspace_events, max_size=30), st.lists(workspace_events, max_size=5))
def test_workspace_fold_is_evolve_one_by_one(history, more) -> None:
    start = functools.reduce(ws.evolve, history, ws.Workspace())
    assert ws.fold(start, more) == functools.reduce(ws.evolve, more, start)
    assert ws.fold(ws.Workspace(), history) == start


read_events = st.builds(rs.ReadMarkerMoved, channel_id=st.sampled_from(["c1", "c2", "c3"]), seq=st.integers(0, 50))


@given(st.lists(read_events, max_size=30), st.lists(read_events, max_size=5))
def test_read_state_fold_is_evolve_one_by_one(history, more) -> None:
    start = functools.reduce(rs.evolve, history, rs.ReadState())
    assert rs.fold(start, more) == functools.reduce(rs.evolve, more, start)
    assert rs.fold(rs.ReadState(), history) == start
