from __future__ import annotations

from domain.account import ACCOUNT, AccountRegistered, EmailTaken, Register, account_stream
from domain.errors import DomainError
from domain.session import SESSION, End, SessionEnded, SessionGone, SessionStarted, Start, session_stream
from tests.unit.given import given

REGISTERED = AccountRegistered(user_id="u1", email="ada@example.com", display_name="Ada", password_hash="h")


def test_registering_a_new_email() -> None:
    given(ACCOUNT).when(Register("u1", " Ada@Example.com ", " Ada ", "h")).then(REGISTERED)


def test_an_email_registers_once() -> None:
    given(ACCOUNT, REGISTERED).when(Register("u2", "ada@example.com", "Other", "h2")).then_rejects(EmailTaken, "email")


def test_registration_rules_name_their_field() -> None:
    for email in ["", "ada", "ada@", "@example.com", "a b@example.com", "x" * 250 + "@e.com"]:
        given(ACCOUNT).when(Register("u1", email, "Ada", "h")).then_rejects(DomainError, "email")
    for name in ["", "   ", "x" * 81, "bell\x07"]:
        given(ACCOUNT).when(Register("u1", "ada@example.com", name, "h")).then_rejects(DomainError, "display_name")


def test_the_account_stream_does_not_depend_on_case_or_spaces_and_hides_the_address() -> None:
    assert account_stream("Ada@Example.com ") == account_stream("ada@example.com")
    assert "ada" not in account_stream("ada@example.com")


def test_a_session_starts_once_and_ends_once() -> None:
    started = SessionStarted(session_id="s1", user_id="u1", device="phone")
    given(SESSION).when(Start("s1", "u1", "phone")).then(started)
    given(SESSION, started).when(End("logout")).then(SessionEnded(session_id="s1", user_id="u1", reason="logout"))
    given(SESSION, started, SessionEnded(session_id="s1", user_id="u1")).when(End()).then_rejects(SessionGone)
    given(SESSION).when(End()).then_rejects(SessionGone)


def test_the_session_stream_never_contains_the_token() -> None:
    assert "hbt_secret" not in session_stream("hbt_secret")
    assert session_stream("a") != session_stream("b")
