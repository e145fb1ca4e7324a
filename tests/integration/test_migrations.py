from __future__ import annotations

import asyncio
import uuid

import psycopg

from infra.migrations import migrate, migration_files
from tests.conftest import _with_database


async def test_concurrent_migrators_apply_each_file_once(service_urls: dict[str, str]) -> None:
    name = f"hubbub_mig_{uuid.uuid4().hex[:10]}"
    admin = service_urls["postgres"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin, name)
    try:
        results = await asyncio.gather(*(migrate(url) for _ in range(4)))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(migration_files())]
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [n for n, _, _ in migration_files()]
        assert await migrate(url) == []
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
