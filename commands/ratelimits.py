"""The rate limits routes apply, and the problems they answer with.

Posting: one bucket per user, ``post:{user_id}`` (``HUBBUB_RATE_POST_PER_S`` / ``_BURST``).
It fails OPEN: if Redis is down, posts go through (the limiter logs a warning once a minute).
Posting needs a session already, so abuse is attributable and revocable, and failing closed
would turn a cache outage into a chat outage. For the same reasons it is decided *ahead*
(``RateLimit.ahead``): a post the worker's view of the bucket can pay does not wait for Redis, and
what a worker allowed on a stale view is debt, refused afterwards.

Login: three buckets, and all must allow, taken in this order.
- ``login:{net}:{email}`` (``HUBBUB_RATE_LOGIN_PER_S`` / ``_BURST``): guessing one account's
  password from one place.
- ``login-ip:{net}`` (``LOGIN_IP_FACTOR`` times both): spraying a few passwords over many accounts
  from one place. Defaults 1/s, burst 25: an office behind one NAT can log in together on Monday
  morning, while one address tries at most 3,600 passwords an hour whatever the accounts.
- ``login-account:{email}`` (``HUBBUB_RATE_LOGIN_ACCOUNT_ATTEMPTS`` at once, refilled at that
  many per ``HUBBUB_RATE_LOGIN_ACCOUNT_WINDOW_S``; 10 per 15 minutes): guessing one account's
  password from many places (a botnet, or addresses rotated), whatever the address. Every attempt
  counts, not only failures: a failure known only after the hash is checked would let parallel
  guesses all pass before the first was counted. Last, so attempts the per-address buckets refuse
  cost it nothing: one attacker at one address cannot lock its owner out. Many addresses can, for
  new logins only (sessions already open keep working), which NIST 800-63B accepts as the price.
``net`` is the IPv4 address, or the IPv6 /64 (one host usually owns a whole /64, so per-address
buckets would be free to rotate). Login fails CLOSED: 503 + ``Retry-After`` while Redis is down.
The limiter is the only bound on online guessing (argon2 slows a guess, it does not limit them),
and an attacker who can fill or flood Redis must not switch it off; sessions already open keep
working, so an outage only delays new logins.

Registration: ``register:{net}`` (``HUBBUB_RATE_REGISTER_PER_S`` / ``_BURST``), closed like login:
each registration costs an argon2 hash, and answers whether an email is taken.

The address is ``infra/client_address.py``'s (the peer, or a trusted proxy's ``X-Forwarded-For``).
"""

from __future__ import annotations

import ipaddress
import math

from domain.errors import DomainError
from infra.ratelimit import RateLimit, RateLimiter, RateLimiterUnavailable
from infra.settings import Settings

LOGIN_IP_FACTOR = 5
UNAVAILABLE_RETRY_S = 5
MAX_EMAIL = 254  # RFC 5321; longer is no address, and sharing one bucket only slows the sender


class TooManyRequests(DomainError):
    """A rate limit refused the request; ``Retry-After`` says when to try again."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_header(retry_after_s))}


class LoginUnavailable(DomainError):
    """Logins (or registrations) cannot be rate limited just now (Redis down), so none are accepted."""

    status = 503
    title = "Temporarily unavailable"

    def __init__(self, doing: str = "Logging in") -> None:
        super().__init__(f"{doing} is briefly unavailable; try again in {UNAVAILABLE_RETRY_S} s.")
        self.headers = {"Retry-After": str(UNAVAILABLE_RETRY_S)}


def retry_after_header(seconds: float) -> int:
    """Whole seconds, rounded up, at least 1 (a client told 0 would retry at once)."""
    return max(1, math.ceil(seconds))


async def check_post(limiter: RateLimiter, settings: Settings, user_id: str) -> None:
    limit = RateLimit(settings.rate_post_per_s, settings.rate_post_burst, fail_open=True, ahead=True)
    decision = await limiter.take(f"post:{user_id}", limit)
    if not decision.allowed:
        wait = retry_after_header(decision.retry_after_s)
        raise TooManyRequests(
            f"You are posting too fast; wait {wait} s and try again.", retry_after_s=decision.retry_after_s
        )


async def check_login(limiter: RateLimiter, settings: Settings, ip: str, email: str) -> None:
    net, email = client_network(ip), normalised_email(email)
    here = RateLimit(settings.rate_login_per_s, settings.rate_login_burst)
    per_ip = RateLimit(settings.rate_login_per_s * LOGIN_IP_FACTOR, settings.rate_login_burst * LOGIN_IP_FACTOR)
    anywhere = RateLimit(
        settings.rate_login_account_attempts / settings.rate_login_account_window_s,
        settings.rate_login_account_attempts,
    )
    # The account-and-address bucket first: attempts it refuses then cost the address nothing, so
    # one attacker hammering one account does not lock out everyone else behind the same NAT.
    await _take(limiter, f"login:{net}:{email}", here, "Too many login attempts for this account")
    await _take(limiter, f"login-ip:{net}", per_ip, "Too many login attempts from your network")
    await _take(limiter, f"login-account:{email}", anywhere, "Too many login attempts for this account")


async def check_register(limiter: RateLimiter, settings: Settings, ip: str) -> None:
    limit = RateLimit(settings.rate_register_per_s, settings.rate_register_burst)
    await _take(
        limiter,
        f"register:{client_network(ip)}",
        limit,
        "Too many registrations from your network",
        doing="Registering",
    )


async def _take(limiter: RateLimiter, bucket: str, limit: RateLimit, refusal: str, doing: str = "Logging in") -> None:
    try:
        decision = await limiter.take(bucket, limit)
    except RateLimiterUnavailable:
        raise LoginUnavailable(doing) from None
    if not decision.allowed:
        wait = retry_after_header(decision.retry_after_s)
        raise TooManyRequests(f"{refusal}; wait {wait} s and try again.", retry_after_s=decision.retry_after_s)


def normalised_email(email: str) -> str:
    return email.strip().lower()[:MAX_EMAIL]


def client_network(ip: str) -> str:
    """The IPv4 address, or the /64 of an IPv6 one; anything unparseable as given (bounded)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address), 64), strict=False))
    return str(address)
