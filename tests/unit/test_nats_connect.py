from infra.nats_connect import connect_options


def test_the_token_is_taken_out_of_the_urls_and_passed_for_every_server() -> None:
    options = connect_options(["nats://s3cret@127.0.0.1:4222", "nats://127.0.0.1:4223"])
    assert options == {"servers": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"], "token": "s3cret"}


def test_one_url_without_credentials_is_left_alone() -> None:
    assert connect_options("nats://127.0.0.1:4222") == {"servers": ["nats://127.0.0.1:4222"]}


def test_user_and_password_stay_in_the_url() -> None:
    assert connect_options("tls://ann:pw@nats.example.com:4222") == {"servers": ["tls://ann:pw@nats.example.com:4222"]}
