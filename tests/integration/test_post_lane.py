"""The post lane (``hubbub/lane.py``): what it takes, what it hands to Litestar, and that a post
answers the same either way. The lane's errors (401, 404, 422, 429...) are the route's, and the
bad-input cases of ``test_messages_api.py`` and ``test_ratelimit_http.py`` go through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from hubbub.lane import PostLane
from infra.logging import RequestContext
from infra.settings import load_settings
from tests.integration import messaging_helpers as helpers
from tests.integration.conftest import register
from tests.integration.test_realtime import serving

V1 = "/api/v1"


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


async def test_a_post_answers_alike_through_the_lane_and_the_route(api: AsyncTestClient,
                                                                   handed_over: list[str]) -> None:
    owner = await register(api, "Lane")
    team = await helpers.create_workspace(api, owner)
    url = f"{V1}/channels/{team.general_id}/messages"
    by_lane = await api.post(url, content=b'{"text": "one"}', headers=owner.auth | {"Content-Type": "application/json"})
    assert handed_over == []
    by_route = await api.post(url, content=b'{"text": "two"}', headers=owner.auth | {"Content-Type": "text/plain"})
    assert handed_over == [url]  # the route decodes JSON whatever the content type says; the lane leaves those to it
    for response in (by_lane, by_route):
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-hubbub-position"] == str(response.json()["position"])
        assert response.headers["x-request-id"]
    assert set(by_lane.headers) == set(by_route.headers)
    assert set(by_lane.json()) == set(by_route.json()) == {"id", "seq", "position"}
    assert by_route.json()["seq"] == by_lane.json()["seq"] + 1
    page = await api.get(f"{url}?limit=2", headers=helpers.at(owner, by_route.json()["position"]))
    assert [(m["id"], m["text"]) for m in page.json()["items"]] == [
        (by_route.json()["id"], "two"), (by_lane.json()["id"], "one")]


async def test_what_the_lane_cannot_decode_is_answered_by_the_route(api: AsyncTestClient,
                                                                   handed_over: list[str]) -> None:
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


@pytest.fixture(scope="module")
async def served(service_urls: dict[str, str], migrated_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn: a body sent in chunks arrives in several ASGI messages, as in production."""
    settings = load_settings({}, database_url=migrated_url, nats_url=service_urls["nats"],
                             redis_url=service_urls["redis"], insecure_fast_passwords=True)
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
    message = await served.get(f"{V1}/messages/{response.json()['id']}",
                               headers=helpers.at(owner, response.json()["position"]))
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
