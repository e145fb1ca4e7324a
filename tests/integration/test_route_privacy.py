"""Every GET route of ``/api/v1``, asked by people who may not see a place: what names something
there is 404, what lists things lists nothing of it, and no answer carries its ids, texts or files
(issue 16, item 24).

The routes come from the app's own route table: a GET route that ``ROUTES`` does not know fails
here until someone says how to fill its parameters and what it must answer, so a new route is
covered from the day it is added.

Who asks (``Scene.callers``):
- ``left``: a member of the workspace who was in the private channel (chose a notification level
  there, was mentioned there) and was removed from it; never in the DM;
- ``guest``: a guest of the workspace, in and out of the private channel the same way, never in
  the public channel (guests see only the channels they are in);
- ``stranger``: the owner of another workspace.
What about (``Scene.places``): the private channel, the owner's DM with a member, and the public
channel (hidden from the guest and the stranger only). Each has a root message that mentions the
owner (and in the private channel the two who left), edited since, with a reply in its thread and
an image attached (so its thumbnails are asked for too), and the owner's notification level.

The owner sees every place, and each fill is asked as the owner too: a 404 for the others is then
never a typo in the table, and the listing routes that show channels show these places to the
owner, so a leak would show. Every query carries the latest position, and ``problem`` refuses an
answer marked stale: a 404 must mean "not yours", not "not projected yet".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import (
    API,
    STALE,
    Team,
    add_to_channel,
    at,
    create_channel,
    create_workspace,
    join_channel,
    join_workspace,
    open_dm,
    problem,
)
from tests.integration.test_files_api import jpeg, settings_for, upload
from tests.integration.test_notifications_api import command, post


@dataclass(frozen=True)
class Place:
    """A channel and what was said and shared in it."""

    channel_id: str
    name: str | None  # None for a DM
    root_id: str
    reply_id: str
    file_id: str
    words: tuple[str, str, str, str]
    """Found only in this place: the root's first text, the reply, the root's edited text, the file's name."""

    @property
    def secrets(self) -> set[str]:
        named = {self.name} if self.name else set()
        return {self.channel_id, self.root_id, self.reply_id, self.file_id, *self.words} | named


@dataclass(frozen=True)
class Caller:
    user: User
    home: str
    """The workspace they are in."""
    hidden: tuple[str, ...]
    """The places they may not see."""
    strangers: tuple[str, ...]
    """Ids of people who share no workspace with them."""


@dataclass
class Scene:
    team: Team
    callers: dict[str, Caller] = field(default_factory=dict)
    places: dict[str, Place] = field(default_factory=dict)
    everyone: list[User] = field(default_factory=list)

    def secrets(self, caller: Caller) -> set[str]:
        return set(caller.strangers).union(*(self.places[name].secrets for name in caller.hidden))


# -- the table --------------------------------------------------------------------------------------

Queries = Callable[[Scene, Place], list[dict[str, str]]]


def no_query(scene: Scene, place: Place) -> list[dict[str, str]]:
    return [{}]


@dataclass(frozen=True)
class Names:
    """The route names something of a place: 404 to whoever may not see it, 200 to the owner."""

    queries: Queries = no_query


@dataclass(frozen=True)
class Lists:
    """The route lists what the caller may see: 404 for a workspace they are not in; otherwise
    nothing of a place they may not see (what someone may list at all is other tests' business, so
    a refusal passes too). ``shows``: the owner's answer shows each place."""

    queries: Queries = no_query
    shows: bool = False


def search_queries(scene: Scene, place: Place) -> list[dict[str, str]]:
    """The channel filter by id and by name, and the words of the reply and of the edited root."""
    by_name = [{"q": f"in:#{place.name}"}] if place.name else []
    return [{"q": f"in:{place.channel_id}"}, *by_name, {"q": place.words[1]}, {"q": place.words[2]}]


def presence_queries(scene: Scene, place: Place) -> list[dict[str, str]]:
    """A page, and everyone by id (strangers included)."""
    return [{}, {"user_ids": ",".join(user.id for user in scene.everyone)}]


