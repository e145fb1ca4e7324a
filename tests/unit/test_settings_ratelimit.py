from __future__ import annotations

import pytest

from infra.settings import SettingsError, load_settings


def test_rate_limit_defaults() -> None:
    settings = load_settings({})
    assert (settings.rate_post_per_s, settings.rate_post_burst) == (5.0, 20)
    assert (settings.rate_login_per_s, settings.rate_login_burst) == (0.2, 5)


def test_rate_limits_come_from_the_environment() -> None:
    settings = load_settings(
        {
            "HUBBUB_RATE_POST_PER_S": "0.5",
            "HUBBUB_RATE_POST_BURST": "3",
            "HUBBUB_RATE_LOGIN_PER_S": "1",
            "HUBBUB_RATE_LOGIN_BURST": "10",
        }
    )
    assert (settings.rate_post_per_s, settings.rate_post_burst) == (0.5, 3)
    assert (settings.rate_login_per_s, settings.rate_login_burst) == (1.0, 10)


@pytest.mark.parametrize(
    "variable",
    ["HUBBUB_RATE_POST_PER_S", "HUBBUB_RATE_POST_BURST", "HUBBUB_RATE_LOGIN_PER_S", "HUBBUB_RATE_LOGIN_BURST"],
)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_rate_limit_must_be_positive(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable} must be a number > 0, not {value}"):
        load_settings({variable: value})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_rate_must_be_finite(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^HUBBUB_RATE_LOGIN_PER_S must be a number > 0"):
        load_settings({"HUBBUB_RATE_LOGIN_PER_S": value})


@pytest.mark.parametrize(
    ("variable", "value"), [("HUBBUB_RATE_POST_BURST", "2.5"), ("HUBBUB_RATE_LOGIN_PER_S", "fast")]
)
def test_a_malformed_rate_limit_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}: "):
        load_settings({variable: value})


def test_account_and_registration_limit_defaults() -> None:
    settings = load_settings({})
    assert (settings.rate_login_account_attempts, settings.rate_login_account_window_s) == (10, 900.0)
    assert (settings.rate_register_per_s, settings.rate_register_burst) == (0.02, 20)


@pytest.mark.parametrize(
    "variable",
    [
        "HUBBUB_RATE_LOGIN_ACCOUNT_ATTEMPTS",
        "HUBBUB_RATE_LOGIN_ACCOUNT_WINDOW_S",
        "HUBBUB_RATE_REGISTER_PER_S",
        "HUBBUB_RATE_REGISTER_BURST",
    ],
)
def test_account_and_registration_limits_must_be_positive(variable: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable} must be a number > 0, not 0"):
        load_settings({variable: "0"})
