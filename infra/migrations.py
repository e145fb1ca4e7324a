"""Numbered SQL migrations (``infra/migrations/NNNN_name.sql``), applied in order and recorded.

Safe to run from several processes at once: a session advisory lock admits one migrator at a
time, and each file is applied in the same transaction as its ``schema_migrations`` row.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import structlog

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_KEY = 7243001


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        if not number.isdigit():
            raise ValueError(f"migration {path.name} must start with a number, like 0002_{path.name}")
        found.append((int(number), name, path))
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"two migrations in {directory} share a number: {sorted(numbers)}")
    return found


async def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the names applied."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for number, name, path in migration_files(directory):
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name))
                log.info("migration.applied", version=number, name=name)
                applied.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied
