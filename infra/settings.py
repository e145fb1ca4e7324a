"""Settings: one msgspec Struct read once from ``HUBBUB_*`` environment variables.

A URL left unset means "start the embedded server for it" under ``hubbub dev``; ``hubbub serve``
requires the external ones. A bad value fails at start with a message that says how to fix it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from infra.client_address import parse_trusted_proxies

PREFIX = "HUBBUB_"


class SettingsError(ValueError):
    """A setting is missing, unknown or malformed; the message says how to fix it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = ".hubbub"
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    nats_url: str | list[str] | None = None  # several, comma-separated: a cluster (nats-py's server pool)
    redis_url: str | None = None
    blob_url: str | None = None
    event_store: Literal["postgres", "kurrentdb"] = "postgres"
    kurrentdb_url: str | None = None
    search_backend: Literal["postgres", "opensearch"] = "postgres"
    opensearch_url: str | None = None
    opensearch_index: str = "hubbub-messages"  # the alias searched and written; its index is "{alias}-v1"
    smtp_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    db_pool_min: int = 2
    db_pool_max: int = 10
    read_wait_timeout_s: float = 2.0
    max_request_bytes: int = 1_048_576
    allowed_origins: list[str] = []
    rate_post_per_s: float = 5.0
    rate_post_burst: int = 20
    rate_login_per_s: float = 0.2
    rate_login_burst: int = 5
    rate_login_account_attempts: int = 10  # per account from anywhere: this many at once, then this many a window
    rate_login_account_window_s: float = 900.0
    rate_register_per_s: float = 0.02  # registrations per client address (IPv4, or IPv6 /64)
    rate_register_burst: int = 20
    trusted_proxies: list[str] = []  # IPs / CIDR networks whose X-Forwarded-For is believed (none by default)
    insecure_fast_passwords: bool = False  # tests only: the cheapest argon2 parameters
    ws_heartbeat_s: float = 30.0  # clients heartbeat this often; 2.5x that without one closes with 4009
    ws_hello_timeout_s: float = 10.0
    ws_send_queue: int = 1024  # frames queued per socket before it is closed with 4008
    ws_resume_max_events: int = 200_000  # a resume that would replay more log positions starts afresh
    max_upload_bytes: int = 100 * 1024 * 1024  # a larger file is refused with 413 as soon as it passes this
    workspace_quota_bytes: int | None = None  # total size of a workspace's files (unset: no quota)
    s3_endpoint_url: str | None = None  # S3-compatible server (unset: AWS)
    s3_region: str | None = None
    s3_access_key_id: str | None = None  # unset: the usual AWS credential chain (env, profile, instance role)
    s3_secret_access_key: str | None = None
    presigned_url_ttl_s: int = 300  # how long an S3 download link works (at most 300)
    max_image_pixels: int = 50_000_000  # larger images (decompression bombs) get no thumbnail
    thumbnail_workers: int = 1  # threads making thumbnails
    blob_sweep_grace_s: float = 86_400.0  # the sweep removes unfinished uploads older than this


_SCHEMES = {
    "database_url": ("postgresql", "postgres"),
    "nats_url": ("nats", "tls", "ws", "wss"),
    "redis_url": ("redis", "rediss", "unix"),
    "blob_url": ("file", "s3"),
    "s3_endpoint_url": ("http", "https"),
    "kurrentdb_url": ("kurrentdb", "kurrentdb+discover", "esdb", "esdb+discover"),
    "opensearch_url": ("http", "https"),
    "smtp_url": ("smtp", "smtps"),
}
_LISTS = {"allowed_origins", "trusted_proxies"}
_URL_LISTS = {"nats_url"}  # one URL stays a str; several become a list
_POSITIVE = (
    "rate_post_per_s",
    "rate_post_burst",
    "rate_login_per_s",
    "rate_login_burst",
    "rate_login_account_attempts",
    "rate_login_account_window_s",
    "rate_register_per_s",
    "rate_register_burst",
    "ws_heartbeat_s",
    "ws_hello_timeout_s",
    "ws_send_queue",
    "ws_resume_max_events",
    "max_upload_bytes",
    "max_image_pixels",
    "thumbnail_workers",
    "blob_sweep_grace_s",
)
MAX_PRESIGNED_TTL_S = 300


def blob_url(settings: Settings) -> str:
    """Where file bytes go: ``HUBBUB_BLOB_URL``, else ``file://<data dir>/blobs``."""
    return settings.blob_url or f"file://{os.path.abspath(settings.data_dir)}/blobs"


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win (CLI flags)."""
    environ = os.environ if environ is None else environ
    raw = _read_env(environ)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    _check_urls(settings)
    _check_ranges(settings)
    _check_proxies(settings)
    return settings


def _read_env(environ: Mapping[str, str]) -> dict[str, object]:
    known = {env_name(f): f for f in Settings.__struct_fields__}
    raw: dict[str, object] = {}
    for key, value in environ.items():
        if not key.startswith(PREFIX):
            continue
        if key not in known:
            raise SettingsError(f"{key} is not a Hubbub setting; unset it or use one of: {', '.join(sorted(known))}")
        field = known[key]
        items = [item.strip() for item in value.split(",") if item.strip()]
        if field in _LISTS or (field in _URL_LISTS and len(items) > 1):
            raw[field] = items
        elif value.strip() != "":
            raw[field] = value.strip()
    return raw


def _explain(exc: msgspec.ValidationError) -> str:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.port`"; name the variable instead.
    message = str(exc)
    if " - at `$." in message:
        detail, _, path = message.rpartition(" - at `$.")
        field = path.rstrip("`").split("[")[0]
        return f"{env_name(field)}: {detail}"
    return message


def _check_urls(settings: Settings) -> None:
    for field, schemes in _SCHEMES.items():
        value = getattr(settings, field)
        for url in [value] if isinstance(value, str) else value or ():
            if urlsplit(url).scheme not in schemes:
                wanted = " or ".join(f"{s}://" for s in schemes)
                raise SettingsError(f"{env_name(field)} is not a {wanted} URL: {redacted(url)!r}")
    if settings.event_store == "kurrentdb" and not settings.kurrentdb_url:
        raise SettingsError("HUBBUB_EVENT_STORE=kurrentdb needs HUBBUB_KURRENTDB_URL (esdb://host:2113?Tls=false)")
    if settings.search_backend == "opensearch" and not settings.opensearch_url:
        raise SettingsError("HUBBUB_SEARCH_BACKEND=opensearch needs HUBBUB_OPENSEARCH_URL (http://host:9200)")


def redacted(url: str) -> str:
    """``url`` fit for a message: its userinfo and query (passwords, tokens) become ``***``,
    as in ``postgresql://***@db/hubbub``. Works on malformed URLs too: those are the ones we echo."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, question, _ = rest.partition("?")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}{question and '?***'}"


def _check_proxies(settings: Settings) -> None:
    try:
        parse_trusted_proxies(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"HUBBUB_TRUSTED_PROXIES: {exc}") from None


def _check_ranges(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"HUBBUB_PORT must be between 0 and 65535, not {settings.port}")
    if settings.db_pool_min < 1 or settings.db_pool_max < settings.db_pool_min:
        raise SettingsError("HUBBUB_DB_POOL_MIN must be >= 1 and <= HUBBUB_DB_POOL_MAX")
    if settings.read_wait_timeout_s < 0:
        raise SettingsError("HUBBUB_READ_WAIT_TIMEOUT_S must be >= 0 seconds")
    for field in _POSITIVE:
        value = getattr(settings, field)
        if not (math.isfinite(value) and value > 0):
            raise SettingsError(f"{env_name(field)} must be a number > 0, not {value}")
    if settings.workspace_quota_bytes is not None and settings.workspace_quota_bytes <= 0:
        raise SettingsError("HUBBUB_WORKSPACE_QUOTA_BYTES must be > 0 bytes, or unset for no quota")
    if not 1 <= settings.presigned_url_ttl_s <= MAX_PRESIGNED_TTL_S:
        raise SettingsError(f"HUBBUB_PRESIGNED_URL_TTL_S must be between 1 and {MAX_PRESIGNED_TTL_S} seconds")