ROUTES: dict[str, Names | Lists] = {
    "/channels/{channel_id}": Names(),
    "/channels/{channel_id}/members": Names(),
    "/channels/{channel_id}/messages": Names(),
    "/messages/{message_id}": Names(),
    "/messages/{message_id}/thread": Names(),
    "/messages/{message_id}/versions": Names(),
    "/files/{file_id}": Names(),
    "/files/{file_id}/content": Names(),
    "/files/{file_id}/thumbnail": Names(lambda scene, place: [{}, {"size": "1024"}]),
    "/workspaces": Lists(),
    "/workspaces/{workspace_id}": Lists(),
    "/workspaces/{workspace_id}/channels": Lists(shows=True),
    "/workspaces/{workspace_id}/members": Lists(),
    "/workspaces/{workspace_id}/presence": Lists(presence_queries),
    "/workspaces/{workspace_id}/search": Lists(search_queries, shows=True),
    "/me": Lists(),
    "/me/sessions": Lists(),
    "/me/notification-settings": Lists(shows=True),
    "/notifications": Lists(shows=True),
}
"""Every GET route under /api/v1 (paths without the prefix and the parameters' types)."""

FILLS: dict[str, Callable[[Scene, Caller, Place], list[str]]] = {
    "channel_id": lambda scene, caller, place: [place.channel_id],
    "message_id": lambda scene, caller, place: [place.root_id, place.reply_id],
    "file_id": lambda scene, caller, place: [place.file_id],
    "workspace_id": lambda scene, caller, place: sorted({scene.team.workspace_id, caller.home}),
    "user_id": lambda scene, caller, place: list(caller.strangers),
}
"""How each path parameter is filled when ``caller`` asks about ``place``."""


def get_routes() -> list[str]:
    """The app's GET routes under /api/v1, as ``ROUTES`` writes them."""
    urls = {
        "database_url": "postgresql://127.0.0.1/unused",
        "nats_url": "nats://127.0.0.1:1",
        "redis_url": "redis://127.0.0.1:1",
    }
    app = create_app(load_settings({}, **urls))
    return sorted(
        {
            re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path.removeprefix(API))
            for route in app.routes
            if isinstance(route, HTTPRoute) and route.path.startswith(API + "/") and "GET" in route.methods
        }
    )


GET_ROUTES = get_routes()


