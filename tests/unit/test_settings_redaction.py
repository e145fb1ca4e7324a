"""A bad URL is echoed in the settings error without the password or token in it."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, load_settings, redacted


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("HUBBUB_DATABASE_URL", "mysql://hubbub:hunter2@db:3306/hubbub", "mysql://***@db:3306/hubbub"),
        ("HUBBUB_DATABASE_URL", "hubbub:hunter2@db:5432/hubbub", "***@db:5432/hubbub"),  # no scheme at all
        ("HUBBUB_REDIS_URL", "http://:hunter2@cache:6379/0", "http://***@cache:6379/0"),
        ("HUBBUB_NATS_URL", "http://hunter2@nats:4222", "http://***@nats:4222"),
        ("HUBBUB_DATABASE_URL", "mysql://db/hubbub?password=hunter2", "mysql://db/hubbub?***"),
    ],
)
def test_a_bad_url_is_shown_without_its_secrets(variable: str, value: str, shown: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).endswith(f"URL: {shown!r}")


def test_a_url_without_secrets_is_shown_as_it_is() -> None:
    assert redacted("postgresql://db:5432/hubbub") == "postgresql://db:5432/hubbub"
    assert redacted("localhost:6379") == "localhost:6379"
