"""Register, log in, log out, revoke a device: the command side of *Accounts and sessions* in API.md.

Registering writes the account and its first session in one atomic append, so there is never an
account whose creator got no token, nor a token for an account that does not exist.
Idempotency-Key is not honoured here: the answer carries a token that is never stored, so a
repeat cannot be given the first answer; a retried registration gets 409 and logs in instead.
"""

from __future__ import annotations

import secrets

import msgspec
from litestar import Controller, Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from psycopg_pool import AsyncConnectionPool

from commands.handlers import context, dispatch, entry
from commands.ratelimits import check_login, check_register
from commands.shell import CommandShell, Plan
from domain import account, session
from domain.errors import DomainError, NotFound
from domain.session import Principal
from infra.client_address import request_client_address
from infra.http import with_position
from infra.ids import new_id
from infra.passwords import MAX_LENGTH, Passwords, check_password
from infra.ratelimit import RateLimiter
from infra.settings import Settings


class RegisterBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    email: str
    password: str
    display_name: str


class LoginBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    email: str
    password: str
    device: str | None = None


class UserOut(msgspec.Struct, frozen=True):
    id: str
    email: str
    display_name: str


class AuthOut(msgspec.Struct, frozen=True):
    user: UserOut
    token: str
    position: int


class WrongCredentials(DomainError):
    status = 401
    title = "Wrong email or password"


def new_token() -> str:
    return "hbt_" + secrets.token_urlsafe(32)


def device_of(request: Request, given: str | None) -> str | None:
    return given or request.headers.get("user-agent")


class AuthController(Controller):
    path = "/auth"
    tags = ["accounts"]

    @post("/register", status_code=201, operation_id="register")
    async def register(
        self,
        request: Request,
        data: JSONBody[RegisterBody],
        shell: NamedDependency[CommandShell],
        passwords: NamedDependency[Passwords],
        limiter: NamedDependency[RateLimiter],
        settings: NamedDependency[Settings],
    ) -> Response[AuthOut]:
        # Cheapest first, the argon2 hash last: a request that fails a field check, the limit, or
        # finds the email taken never costs a hash. The limit comes before the lookup, as the
        # answer says whether an email has an account.
        email = account.check_email(data.email)
        account.check_display_name(data.display_name)
        password = check_password(data.password)
        await check_register(limiter, settings, request_client_address(request.scope))
        account.check_free((await shell.load(account.ACCOUNT, account.account_stream(email))).state)
        register = account.Register(new_id(), email, data.display_name, await passwords.hash(password))
        token = new_token()
        start = session.Start(new_id(), register.user_id, device_of(request, None))
        decided = await shell.run(
            Plan((entry([register], email), entry([start], token)), context(request, register.user_id, keys=False))
        )
        registered, position = decided.states[0], decided.position
        assert registered.user_id and registered.email and registered.display_name
        user = UserOut(registered.user_id, registered.email, registered.display_name)
        return with_position(Response(AuthOut(user, token, position), status_code=201), position)

    @post("/login", status_code=200, operation_id="login")
    async def login(
        self,
        request: Request,
        data: JSONBody[LoginBody],
        shell: NamedDependency[CommandShell],
        passwords: NamedDependency[Passwords],
        limiter: NamedDependency[RateLimiter],
        settings: NamedDependency[Settings],
    ) -> Response[AuthOut]:
        # Before the password is even looked at: the limit is what bounds online guessing.
        await check_login(limiter, settings, request_client_address(request.scope), data.email)
        found = (await shell.load(account.ACCOUNT, account.account_stream(data.email))).state
        if not await passwords.verify(found.password_hash, data.password[: MAX_LENGTH + 1]):
            raise WrongCredentials("the email or the password is wrong")
        assert found.user_id and found.email and found.display_name
        token = new_token()
        start = session.Start(new_id(), found.user_id, device_of(request, data.device))
        decided = await dispatch(
            shell, context(request, found.user_id, keys=False), session.Start, token, lambda _: start
        )
        body = AuthOut(UserOut(found.user_id, found.email, found.display_name), token, decided.position)
        return with_position(Response(body), decided.position)

    @post("/logout", status_code=204, operation_id="logout")
    async def logout(
        self, request: Request, principal: NamedDependency[Principal], shell: NamedDependency[CommandShell]
    ) -> Response[None]:
        decided = await dispatch(
            shell,
            context(request, principal.user_id, keys=False),
            session.End,
            principal.session_stream,
            lambda _: session.End("logout"),
        )
        return with_position(Response(None, status_code=204), decided.position)


# Only the caller's own, still open: anyone else's session is as missing as an unknown one.
_OWN_SESSION = "SELECT stream_id FROM sessions WHERE session_id = %s AND user_id = %s AND ended_at IS NULL"


@delete("/me/sessions/{session_id:str}", status_code=204, operation_id="revokeSession", tags=["accounts"])
async def revoke_session(
    request: Request,
    session_id: FromPath[str],
    principal: NamedDependency[Principal],
    shell: NamedDependency[CommandShell],
    pool: NamedDependency[AsyncConnectionPool],
) -> Response[None]:
    """Log one of the caller's devices out (a lost phone): its token stops working at once
    everywhere, and its sockets are closed."""
    async with pool.connection() as conn:
        cur = await conn.execute(_OWN_SESSION, (session_id, principal.user_id))
        row = await cur.fetchone()
    if row is None or row[0] is None:
        raise NotFound("no such session (it may have ended already)")
    try:
        decided = await dispatch(
            shell,
            context(request, principal.user_id, keys=False),
            session.End,
            row[0],
            lambda _: session.End("revoked"),
        )
    except session.SessionGone:  # it ended meanwhile (a logout, another revoke)
        raise NotFound("no such session (it may have ended already)") from None
    return with_position(Response(None, status_code=204), decided.position)
