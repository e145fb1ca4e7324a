"""The rule a new password must pass (infra/passwords.py): NIST SP 800-63B's length, no
composition rules, nothing only blank, nothing from the common-password list."""

from __future__ import annotations

import pytest

from domain.errors import DomainError
from infra.passwords import MAX_LENGTH, check_password, common_passwords


@pytest.mark.parametrize(
    "password", ["password", "PASSWORD", " Password ", "12345678", "qwertyuiop", "iloveyou1", "baseball"]
)
def test_common_passwords_are_refused(password: str) -> None:
    with pytest.raises(DomainError, match="most common") as refused:
        check_password(password)
    assert refused.value.field == "password"


@pytest.mark.parametrize("password", [" " * 8, "\t" * 9, "\u3000\u00a0\u2003 \n\r\u2009\u202f"])
def test_blank_passwords_are_refused(password: str) -> None:
    with pytest.raises(DomainError, match="whitespace"):
        check_password(password)


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "password is not enough",
        "Tr0ub4dor&3x",
        "   spaces around   ",
        "пароль-на-русском",
        "x" * MAX_LENGTH,
    ],
)
def test_anything_else_of_the_right_length_is_taken(password: str) -> None:
    assert check_password(password) == password


@pytest.mark.parametrize("password", ["short", "x" * (MAX_LENGTH + 1)])
def test_the_length_is_still_8_to_1024(password: str) -> None:
    with pytest.raises(DomainError, match="8 to 1024"):
        check_password(password)


def test_the_list_is_the_20000_shipped_with_the_package() -> None:
    assert 19_000 < len(common_passwords()) <= 20_000
    assert all(p == p.strip().lower() for p in common_passwords())