def asks(
    route: str, queries: Queries, scene: Scene, caller: Caller, place: Place
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every (path, query) for ``caller`` asking ``route`` about ``place``."""
    names = re.findall(r"\{(\w+)\}", route)
    missing = [name for name in names if name not in FILLS]
    assert not missing, f"{route}: add to FILLS how to fill {missing}"
    for values in product(*(FILLS[name](scene, caller, place) for name in names)):
        path = route
        for name, value in zip(names, values, strict=True):
            path = path.replace("{" + name + "}", value)
        for query in queries(scene, place):
            yield API + path, query


# -- the scene --------------------------------------------------------------------------------------


def word() -> str:
    return f"zq{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="module")
async def api(service_urls: dict[str, str], migrated_url: str, blob_dir: Path) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(settings_for(service_urls, migrated_url, blob_dir))) as client:
        yield client


async def furnish(
    api: AsyncTestClient, team: Team, channel_id: str, name: str | None, author: User, mentioned: list[User]
) -> Place:
    """A root by ``author`` with an image, mentioning ``mentioned``, edited, with a reply by the owner."""
    words = (word(), word(), word(), word())
    image = await upload(
        api, author, team.workspace_id, jpeg(800, 600), name=f"{words[3]}.jpg", content_type="image/jpeg"
    )
    team.position = max(team.position, image["position"])
    mentions = " ".join(f"<@{user.id}>" for user in mentioned)
    root = await post(api, team, channel_id, author, f"{words[0]} {mentions}", file_ids=[image["id"]])
    reply = await post(api, team, channel_id, team.owner, words[1], thread_root_id=root["id"])
    await command(api, team, "PATCH", f"/messages/{root['id']}", author, {"text": f"{words[2]} {mentions}"})
    await command(api, team, "PUT", f"/channels/{channel_id}/notify", team.owner, {"level": "all"})
    return Place(channel_id, name, root["id"], reply["id"], image["id"], words)


@pytest.fixture(scope="module")
async def scene(api: AsyncTestClient) -> Scene:
    team = await create_workspace(api, await register(api, "Owner"), "Privacy")
    owner = team.owner
    mia, lou = await join_workspace(api, team, "Mia"), await join_workspace(api, team, "Lou")
    gus = await join_workspace(api, team, "Gus", role="guest")
    sid = await register(api, "Sid")
    elsewhere = await create_workspace(api, sid, "Elsewhere")

    hush = f"hush-{uuid.uuid4().hex[:6]}"
    private = await create_channel(api, team, owner, hush, private=True)
    await add_to_channel(api, team, private, owner, mia, lou, gus)
    dm = await open_dm(api, team, owner, mia)
    lobby = f"lobby-{uuid.uuid4().hex[:6]}"
    public = await create_channel(api, team, owner, lobby)
    await join_channel(api, team, public, mia)

    scene = Scene(team, everyone=[owner, mia, lou, gus, sid])
    scene.places = {
        "private": await furnish(api, team, private, hush, mia, [owner, lou, gus]),
        "dm": await furnish(api, team, dm, None, mia, [owner]),
        "public": await furnish(api, team, public, lobby, mia, [owner]),
    }
    for user in (lou, gus):  # what they leave behind in the private channel: a level, mentions
        await command(api, team, "PUT", f"/channels/{private}/notify", user, {"level": "all", "muted": True})
        await command(api, team, "DELETE", f"/channels/{private}/members/{user.id}", owner)
    ours = tuple(user.id for user in (owner, mia, lou, gus))
    scene.callers = {
        "left": Caller(lou, team.workspace_id, ("private", "dm"), (sid.id,)),
        "guest": Caller(gus, team.workspace_id, ("private", "dm", "public"), (sid.id,)),
        "stranger": Caller(sid, elsewhere.workspace_id, ("private", "dm", "public"), ours),
    }
    return scene


def visible(response: Any) -> str:
    """The text of a 200 answered by read models that were up to date."""
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    assert STALE not in response.headers, f"stale answer: {response.text[:500]}"
    return response.text


# -- the tests --------------------------------------------------------------------------------------


def test_the_table_names_only_routes_the_app_has() -> None:
    assert sorted(set(ROUTES) - set(GET_ROUTES)) == []


@pytest.mark.parametrize("route", GET_ROUTES)
async def test_no_get_route_shows_a_place_to_those_who_may_not_see_it(
    api: AsyncTestClient, scene: Scene, route: str
) -> None:
    entry = ROUTES.get(route)
    assert entry is not None, (
        f"GET {API}{route} is new: add it to ROUTES (Names or Lists) and say how its "
        "parameters are filled, so it is checked against people who may not see a place"
    )
    await owner_sees_every_place(api, scene, route, entry)
    for caller in scene.callers.values():
        if isinstance(entry, Names):
            await each_is_404(api, scene, route, entry, caller)
        else:
            await lists_no_secret(api, scene, route, entry, caller)


async def owner_sees_every_place(api: AsyncTestClient, scene: Scene, route: str, entry: Names | Lists) -> None:
    team = scene.team
    owner = Caller(team.owner, team.workspace_id, (), ())
    for name, place in scene.places.items():
        answers = [
            visible(await api.get(path, params=query, headers=at(team.owner, team.position)))
            for path, query in asks(route, entry.queries, scene, owner, place)
        ]
        if isinstance(entry, Lists) and entry.shows:
            assert all(place.channel_id in text for text in answers), f"the owner's {route} does not show {name}"


async def each_is_404(api: AsyncTestClient, scene: Scene, route: str, entry: Names, caller: Caller) -> None:
    for name in caller.hidden:
        for path, query in asks(route, entry.queries, scene, caller, scene.places[name]):
            problem(await api.get(path, params=query, headers=at(caller.user, scene.team.position)), 404)


async def lists_no_secret(api: AsyncTestClient, scene: Scene, route: str, entry: Lists, caller: Caller) -> None:
    secrets = scene.secrets(caller)
    asked = {
        (path, tuple(sorted(query.items())))
        for name in caller.hidden
        for path, query in asks(route, entry.queries, scene, caller, scene.places[name])
    }
    for path, query in sorted(asked):
        response = await api.get(path, params=dict(query), headers=at(caller.user, scene.team.position))
        if "{workspace_id}" in route and not path.startswith(f"{API}/workspaces/{caller.home}"):
            problem(response, 404)  # a workspace they are not in
        elif response.status_code in (403, 404):
            problem(response, response.status_code)
        else:
            leaked = sorted(secret for secret in secrets if secret in visible(response))
            assert not leaked, f"{path} {dict(query)} shows {caller.user.display_name} {leaked} of {caller.hidden}"
