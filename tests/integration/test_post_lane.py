"""The post lane (``commands/lane.py``): what it takes, what it hands to Litestar, and that a post
answers the same either way. The lane's errors (401, 404, 422, 429...) are the route's, and the
bad-input cases of ``test_messages_api.py`` and ``test_ratelimit_http.py`` go through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar.config.cors import CORSConfig
from litestar.testing import AsyncTestClient

from commands.lane import PostLane
from infra.logging import RequestContext
from infra.settings import load_settings
from tests.integration import messaging_helpers as helpers
from tests.integration.conftest import register
from tests.integration.test_realtime import serving

V1 = "/api/v1"
ROUTE_ONLY_JSON = "application/vnd.hubbub+json"
"""A JSON type the route takes and the lane leaves to it: a post answered by the route, as a twin."""


@pytest.fixture
def handed_over(api: AsyncTestClient) -> Iterator[list[str]]:
    """The posts the lane passes on to Litestar during the test (their paths)."""
    context = api.app.asgi_handler
    assert isinstance(context, RequestContext) and isinstance(context.app, PostLane)
    lane, seen = context.app, []
    litestar = lane.app

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/messages"):
            seen.append(scope["path"])
        await litestar(scope, receive, send)

    lane.app = recording
    yield seen
    lane.app = litestar


async def test_a_post_answers_alike_through_the_lane_and_the_route(
    api: AsyncTestClient, handed_over: list[str]
) -> None:
    owner = await register(api, "Lane")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    by_lane = await api.post(url, content=b'{"text": "one"}', headers=owner.auth | {"Content-Type": "application/json"})
    assert handed_over == []
    by_route = await api.post(url, content=b'{"text": "two"}', headers=owner.auth | {"Content-Type": ROUTE_ONLY_JSON})
    assert handed_over == [url]  # the route takes any JSON type; the lane only application/json and leaves the rest
    for response in (by_lane, by_route):
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-hubbub-position"] == str(response.json()["position"])
        assert response.headers["x-request-id"]
    assert set(by_lane.headers) == set(by_route.headers)
    assert {
        k: v
        for k, v in by_lane.headers.items()
        if k not in ("x-request-id", "content-length", "x-hubbub-position", "date")
    } == {
        k: v
        for k, v in by_route.headers.items()
        if k not in ("x-request-id", "content-length", "x-hubbub-position", "date")
    }
    assert set(by_lane.json()) == set(by_route.json()) == {"id", "seq", "position"}
    assert by_route.json()["seq"] == by_lane.json()["seq"] + 1
    page = await api.get(f"{url}?limit=2", headers=helpers.at(owner, by_route.json()["position"]))
    assert [(m["id"], m["text"]) for m in page.json()["items"]] == [
        (by_route.json()["id"], "two"),
        (by_lane.json()["id"], "one"),
    ]


async def test_what_the_lane_cannot_decode_is_answered_by_the_route(
    api: AsyncTestClient, handed_over: list[str]
) -> None:
    owner = await register(api, "Odd")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    json_type = owner.auth | {"Content-Type": "application/json"}
    malformed = await api.post(url, content=b'{"text": ', headers=json_type)
    unknown_field = await api.post(url, json={"text": "x", "sticky": True}, headers=owner.auth)
    assert handed_over == [url, url]
    assert helpers.problem(malformed, 400)["title"] == "Malformed request body"
    assert helpers.problem(unknown_field, 422)["errors"][0]["field"] == "sticky"
    too_long = await api.post(url, json={"text": "x" * 40_001}, headers=owner.auth)  # decodes: the domain refuses it
    assert handed_over == [url, url]
    assert helpers.problem(too_long, 422)["errors"][0]["field"] == "text"


async def test_json_sent_as_text_is_refused_by_the_route_after_the_lane(
    api: AsyncTestClient, handed_over: list[str]
) -> None:
    owner = await register(api, "Plain")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    refused = await api.post(url, content=b'{"text": "plain"}', headers=owner.auth | {"Content-Type": "text/plain"})
    assert handed_over == [url]
    assert helpers.problem(refused, 415)["title"] == "Unsupported Media Type"
    deep = await api.post(
        url, content=b'{"text": "x", "z": ' + b"[" * 5000, headers=owner.auth | {"Content-Type": "application/json"}
    )
    assert helpers.problem(deep, 400)["title"] == "Malformed request body"
    page = await api.get(url, headers=helpers.at(owner, team.position))
    assert page.json()["items"] == []


async def asgi_post(
    api: AsyncTestClient, path: str, headers: dict[str, str], messages: list[dict[str, Any]]
) -> tuple[int | None, dict[str, str], bytes]:
    """POST straight into the app as a server would, the body as the ASGI ``messages`` given (a
    receive past them fails the test); the status (None if nothing was answered), headers and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    pending, sent = list(messages), []

    async def receive() -> dict[str, Any]:
        assert pending, "read past the body the client sent"
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # The app lives on the test client's own event loop (its portal's thread).
    await asyncio.to_thread(api.blocking_portal.call, api.app, scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        return None, {}, b""
    answered = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], answered, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def chunked(*parts: bytes) -> list[dict[str, Any]]:
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


async def test_the_lane_reads_a_body_sent_in_parts(api: AsyncTestClient, handed_over: list[str]) -> None:
    owner = await register(api, "Parts")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    status, headers, body = await asgi_post(
        api, url, owner.auth | {"Content-Type": "application/json"}, chunked(b'{"te', b'xt": "in ', b'three parts"}')
    )
    assert (status, handed_over) == (201, [])
    posted = json.loads(body)
    message = await api.get(f"{V1}/messages/{posted['id']}", headers=helpers.at(owner, posted["position"]))
    assert message.json()["text"] == "in three parts"


