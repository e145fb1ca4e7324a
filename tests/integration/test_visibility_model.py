"""What each user may list and read, against a model small enough to check by eye (issue 3).

A hypothesis state machine drives the real app over HTTP: people register, make workspaces,
invite each other as members or guests, change roles, make public and private channels, join,
leave, add and remove people, remove people from workspaces, open DMs and group DMs, post and
reply. Every command's status is the one the model predicts (API.md: 404 for what you may not
see, 403 for what you see but may not do, 409/422 for the named rules). After every step, for
every user, the API must show exactly what ``Model`` says they may see: the channel list (ids and
``member``), each visible channel's history and members, each root's thread, the people of each
workspace (member and presence lists: a guest sees only some); and every channel the model hides
is 404 on the channel, its messages and its members, every message in it 404 on itself and its
thread.

The model is the rules of docs/design/messaging-core.md written out plainly, on labels (``u0``,
``w0``, ``w0#c1``, ``m3``) so a failing run prints a story a person can read. One thing it states
that the design page leaves to ``domain/channel.py``: leaving a workspace keeps one's channel
memberships on record (they count again if the person is invited back), but without a workspace
role nothing of that workspace is visible.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from litestar.testing import AsyncTestClient
from litestar.testing import transport as litestar_transport

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration.conftest import User

API = "/api/v1"
RANK = {"guest": 0, "member": 1, "admin": 2, "owner": 3}
ROLES = tuple(RANK)
MAX_USERS, MAX_WORKSPACES, MAX_CHANNELS, MAX_DMS, MAX_MESSAGES = 5, 2, 6, 3, 8
OK = (200, 201)

# HUBBUB_EXPLORE=1 searches afresh with more examples (to hunt for bugs); the default run replays
# the same derandomized examples every time, so the suite's time and verdict do not wander.
EXPLORE = os.environ.get("HUBBUB_EXPLORE") == "1"
SETTINGS = settings(
    max_examples=200 if EXPLORE else 15,
    stateful_step_count=25 if EXPLORE else 14,
    derandomize=not EXPLORE,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


# -- the model --------------------------------------------------------------------------------


@dataclass
class Conversation:
    workspace: str
    kind: str
    """``channel``, ``dm`` or ``group``"""
    private: bool
    created_by: str
    general: bool = False
    members: set[str] = field(default_factory=set)
    """Everyone added and not removed, even after they left the workspace."""


@dataclass(frozen=True)
class Message:
    channel: str
    root: str | None


@dataclass
class Model:
    roles: dict[str, dict[str, str]] = field(default_factory=dict)
    """workspace -> user -> role; a user without a role is not in the workspace."""
    channels: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    """in the order they were posted"""
    dms: dict[tuple[str, frozenset[str]], str] = field(default_factory=dict)

    def role(self, workspace: str, user: str) -> str | None:
        return self.roles[workspace].get(user)

    def sees(self, user: str, channel: str) -> bool:
        """In the workspace, and either in the channel or (not a guest) it is public."""
        c = self.channels[channel]
        role = self.role(c.workspace, user)
        if role is None:
            return False
        return user in c.members or (not c.private and role != "guest")

    def visible(self, user: str, workspace: str) -> dict[str, bool]:
        """The channels of ``workspace`` that ``user`` sees -> whether they are a member."""
        return {
            c: user in conv.members
            for c, conv in self.channels.items()
            if conv.workspace == workspace and self.sees(user, c)
        }

    def history(self, channel: str) -> list[str]:
        """Top-level messages, newest first; replies stay in their threads."""
        return [m for m, msg in self.messages.items() if msg.channel == channel and msg.root is None][::-1]

    def thread(self, root: str) -> list[str]:
        return [m for m, msg in self.messages.items() if msg.root == root]

    def listed_members(self, channel: str) -> set[str]:
        c = self.channels[channel]
        return {u for u in c.members if self.role(c.workspace, u) is not None}

    def people(self, workspace: str, user: str) -> set[str]:
        """Whom ``user`` sees in the workspace: everyone, or for a guest themselves, the owners and
        admins, and the people they share a conversation with (issue 16 item 21)."""
        roles = self.roles[workspace]
        if roles.get(user) != "guest":
            return set(roles) if user in roles else set()
        shared = {
            u for c in self.channels.values() if c.workspace == workspace and user in c.members for u in c.members
        }
        return {u for u, r in roles.items() if u == user or r in ("owner", "admin") or u in shared}

    def hidden_from(self, workspace: str, actor: str, people: set[str]) -> bool:
        """Whether any of ``people`` is a stranger to ``actor`` (not in the workspace, or not seen by a guest)."""
        return any(self.role(workspace, u) is None for u in people) or not people <= self.people(workspace, actor)

    def owners(self, workspace: str) -> list[str]:
        return [u for u, r in self.roles[workspace].items() if r == "owner"]

    # What each command should answer: the first rule that refuses it, else success.

    def invite(self, workspace: str, actor: str) -> int:
        role = self.role(workspace, actor)
        return 404 if role is None else 403 if RANK[role] < RANK["admin"] else 201

    def change_role(self, workspace: str, actor: str, target: str, new: str) -> int:
        mine, theirs = self.role(workspace, actor), self.role(workspace, target)
        if mine is None or theirs is None:
            return 404
        if theirs == new:
            return 200
        admin_below = mine == "admin" and RANK[theirs] < RANK["admin"] and RANK[new] < RANK["admin"]
        if not (mine == "owner" or admin_below):
            return 403
        return 409 if self.owners(workspace) == [target] else 200

    def remove_from_workspace(self, workspace: str, actor: str, target: str) -> int:
        mine, theirs = self.role(workspace, actor), self.role(workspace, target)
        if mine is None or theirs is None:
            return 404
        allowed = actor == target or mine == "owner" or (mine == "admin" and RANK[theirs] < RANK["admin"])
        if not allowed:
            return 403
        return 409 if self.owners(workspace) == [target] else 200

    def create_channel(self, workspace: str, actor: str) -> int:
        role = self.role(workspace, actor)
        return 404 if role is None else 403 if role == "guest" else 201

    def join(self, channel: str, actor: str) -> int:
        return 200 if self.sees(actor, channel) else 404

    def leave(self, channel: str, actor: str) -> int:
        c = self.channels[channel]
        if not self.sees(actor, channel):
            return 404
        return 422 if c.kind != "channel" else 409 if c.general else 200

    def add(self, channel: str, actor: str, target: str) -> int:
        c = self.channels[channel]
        if not self.sees(actor, channel):
            return 404
        if c.kind != "channel":
            return 422
        admin = RANK[self.role(c.workspace, actor) or "guest"] >= RANK["admin"]
        if not (actor in c.members or (admin and not c.private)):
            return 403
        return 404 if self.hidden_from(c.workspace, actor, {target}) else 200

    def remove(self, channel: str, actor: str, target: str) -> int:
        if actor == target:
            return self.leave(channel, actor)
        c = self.channels[channel]
        if not self.sees(actor, channel):
            return 404
        if c.kind != "channel":
            return 422
        admin = RANK[self.role(c.workspace, actor) or "guest"] >= RANK["admin"]
        if not (admin or (c.created_by == actor and actor in c.members)):
            return 403
        return 409 if c.general else 404 if target not in c.members else 200

    def open_dm(self, workspace: str, actor: str, others: set[str]) -> int:
        if self.role(workspace, actor) is None:
            return 404
        if not others - {actor}:
            return 422
        return 404 if self.hidden_from(workspace, actor, others) else 200

    def post(self, channel: str, actor: str) -> int:
        if not self.sees(actor, channel):
            return 404
        return 201 if actor in self.channels[channel].members else 403


# -- the machine ------------------------------------------------------------------------------


class VisibilityMachine(RuleBasedStateMachine):
    """Steps are plain synchronous methods over ``http`` (see the test at the end for why);
    the invariant's many queries go out together on ``pool``'s threads."""

    def __init__(self, http: httpx.Client, pool: ThreadPoolExecutor) -> None:
        super().__init__()
        self.http, self.pool = http, pool
        self.model = Model()
        self.users: dict[str, User] = {}
        self.ids: dict[str, str] = {}
        """label -> the API's id, for workspaces, channels and messages"""
        self.position = 0
        self.names = 0

    # -- HTTP ---------------------------------------------------------------------------------

    def command(self, expected: int, method: str, path: str, user: str, body: Any = None) -> Any:
        """Send a command as ``user``; it must answer ``expected`` (200 and 201 both count as done).
        Its JSON body when done, else None."""
        response = self.http.request(method, f"{API}{path}", json=body, headers=self.users[user].auth)
        if "X-Hubbub-Position" in response.headers:
            self.position = max(self.position, int(response.headers["X-Hubbub-Position"]))
        want = OK if expected in OK else (expected,)
        assert response.status_code in want, (
            f"{method} {path} as {user}: the model says {expected}, the API says {response.status_code} {response.text}"
        )
        return response.json() if response.status_code in OK else None

    def query(self, path: str, user: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """GET as ``user``, after every command so far (read-your-writes)."""
        headers = {**self.users[user].auth, "X-Hubbub-Position": str(self.position)}
        return self.http.get(f"{API}{path}", headers=headers, params=params)

    # -- choosing -----------------------------------------------------------------------------

    def pick(self, data: st.DataObject, label: str, options: Any, likely: Any = ()) -> str:
        """One of ``options``, most often one of ``likely`` (the ones that make the step succeed),
        so refusals and successes both come up in a short run."""
        likely, options = sorted(likely), sorted(options)
        strategy = st.sampled_from(options)
        if likely:
            strategy = st.one_of(st.sampled_from(likely), st.sampled_from(likely), strategy)
        return data.draw(strategy, label=label)

    def in_workspace(self, workspace: str, *, at_least: str = "guest") -> list[str]:
        return [u for u, r in self.model.roles[workspace].items() if RANK[r] >= RANK[at_least]]

    # -- rules --------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        """u0 owns w0, u1 is a member, u2 a guest, u3 is in no workspace; u1 made the public w0#c1,
        u0 the private w0#c2 and added the guest to it. The rules take it from there (hypothesis
        leaves some rules out of each example, so a short run needs a scene to start from)."""
        for _ in range(4):
            self.register()
        self.create_workspace_as("u0")
        for user, role in (("u1", "member"), ("u2", "guest")):
            self.invite_as("w0", "u0", user, role)
        self.create_channel_as("w0", "u1", private=False)
        self.create_channel_as("w0", "u0", private=True)
        self.add_as("w0#c2", "u0", "u2")

    @precondition(lambda self: len(self.users) < MAX_USERS)
    @rule()
    def register(self) -> None:
        label = f"u{len(self.users)}"
        email = f"{label}-{uuid.uuid4().hex[:8]}@example.com"
        response = self.http.post(
            f"{API}/auth/register", json={"email": email, "password": "correct horse battery", "display_name": label}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.users[label] = User(body["user"]["id"], email, body["token"], label)

    @precondition(lambda self: len(self.model.roles) < MAX_WORKSPACES)
    @rule(data=st.data())
    def create_workspace(self, data: st.DataObject) -> None:
        self.create_workspace_as(self.pick(data, "owner", self.users))

    def create_workspace_as(self, owner: str) -> None:
        label = f"w{len(self.model.roles)}"
        body = self.command(201, "POST", "/workspaces", owner, {"name": label})
        general = f"{label}#general"
        self.ids |= {label: body["id"], general: body["general_channel_id"]}
        self.model.roles[label] = {owner: "owner"}
        self.model.channels[general] = Conversation(label, "channel", False, owner, general=True, members={owner})

    @rule(data=st.data(), role=st.sampled_from(("member", "guest")))
    def invite(self, data: st.DataObject, role: str) -> None:
        workspace = self.pick(data, "workspace", self.model.roles)
        actor = self.pick(data, "inviter", self.users, self.in_workspace(workspace, at_least="admin"))
        invitee = self.pick(data, "invitee", self.users, set(self.users) - set(self.model.roles[workspace]))
        self.invite_as(workspace, actor, invitee, role)

    def invite_as(self, workspace: str, actor: str, invitee: str, role: str) -> None:
        expected = self.model.invite(workspace, actor)
        made = self.command(expected, "POST", f"/workspaces/{self.ids[workspace]}/invites", actor, {"role": role})
        if made is None:
            return
        self.command(200, "POST", f"/invites/{made['code']}/accept", invitee)
        roles = self.model.roles[workspace]
        if invitee in roles:
            return  # already in: accepting changes nothing
        roles[invitee] = role
        if role != "guest":  # members join #general with the invite; guests see only what they are added to
            self.model.channels[f"{workspace}#general"].members.add(invitee)

    @rule(data=st.data(), new=st.sampled_from(ROLES))
    def change_role(self, data: st.DataObject, new: str) -> None:
        workspace = self.pick(data, "workspace", self.model.roles)
        actor = self.pick(data, "actor", self.users, self.in_workspace(workspace, at_least="admin"))
        target = self.pick(data, "target", self.users, self.in_workspace(workspace))
        expected = self.model.change_role(workspace, actor, target, new)
        path = f"/workspaces/{self.ids[workspace]}/members/{self.users[target].id}"
        if self.command(expected, "PATCH", path, actor, {"role": new}) is not None:
            self.model.roles[workspace][target] = new

    @rule(data=st.data())
    def remove_from_workspace(self, data: st.DataObject) -> None:
        """An admin removes someone, or (actor == target) someone leaves."""
        workspace = self.pick(data, "workspace", self.model.roles)
        actor = self.pick(data, "actor", self.users, self.in_workspace(workspace))
        target = self.pick(data, "target", self.users, self.in_workspace(workspace))
        expected = self.model.remove_from_workspace(workspace, actor, target)
        path = f"/workspaces/{self.ids[workspace]}/members/{self.users[target].id}"
        if self.command(expected, "DELETE", path, actor) is not None:
            del self.model.roles[workspace][target]

    @precondition(lambda self: sum(c.kind == "channel" for c in self.model.channels.values()) < MAX_CHANNELS)
    @rule(data=st.data(), private=st.booleans())
    def create_channel(self, data: st.DataObject, private: bool) -> None:
        workspace = self.pick(data, "workspace", self.model.roles)
        actor = self.pick(data, "creator", self.users, self.in_workspace(workspace, at_least="member"))
        self.create_channel_as(workspace, actor, private)

    def create_channel_as(self, workspace: str, actor: str, private: bool) -> None:
        self.names += 1
        name = f"c{self.names}"
        body = self.command(
            self.model.create_channel(workspace, actor),
            "POST",
            f"/workspaces/{self.ids[workspace]}/channels",
            actor,
            {"name": name, "private": private},
        )
        if body is not None:
            label = f"{workspace}#{name}"
            self.ids[label] = body["id"]
            self.model.channels[label] = Conversation(workspace, "channel", private, actor, members={actor})

    def pick_channel(self, data: st.DataObject, kinds: tuple[str, ...] = ("channel", "dm", "group")) -> str:
        """Any conversation, most often one of the given kinds other than #general (whose rules are few)."""
        likely = [c for c, conv in self.model.channels.items() if conv.kind in kinds and not conv.general]
        return self.pick(data, "channel", self.model.channels, likely)

    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        channel = self.pick_channel(data, ("channel",))
        actor = self.pick(data, "actor", self.users, self.in_workspace(self.model.channels[channel].workspace))
        if self.command(self.model.join(channel, actor), "POST", f"/channels/{self.ids[channel]}/join", actor):
            self.model.channels[channel].members.add(actor)

    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        channel = self.pick_channel(data)
        actor = self.pick(data, "actor", self.users, self.model.channels[channel].members)
        if self.command(self.model.leave(channel, actor), "POST", f"/channels/{self.ids[channel]}/leave", actor):
            self.model.channels[channel].members.discard(actor)

    @rule(data=st.data())
    def add_member(self, data: st.DataObject) -> None:
        channel = self.pick_channel(data)
        conv = self.model.channels[channel]
        actor = self.pick(data, "actor", self.users, conv.members)
        target = self.pick(data, "target", self.users, set(self.in_workspace(conv.workspace)) - conv.members)
        self.add_as(channel, actor, target)

    def add_as(self, channel: str, actor: str, target: str) -> None:
        body = {"user_ids": [self.users[target].id]}
        if self.command(
            self.model.add(channel, actor, target), "POST", f"/channels/{self.ids[channel]}/members", actor, body
        ):
            self.model.channels[channel].members.add(target)

    @rule(data=st.data())
    def remove_member(self, data: st.DataObject) -> None:
        channel = self.pick_channel(data)
        conv = self.model.channels[channel]
        actor = self.pick(
            data, "actor", self.users, {conv.created_by} | set(self.in_workspace(conv.workspace, at_least="admin"))
        )
        target = self.pick(data, "target", self.users, conv.members)
        path = f"/channels/{self.ids[channel]}/members/{self.users[target].id}"
        if self.command(self.model.remove(channel, actor, target), "DELETE", path, actor):
            conv.members.discard(target)

    @precondition(lambda self: len(self.model.dms) < MAX_DMS)
    @rule(data=st.data(), size=st.integers(1, 3))
    def open_dm(self, data: st.DataObject, size: int) -> None:
        workspace = self.pick(data, "workspace", self.model.roles)
        people = self.in_workspace(workspace)
        actor = self.pick(data, "actor", self.users, people)
        others = {self.pick(data, "with", self.users, set(people) - {actor}) for _ in range(size)}
        body = self.command(
            self.model.open_dm(workspace, actor, others),
            "POST",
            f"/workspaces/{self.ids[workspace]}/dms",
            actor,
            {"user_ids": [self.users[u].id for u in sorted(others)]},
        )
        if body is None:
            return
        everyone = frozenset(others | {actor})
        label = self.model.dms.get((workspace, everyone))
        if label is not None:
            assert body["id"] == self.ids[label], f"the same people got another conversation than {label}"
            return
        label = f"{workspace}#dm({','.join(sorted(everyone))})"
        assert body["id"] not in self.ids.values(), f"{label} got the id of another conversation"
        self.ids[label] = body["id"]
        self.model.dms[(workspace, everyone)] = label
        kind = "dm" if len(everyone) == 2 else "group"
        self.model.channels[label] = Conversation(workspace, kind, True, actor, members=set(everyone))

    @precondition(lambda self: len(self.model.messages) < MAX_MESSAGES)
    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        channel = self.pick_channel(data)
        actor = self.pick(data, "author", self.users, self.model.channels[channel].members)
        self.post_as(channel, actor, None)

    @precondition(
        lambda self: (
            len(self.model.messages) < MAX_MESSAGES and any(m.root is None for m in self.model.messages.values())
        )
    )
    @rule(data=st.data())
    def reply(self, data: st.DataObject) -> None:
        root = self.pick(data, "root", [m for m, msg in self.model.messages.items() if msg.root is None])
        channel = self.model.messages[root].channel
        actor = self.pick(data, "author", self.users, self.model.channels[channel].members)
        self.post_as(channel, actor, root)

    def post_as(self, channel: str, actor: str, root: str | None) -> None:
        label = f"m{len(self.model.messages)}"
        body: dict[str, Any] = {"text": f"{label} by {actor}"}
        if root is not None:
            body["thread_root_id"] = self.ids[root]
        posted = self.command(
            self.model.post(channel, actor), "POST", f"/channels/{self.ids[channel]}/messages", actor, body
        )
        if posted is not None:
            self.ids[label] = posted["id"]
            self.model.messages[label] = Message(channel, root)

    # -- the invariant ------------------------------------------------------------------------

    @invariant()
    def everyone_sees_what_the_model_says(self) -> None:
        checks = [(self.check_list, u, w) for u in self.users for w in self.model.roles]
        checks += [(self.check_channel, u, c) for u in self.users for c in self.model.channels]
        differences = [d for found in self.pool.map(lambda check: check[0](*check[1:]), checks) for d in found]
        assert not differences, "the API and the model disagree:\n" + "\n".join(differences)

    def labels(self, ids: Any) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()} | {u.id: label for label, u in self.users.items()}
        return [by_id.get(i, i) for i in ids]

    def check_list(self, user: str, workspace: str) -> list[str]:
        response = self.query(f"/workspaces/{self.ids[workspace]}/channels", user, {"limit": 200})
        if self.model.role(workspace, user) is None:
            return [] if response.status_code == 404 else [f"{user} lists {workspace}: {response.status_code}, not 404"]
        if response.status_code != 200:
            return [f"{user} lists {workspace}: {response.status_code} {response.text}"]
        got = {self.labels([i["id"]])[0]: i["member"] for i in response.json()["items"]}
        want = self.model.visible(user, workspace)
        differences = (
            []
            if got == want
            else [f"{user} lists {workspace}: API {sorted(got.items())}, model {sorted(want.items())}"]
        )
        return differences + self.check_people(user, workspace)

    def check_people(self, user: str, workspace: str) -> list[str]:
        """The workspace's member list and presence list show the people the model says."""
        want, differences = self.model.people(workspace, user), []
        for what in ("members", "presence"):
            response = self.query(f"/workspaces/{self.ids[workspace]}/{what}", user, {"limit": 200})
            got = (
                set(self.labels(i["user_id"] for i in response.json()["items"]))
                if response.status_code == 200
                else None
            )
            if got != want:
                differences.append(
                    f"{user} lists {workspace}'s {what}: API {response.status_code} "
                    f"{sorted(got or ())}, model {sorted(want)}"
                )
        return differences

    def check_channel(self, user: str, channel: str) -> list[str]:
        if self.model.sees(user, channel):
            return self.check_visible(user, channel)
        cid = self.ids[channel]
        paths = [f"/channels/{cid}", f"/channels/{cid}/messages", f"/channels/{cid}/members"]
        for m, msg in self.model.messages.items():
            if msg.channel == channel:
                paths += [f"/messages/{self.ids[m]}", f"/messages/{self.ids[m]}/thread"]
        answers = [self.query(p, user) for p in paths]
        return [
            f"{user} reads hidden {channel} at {p}: {r.status_code}, not 404"
            for p, r in zip(paths, answers)
            if r.status_code != 404
        ]

    def check_visible(self, user: str, channel: str) -> list[str]:
        cid = self.ids[channel]
        # GET /channels/{ch} itself is left out: the list already showed this channel as it.
        history = self.query(f"/channels/{cid}/messages", user, {"limit": 200})
        members = self.query(f"/channels/{cid}/members", user, {"limit": 200})
        if not history.status_code == members.status_code == 200:
            return [f"{user} reads visible {channel}: {history.status_code}/{members.status_code}"]
        differences = []
        got, want = self.labels(m["id"] for m in history.json()["items"]), self.model.history(channel)
        if got != want:
            differences.append(f"{user} reads {channel}'s history: API {got}, model {want}")
        listed = set(self.labels(m["user_id"] for m in members.json()["items"]))
        if listed != self.model.listed_members(channel):
            differences.append(
                f"{user} lists {channel}'s members: API {sorted(listed)}, "
                f"model {sorted(self.model.listed_members(channel))}"
            )
        for root in (m for m in want if self.model.thread(m)):
            thread = self.query(f"/messages/{self.ids[root]}/thread", user)
            replies = self.labels(m["id"] for m in thread.json()["replies"]) if thread.status_code == 200 else []
            if replies != self.model.thread(root):
                differences.append(
                    f"{user} reads {root}'s thread: {thread.status_code} {replies}, model {self.model.thread(root)}"
                )
        return differences


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def api(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[AsyncTestClient]:
    """The app with a posting limit no state machine reaches (rate limits have tests of their own)."""
    settings_ = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_post_per_s=1000.0,
        rate_post_burst=1000,
        db_pool_max=20,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
    )
    async with AsyncTestClient(create_app(settings_)) as client:
        yield client


