from __future__ import annotations

import pytest

from infra.settings import Settings, SettingsError, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8000, ".hubbub")
    assert settings.database_url is None and settings.log_format == "json"
    assert settings.read_wait_timeout_s == 2.0


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "HUBBUB_PORT": "9001",
            "HUBBUB_DATABASE_URL": "postgresql://u:p@db:5432/hubbub",
            "HUBBUB_REDIS_URL": "redis://cache:6379/1",
            "HUBBUB_READ_WAIT_TIMEOUT_S": "0.5",
            "HUBBUB_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "HUBBUB_LOG_FORMAT": "console",
            "HOME": "/root",  # not ours: ignored
        }
    )
    assert settings.port == 9001
    assert settings.database_url == "postgresql://u:p@db:5432/hubbub"
    assert settings.read_wait_timeout_s == 0.5
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.log_format == "console"


def test_overrides_win_over_the_environment_and_none_means_unset() -> None:
    settings = load_settings({"HUBBUB_PORT": "9001"}, port=9002, host=None)
    assert settings.port == 9002 and settings.host == "127.0.0.1"


def test_an_empty_value_means_the_default() -> None:
    assert load_settings({"HUBBUB_DATABASE_URL": "  "}).database_url is None


def test_an_unknown_variable_is_named_with_the_known_ones() -> None:
    with pytest.raises(SettingsError, match=r"HUBBUB_DATABSE_URL is not a Hubbub setting.*HUBBUB_DATABASE_URL"):
        load_settings({"HUBBUB_DATABSE_URL": "postgresql://x/y"})


@pytest.mark.parametrize(
    ("variable", "value", "wanted"),
    [
        ("HUBBUB_DATABASE_URL", "mysql://db/hubbub", "postgresql://"),
        ("HUBBUB_NATS_URL", "http://nats:4222", "nats://"),
        ("HUBBUB_REDIS_URL", "localhost:6379", "redis://"),
    ],
)
def test_a_url_with_the_wrong_scheme_says_which_scheme(variable: str, value: str, wanted: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable} is not a .*{wanted}.* URL: '{value}'"):
        load_settings({variable: value})


def test_several_nats_servers_are_a_list_each_url_checked() -> None:
    one = "nats://t0k3n@n1:4222"
    assert load_settings({"HUBBUB_NATS_URL": one}).nats_url == one
    cluster = load_settings({"HUBBUB_NATS_URL": f"{one}, nats://t0k3n@n2:4222,"}).nats_url
    assert cluster == [one, "nats://t0k3n@n2:4222"]  # nats-py takes the list as its server pool
    with pytest.raises(SettingsError, match=r"^HUBBUB_NATS_URL is not a .*nats://.* URL: 'http://\*\*\*@n2:4222'"):
        load_settings({"HUBBUB_NATS_URL": f"{one},http://t0k3n@n2:4222"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUBBUB_PORT", "eighty"),
        ("HUBBUB_DB_POOL_MAX", "10.5"),
        ("HUBBUB_MAX_REQUEST_BYTES", "1MB"),
        ("HUBBUB_LOG_LEVEL", "verbose"),
    ],
)
def test_a_malformed_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}: "):
        load_settings({variable: value})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HUBBUB_PORT": "70000"}, "HUBBUB_PORT must be between 0 and 65535"),
        ({"HUBBUB_DB_POOL_MIN": "5", "HUBBUB_DB_POOL_MAX": "2"}, "HUBBUB_DB_POOL_MIN must be >= 1"),
        ({"HUBBUB_READ_WAIT_TIMEOUT_S": "-1"}, "HUBBUB_READ_WAIT_TIMEOUT_S must be >= 0"),
        ({"HUBBUB_EVENT_STORE": "kurrentdb"}, "needs HUBBUB_KURRENTDB_URL"),
        ({"HUBBUB_SEARCH_BACKEND": "opensearch"}, "needs HUBBUB_OPENSEARCH_URL"),
    ],
)
def test_out_of_range_and_incomplete_settings_say_how_to_fix_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)
