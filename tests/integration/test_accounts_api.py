"""Accounts and sessions over HTTP (API.md: register, login, logout, /me)."""

from __future__ import annotations

import asyncio
import uuid

from litestar.testing import AsyncTestClient

from tests.integration.conftest import register
from tests.integration.messaging_helpers import problem


async def test_register_answers_with_the_user_a_token_and_a_position(api: AsyncTestClient) -> None:
    email = f"grace-{uuid.uuid4().hex[:8]}@Example.com"
    response = await api.post(
        "/api/v1/auth/register",
        json={"email": email, "password": "a long password", "display_name": "  Grace   Hopper "},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["email"] == email.lower()
    assert body["user"]["display_name"] == "Grace Hopper"
    assert body["token"].startswith("hbt_") and len(body["token"]) > 40
    assert int(response.headers["X-Hubbub-Position"]) == body["position"] > 0
    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == body["user"]["id"] and me.json()["email"] == email.lower()


async def test_an_email_registers_once_whatever_its_case(api: AsyncTestClient) -> None:
    user = await register(api, "Alan")
    again = await api.post(
        "/api/v1/auth/register", json={"email": user.email.upper(), "password": "another password", "display_name": "X"}
    )
    assert problem(again, 409)["errors"][0]["field"] == "email"
    login = await api.post("/api/v1/auth/login", json={"email": user.email, "password": "correct horse battery"})
    assert login.status_code == 200 and login.json()["user"]["id"] == user.id


async def test_racing_registrations_of_one_email_make_one_account(api: AsyncTestClient) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "password 123", "display_name": "Racer"}
    responses = await asyncio.gather(*(api.post("/api/v1/auth/register", json=body) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7


async def test_bad_registrations_name_the_field_and_create_nothing(api: AsyncTestClient) -> None:
    good = {"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": "password 123", "display_name": "X"}
    for field, value in [
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("password", "short"),
        ("password", "x" * 1025),
        ("display_name", ""),
        ("display_name", "\x00\x01"),
    ]:
        response = await api.post("/api/v1/auth/register", json=good | {field: value})
        assert problem(response, 422)["errors"][0]["field"] == field, (field, value)
    assert problem(await api.post("/api/v1/auth/register", json=good | {"admin": True}), 422)
    assert problem(await api.post("/api/v1/auth/register", json={"email": good["email"]}), 422)
    bad_json = await api.post(
        "/api/v1/auth/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert problem(bad_json, 400)
    login = await api.post("/api/v1/auth/login", json={"email": good["email"], "password": good["password"]})
    assert problem(login, 401)  # none of the attempts created the account


async def test_common_passwords_and_blank_ones_are_refused_and_say_why(api: AsyncTestClient) -> None:
    """NIST SP 800-63B: no composition rules, but not a password attackers try first."""
    email = f"weak-{uuid.uuid4().hex[:8]}@example.com"
    for password, why in [
        ("password", "most common"),
        ("PassWord", "most common"),
        ("qwertyuiop ", "most common"),
        ("iloveyou1", "most common"),
        (" " * 8, "whitespace"),
        ("\t \u3000 \u00a0  \n", "whitespace"),
    ]:
        response = await api.post(
            "/api/v1/auth/register", json={"email": email, "password": password, "display_name": "W"}
        )
        body = problem(response, 422)
        assert body["errors"][0]["field"] == "password" and why in body["detail"], (password, body)
    assert problem(await api.post("/api/v1/auth/login", json={"email": email, "password": "password"}), 401)
    fine = await api.post(
        "/api/v1/auth/register", json={"email": email, "password": "password is not enough", "display_name": "W"}
    )
    assert fine.status_code == 201, fine.text


async def test_each_login_is_a_session_of_its_own_and_logout_ends_only_that_one(api: AsyncTestClient) -> None:
    user = await register(api, "Barbara")
    login = await api.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "correct horse battery", "device": "phone"}
    )
    assert login.status_code == 200, login.text
    phone = {"Authorization": f"Bearer {login.json()['token']}"}
    assert login.json()["token"] != user.token
    out = await api.post("/api/v1/auth/logout", headers=phone)
    assert out.status_code == 204 and int(out.headers["X-Hubbub-Position"]) > 0
    assert problem(await api.get("/api/v1/me", headers=phone), 401)
    assert problem(await api.post("/api/v1/auth/logout", headers=phone), 401)
    assert (await api.get("/api/v1/me", headers=user.auth)).status_code == 200  # the laptop is still in


async def test_a_wrong_password_and_an_unknown_email_look_the_same(api: AsyncTestClient) -> None:
    user = await register(api, "Edsger")
    wrong = problem(await api.post("/api/v1/auth/login", json={"email": user.email, "password": "wrong password"}), 401)
    unknown = problem(
        await api.post("/api/v1/auth/login", json={"email": "nobody-" + user.email, "password": "wrong password"}), 401
    )
    assert wrong == unknown


async def test_queries_need_a_valid_token(api: AsyncTestClient) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer hbt_forged"}):
        assert problem(await api.get("/api/v1/me", headers=headers), 401)


async def test_password_guessing_is_rate_limited_per_account(api: AsyncTestClient) -> None:
    user = await register(api, "Mallory")
    guesses = [
        await api.post("/api/v1/auth/login", json={"email": user.email, "password": f"guess {i}"}) for i in range(6)
    ]
    assert [g.status_code for g in guesses] == [401] * 5 + [429]
    assert int(guesses[-1].headers["Retry-After"]) >= 1
    # The right password is refused too until the bucket refills: the limit is not a hint.
    assert (
        await api.post("/api/v1/auth/login", json={"email": user.email, "password": "correct horse battery"})
    ).status_code == 429


async def _login(api: AsyncTestClient, user, device: str) -> tuple[dict[str, str], int]:
    response = await api.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "correct horse battery", "device": device}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}, response.json()["position"]


