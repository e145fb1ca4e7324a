"""Password hashing with argon2id (argon2-cffi), off the event loop.

Hashing costs tens of milliseconds of CPU by design, so it runs in a worker thread: a burst of
logins must not stall every other request. ``cheap`` exists for the test suite only, where
thousands of accounts are made; it is selected by ``HUBBUB_INSECURE_FAST_PASSWORDS=true``.
"""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # long enough for any passphrase; bounded so one request cannot burn the CPU


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
