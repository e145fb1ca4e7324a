"""What every request is held to, whatever its route (docs/design/messaging-core.md, *Request
rules*): JSON bodies (nesting, content type), NUL characters in paths and queries, ``Allow`` on
``OPTIONS``, the request id the events keep, and time travel refused until it is built.

The routes come from the app's own route table, so a new route is covered without an entry here.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from hubbub import deps
from hubbub.app import API_PREFIX, create_app
from infra.settings import load_settings
from tests.integration import messaging_helpers as helpers
from tests.integration.conftest import User, register

PROBLEM = "application/problem+json"
DEEP = {"arrays": b"[" * 1000, "objects": b'{"a":' * 1000}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as the route table has it: /api/v1/channels/{channel_id:str}/messages
    json_body: bool
    query: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, **ids: str) -> str:
        return re.sub(r"\{(\w+):\w+\}", lambda m: ids[m.group(1)], self.path)


def route_table() -> list[Route]:
    """Every API route but Litestar's OPTIONS ones, read from an app that is built, never started."""
    settings = load_settings(
        {}, database_url="postgresql://unused/x", nats_url="nats://unused:4222", redis_url="redis://unused:6379/0"
    )
    return [
        Route(
            method, route.path, _takes_json(kwargs), tuple(sorted(p.field_alias for p in kwargs.expected_query_params))
        )
        for route in create_app(settings).routes
        if isinstance(route, HTTPRoute) and route.path.startswith(API_PREFIX)
        for method, (_, kwargs) in sorted(route.route_handler_map.items())
        if method != "OPTIONS"
    ]


def _takes_json(kwargs: Any) -> bool:
    return (
        "data" in kwargs.expected_reserved_kwargs and not kwargs.expected_form_data and not kwargs.expected_msgpack_data
    )


ROUTES = route_table()
JSON_ROUTES = [r for r in ROUTES if r.json_body]
QUERY_ROUTES = [r for r in ROUTES if r.query]
PATHS = sorted({r.path for r in ROUTES})


def test_the_route_table_is_what_these_tests_think_it_is() -> None:
    assert {
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/register",
        "POST /api/v1/channels/{channel_id:str}/messages",
        "PATCH /api/v1/messages/{message_id:str}",
        "PUT /api/v1/presence",
    } <= {str(r) for r in JSON_ROUTES}
    assert "POST /api/v1/workspaces/{workspace_id:str}/files" not in {str(r) for r in JSON_ROUTES}  # multipart
    assert "GET /api/v1/notifications" in {str(r) for r in QUERY_ROUTES}