async def test_a_client_gone_before_its_body_is_whole_posts_nothing(
    api: AsyncTestClient, handed_over: list[str]
) -> None:
    owner = await register(api, "Gone")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    cut = [{"type": "http.request", "body": b'{"text": "half', "more_body": True}, {"type": "http.disconnect"}]
    whole_text_then_cut = [
        {"type": "http.request", "body": b'{"text": "all of it"}', "more_body": True},
        {"type": "http.disconnect"},
    ]
    for messages in (cut, whole_text_then_cut):
        status, _, _ = await asgi_post(api, url, owner.auth | {"Content-Type": "application/json"}, messages)
        assert status is None
    after = await api.post(url, json={"text": "later"}, headers=owner.auth)
    page = await api.get(url, headers=helpers.at(owner, after.json()["position"]))
    assert [m["text"] for m in page.json()["items"]] == ["later"]


async def test_what_litestar_refuses_unread_is_still_refused(api: AsyncTestClient, handed_over: list[str]) -> None:
    owner = await register(api, "Refused")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    json_type = owner.auth | {"Content-Type": "application/json"}
    bad_host, _, body = await asgi_post(api, url, json_type | {"Host": "evil host/"}, chunked(b'{"text": "x"}'))
    assert bad_host == 400 and b"host" in body.lower()
    limit = api.app.state["settings"].max_request_bytes
    # The declared length is over the limit: refused before a byte is read (receive is never called).
    too_big, headers, _ = await asgi_post(api, url, json_type | {"Content-Length": str(limit + 1)}, [])
    assert too_big == 413 and headers["content-type"].startswith(helpers.PROBLEM)
    assert handed_over == [url, url]
    after = await api.post(url, json={"text": "fine"}, headers=owner.auth)
    page = await api.get(url, headers=helpers.at(owner, after.json()["position"]))
    assert [m["text"] for m in page.json()["items"]] == ["fine"]


async def test_the_lane_refuses_exactly_as_the_route_does(api: AsyncTestClient, handed_over: list[str]) -> None:
    owner = await register(api, "Same")
    outsider = await register(api, "Outsider")
    team = await helpers.create_workspace(api, owner)
    general = f"{V1}/channels/{team.general_id}/messages"
    cases = [
        (general, {}, b'{"text": "no token"}'),  # 401
        (general, outsider.auth, b'{"text": "not a member"}'),  # 404: not a channel they can see
        (f"{V1}/channels/nope/messages", owner.auth, b'{"text": "no such channel"}'),  # 404
        (general, owner.auth, b'{"text": "   "}'),  # 422: empty text
        (general, owner.auth, b'{"text": "x", "thread_root_id": "nope"}'),
    ]  # 404 or 422: unknown root
    for url, auth, body in cases:
        by_lane = await api.post(url, content=body, headers=auth | {"Content-Type": "application/json"})
        by_route = await api.post(url, content=body, headers=auth | {"Content-Type": ROUTE_ONLY_JSON})
        assert by_lane.status_code == by_route.status_code and by_lane.status_code >= 400, (body, by_lane.text)
        assert set(by_lane.headers) - {"content-length"} == set(by_route.headers) - {"content-length"}
        lane_problem, route_problem = by_lane.json(), by_route.json()
        for problem in (lane_problem, route_problem):
            problem.pop("instance", None), problem.pop("request_id", None)
        assert lane_problem == route_problem
    assert len(handed_over) == len(cases)  # one per case: each +json twin


@pytest.fixture(scope="module")
async def served(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn: a body sent in chunks arrives in several ASGI messages, as in production."""
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
    )
    async with serving(settings) as address, httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        client.max_body_bytes = settings.max_request_bytes  # type: ignore[attr-defined]
        yield client


async def test_a_body_in_chunks_is_read_whole(served: httpx.AsyncClient) -> None:
    owner = await register(served, "Chunks")
    team = await helpers.create_workspace(served, owner)
    url = f"{V1}/channels/{team.general_id}/messages"

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"te', b'xt": "in ', b'three parts"}'):
            yield part

    response = await served.post(url, content=chunks(), headers=owner.auth | {"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    message = await served.get(
        f"{V1}/messages/{response.json()['id']}", headers=helpers.at(owner, response.json()["position"])
    )
    assert message.json()["text"] == "in three parts"


async def test_a_body_over_the_limit_is_413_and_posts_nothing(served: httpx.AsyncClient) -> None:
    owner = await register(served, "Big")
    team = await helpers.create_workspace(served, owner)
    url = f"{V1}/channels/{team.general_id}/messages"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the lane stops reading at the limit
        yield b'{"text": "'
        for _ in range(served.max_body_bytes // 65_536 + 1):  # type: ignore[attr-defined]
            yield b"x" * 65_536
        yield b'"}'

    response = await served.post(url, content=chunks(), headers=owner.auth | {"Content-Type": "application/json"})
    helpers.problem(response, 413)
    after = await served.post(url, json={"text": "small"}, headers=owner.auth)  # the connection still serves
    page = await served.get(url, headers=helpers.at(owner, after.json()["position"]))
    assert [m["text"] for m in page.json()["items"]] == ["small"]


def test_the_lane_will_not_start_in_front_of_what_it_would_skip(api: AsyncTestClient) -> None:
    context = api.app.asgi_handler
    assert isinstance(context, RequestContext)
    lane: PostLane = context.app
    api.app.cors_config = CORSConfig(allow_origins=["https://chat.example"])
    try:
        with pytest.raises(RuntimeError, match="without CORS"):
            PostLane(lane.app, api.app, V1, lane.max_body_bytes, lane.handlers)
    finally:
        api.app.cors_config = None
    PostLane(lane.app, api.app, V1, lane.max_body_bytes, lane.handlers)  # as built: nothing skipped
