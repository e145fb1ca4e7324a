"""Accounts: one stream per email address, so an address can be registered once.

Stream ``account-{sha256 of the normalised email}``: registering appends to it with "no stream
yet" as the expected version, so two racing registrations of one address cannot both win.
The password arrives already hashed (hashing is random, and the domain makes no randomness).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from domain.decider import Decider
from domain.errors import Conflict, DomainError
from domain.events import Event

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 254
MAX_DISPLAY_NAME = 80


class AccountRegistered(Event, frozen=True, tag="account.registered"):
    user_id: str
    email: str
    display_name: str
    password_hash: str


class Register(msgspec.Struct, frozen=True):
    user_id: str
    email: str
    display_name: str
    password_hash: str


@dataclass(frozen=True)
class Account:
    user_id: str | None = None
    email: str | None = None
    display_name: str | None = None
    password_hash: str | None = None


class EmailTaken(Conflict):
    title = "Email already registered"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def account_stream(email: str) -> str:
    return "account-" + hashlib.sha256(normalise_email(email).encode()).hexdigest()


def check_email(email: str) -> str:
    email = normalise_email(email)
    if len(email) > MAX_EMAIL or not EMAIL.match(email):
        raise DomainError("email must look like name@example.com (at most 254 characters)", field="email")
    return email


def check_display_name(name: str) -> str:
    name = " ".join(name.split())  # no control characters, tabs or runs of spaces
    if not 1 <= len(name) <= MAX_DISPLAY_NAME or not name.isprintable():
        raise DomainError(f"display_name must be 1 to {MAX_DISPLAY_NAME} printable characters", field="display_name")
    return name


def evolve(state: Account, event: Event) -> Account:
    match event:
        case AccountRegistered():
            return Account(event.user_id, event.email, event.display_name, event.password_hash)
    return state


def check_free(state: Account) -> None:
    """Refuse an address that has an account (also asked before the password is hashed)."""
    if state.user_id is not None:
        raise EmailTaken("this email is already registered; log in instead", field="email")


def decide(state: Account, command: Register) -> Sequence[Event]:
    check_free(state)
    return [
        AccountRegistered(
            user_id=command.user_id,
            email=check_email(command.email),
            display_name=check_display_name(command.display_name),
            password_hash=command.password_hash,
        )
    ]


ACCOUNT: Decider[Account, Register] = Decider("account", Account(), evolve, decide)