def problem(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    return response.json()


@pytest.fixture(scope="module")
async def caller(api: AsyncTestClient) -> User:
    return await register(api, "Edge")


@pytest.fixture(scope="module")
async def ids(api: AsyncTestClient, caller: User) -> dict[str, str]:
    """Real ids for every kind of path parameter, so a request gets as far as the database."""
    team = await helpers.create_workspace(api, caller)
    posted = await api.post(
        f"{API_PREFIX}/channels/{team.general_id}/messages", json={"text": "hi"}, headers=caller.auth
    )
    uploaded = await api.post(
        f"{API_PREFIX}/workspaces/{team.workspace_id}/files", files={"file": ("a.txt", b"a")}, headers=caller.auth
    )
    assert posted.status_code == 201 and uploaded.status_code == 201, (posted.text, uploaded.text)
    return {
        "workspace_id": team.workspace_id,
        "channel_id": team.general_id,
        "message_id": posted.json()["id"],
        "file_id": uploaded.json()["id"],
        "user_id": caller.id,
        "session_id": str(uuid.uuid4()),
        "code": "no-such-invite",
        "emoji": "thumbsup",
    }


# -- JSON bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", DEEP)
@pytest.mark.parametrize("route", JSON_ROUTES, ids=str)
async def test_deeply_nested_json_is_a_400_on_every_json_route(
    api: AsyncTestClient, caller: User, ids: dict[str, str], route: Route, shape: str
) -> None:
    response = await api.request(
        route.method, route.url(**ids), content=DEEP[shape], headers=caller.auth | {"Content-Type": "application/json"}
    )
    body = problem(response, 400)
    assert body["title"] == "Malformed request body" and "nests" in body["detail"]


@pytest.mark.parametrize("shape", DEEP)
async def test_deeply_nested_json_is_a_400_on_login_and_register(
    api: AsyncTestClient, shape: str, json_logs: Any
) -> None:
    for path in ("/auth/login", "/auth/register"):
        response = await api.post(API_PREFIX + path, content=DEEP[shape], headers={"Content-Type": "application/json"})
        assert problem(response, 400)["title"] == "Malformed request body"
    assert '"level": "error"' not in json_logs.getvalue()


@pytest.mark.parametrize("route", JSON_ROUTES, ids=str)
async def test_json_sent_as_another_content_type_is_a_415_on_every_json_route(
    api: AsyncTestClient, caller: User, ids: dict[str, str], route: Route
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/json"):
        response = await api.request(
            route.method,
            route.url(**ids),
            content=b'{"text": "x"}',
            headers=caller.auth | {"Content-Type": content_type},
        )
        assert "application/json" in problem(response, 415)["detail"]


async def test_a_refused_content_type_writes_nothing_and_json_types_are_taken(
    api: AsyncTestClient, caller: User
) -> None:
    url = f"{API_PREFIX}/workspaces"
    name = f"plain-{uuid.uuid4().hex[:6]}"
    problem(
        await api.post(url, content=f'{{"name": "{name}"}}', headers=caller.auth | {"Content-Type": "text/plain"}), 415
    )
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.hubbub+json"):
        created = await api.post(
            url, content=f'{{"name": "{name}"}}', headers=caller.auth | {"Content-Type": content_type}
        )
        assert created.status_code == 201, (content_type, created.text)
    listed = await api.get(url, headers=helpers.at(caller, created.json()["position"]))
    assert [w["name"] for w in listed.json()["items"]].count(name) == 3  # the text/plain one is not among them


# -- NUL characters --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [r for r in ROUTES if "{" in r.path and r.path != "/api/v1/auth/logout"], ids=str)
async def test_a_nul_in_a_path_parameter_is_a_404_or_422(api: AsyncTestClient, caller: User, route: Route) -> None:
    url = re.sub(r"\{\w+:\w+\}", "%00", route.path)
    body = {"json": {}} if route.json_body else {}
    problem(await api.request(route.method, url, headers=caller.auth, **body), 404, 422)


REQUIRED_QUERY = {"/api/v1/workspaces/{workspace_id:str}/search": "q=hi&"}
"""What a route refuses to go without, so that the parameter under test is read."""


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=str)
async def test_a_nul_in_a_query_parameter_is_a_422(
    api: AsyncTestClient, caller: User, ids: dict[str, str], route: Route
) -> None:
    for name in route.query:
        if name in ("as_of", "as_of_position"):
            continue  # refused whatever they hold (below)
        given = REQUIRED_QUERY.get(route.path, "") if name not in REQUIRED_QUERY.get(route.path, "") else ""
        problem(await api.request(route.method, f"{route.url(**ids)}?{given}{name}=%00", headers=caller.auth), 422)


# -- OPTIONS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_options_allows_every_method_the_path_serves(
    api: AsyncTestClient, ids: dict[str, str], path: str
) -> None:
    served = {r.method for r in ROUTES if r.path == path} | {"OPTIONS"}
    response = await api.options(Route("OPTIONS", path, False, ()).url(**ids))
    assert response.status_code == 204
    assert response.headers["allow"] == ", ".join(sorted(served))


# -- request ids -----------------------------------------------------------------------------------


async def _correlation_ids(api: AsyncTestClient, stream_id: str) -> list[str | None]:
    store = api.app.state[deps.STATE_KEY].store
    return [e.meta.correlation_id for e in await store.read_stream(stream_id)]


async def test_events_keep_the_request_id_the_log_has_not_the_clients_raw_header(
    api: AsyncTestClient, caller: User
) -> None:
    team = await helpers.create_workspace(api, caller)
    url = f"{API_PREFIX}/channels/{team.general_id}/messages"
    for sent, by in [
        ("x" * 20_000, "lane"),
        ("bad id\twith junk", "lane"),
        ("a" * 129, "route"),
        (None, "route"),
        ("trace-0193.ok:1", "lane"),
    ]:
        headers = caller.auth | {"Content-Type": "application/json" if by == "lane" else "application/vnd.hubbub+json"}
        if sent is not None:
            headers["X-Request-Id"] = sent
        response = await api.post(url, content=b'{"text": "traced"}', headers=headers)
        assert response.status_code == 201, response.text
        logged = response.headers["x-request-id"]
        assert logged == sent if sent == "trace-0193.ok:1" else re.fullmatch(r"[0-9a-f]{32}", logged)
        assert await _correlation_ids(api, f"message-{response.json()['id']}") == [logged], (sent, by)


# -- time travel -----------------------------------------------------------------------------------


async def test_history_refuses_time_travel_until_it_is_built(api: AsyncTestClient, caller: User) -> None:
    team = await helpers.create_workspace(api, caller)
    url = f"{API_PREFIX}/channels/{team.general_id}/messages"
    headers = helpers.at(caller, team.position)
    for query, field in [
        ("as_of=2026-01-01T00:00:00Z", "as_of"),
        ("as_of=", "as_of"),
        ("as_of_position=3", "as_of_position"),
        ("limit=5&as_of_position=junk", "as_of_position"),
    ]:
        body = problem(await api.get(f"{url}?{query}", headers=headers), 422)
        assert "not built yet" in body["detail"] and body["errors"][0]["field"] == field, (query, body)
    assert (await api.get(url, headers=headers)).status_code == 200