async def _sessions(api: AsyncTestClient, auth: dict[str, str], position: int) -> list[dict]:
    response = await api.get("/api/v1/me/sessions", headers={**auth, "X-Hubbub-Position": str(position)})
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_lost_phone_is_logged_out_from_the_laptop(api: AsyncTestClient) -> None:
    user = await register(api, "Grace")
    phone, position = await _login(api, user, "phone")
    listed = await _sessions(api, user.auth, position)
    assert [(s["device"], s["current"]) for s in listed][:1] == [("phone", False)]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    phone_id = listed[0]["id"]

    revoked = await api.delete(f"/api/v1/me/sessions/{phone_id}", headers=user.auth)
    assert revoked.status_code == 204 and int(revoked.headers["X-Hubbub-Position"]) > position
    problem(await api.get("/api/v1/me", headers=phone), 401)  # at once, in every process
    remaining = await _sessions(api, user.auth, int(revoked.headers["X-Hubbub-Position"]))
    assert [s["current"] for s in remaining] == [True]
    problem(await api.delete(f"/api/v1/me/sessions/{phone_id}", headers=user.auth), 404)  # ended already


async def test_nobody_can_see_or_end_someone_elses_sessions(api: AsyncTestClient) -> None:
    owner, other = await register(api, "Ada"), await register(api, "Eve")
    _, position = await _login(api, owner, "tablet")
    tablet = [s for s in await _sessions(api, owner.auth, position) if s["device"] == "tablet"][0]
    assert tablet["id"] not in [s["id"] for s in await _sessions(api, other.auth, position)]
    problem(await api.delete(f"/api/v1/me/sessions/{tablet['id']}", headers=other.auth), 404)
    problem(await api.delete(f"/api/v1/me/sessions/{uuid.uuid4()}", headers=owner.auth), 404)
    problem(await api.delete(f"/api/v1/me/sessions/{tablet['id']}"), 401)
    assert tablet["id"] in [s["id"] for s in await _sessions(api, owner.auth, position)]
