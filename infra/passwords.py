"""Password hashing with argon2id (argon2-cffi), off the event loop, and the rule a new password
must pass.

Hashing costs tens of milliseconds of CPU by design, so it runs in a worker thread: a burst of
logins must not stall every other request. ``cheap`` exists for the test suite only, where
thousands of accounts are made; it is selected by ``HUBBUB_INSECURE_FAST_PASSWORDS=true``.

The rule (``check_password``) is NIST SP 800-63B's: a length (8 to 1024 characters, any
characters, spaces included), no composition rules, and not a password everyone tries first: not
only whitespace, and not one of the 20,000 common passwords Django ships (``common-passwords.txt.gz``
here, with its licence beside it), compared as Django does, lowercased and trimmed.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
from importlib import resources

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from domain.errors import DomainError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # long enough for any passphrase; bounded so one request cannot burn the CPU


def check_password(password: str) -> str:
    """``password`` if it may be chosen as a new password; else a 422 that says why."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise DomainError(f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters", field="password")
    if not password.strip():
        raise DomainError(
            "password must not be only spaces or other whitespace; a few words make a good one", field="password"
        )
    if password.lower().strip() in common_passwords():
        raise DomainError(
            "this password is one of the most common ones, which attackers try first; "
            "choose another (a few unrelated words make a good one)",
            field="password",
        )
    return password


@functools.cache
def common_passwords() -> frozenset[str]:
    with resources.files(__package__).joinpath("common-passwords.txt.gz").open("rb") as packed:
        return frozenset(gzip.decompress(packed.read()).decode().split("\n")) - {""}


class Passwords:
    def __init__(self, *, cheap: bool = False) -> None:
        params = argon2.profiles.CHEAPEST if cheap else argon2.profiles.RFC_9106_LOW_MEMORY
        self._hasher = argon2.PasswordHasher.from_parameters(params)
        self._dummy = self._hasher.hash("an unused password, for constant-time refusals")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches. With no hash (unknown email) it still spends the same
        time, so response times do not tell which addresses have accounts."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            ok = self._hasher.verify(password_hash or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None