class PortalTransport(httpx.BaseTransport):
    """Synchronous httpx over the test client's portal (Litestar's transport is no ``BaseTransport``)."""

    def __init__(self, api: AsyncTestClient) -> None:
        self.inner = litestar_transport.TestClientTransport(client=api, raise_server_exceptions=True)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)


async def test_what_each_user_sees_is_what_the_model_says(api: AsyncTestClient) -> None:
    # Hypothesis' state machines are synchronous. Litestar's test client already runs the app (its
    # lifespan, pools, projectors) on an event loop of its own, in a blocking-portal thread, and
    # hands each request to it with a blocking ``portal.call``, which any thread may make. So the
    # machine speaks plain synchronous httpx through a transport over that same portal: no second
    # app, no second event loop, nothing awaited across loops. It runs in a worker thread
    # (``to_thread``) so this test's loop is not blocked for the whole run, and the invariant's
    # queries go out from a few threads at once, which the app's loop serves concurrently.
    with (
        httpx.Client(transport=PortalTransport(api), base_url=api.base_url, timeout=60) as http,
        ThreadPoolExecutor(max_workers=8, thread_name_prefix="visibility") as pool,
    ):
        await asyncio.to_thread(run_state_machine_as_test, lambda: VisibilityMachine(http, pool), settings=SETTINGS)
