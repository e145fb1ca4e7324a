"""``files``: every uploaded file's metadata and the messages that share it.

Reads: ``file.uploaded``, ``file.shared``, ``file.unshared``, ``file.deleted``, ``file.blobs_removed``.
Writes: ``files`` (one row per file: name, size, type, sha256, blob keys, image size and
thumbnails, deletion) and ``file_shares`` (one row per live message that lists a file, with its
channel: who may download a file is decided from these rows and ``projections/visibility.py``).
Read here for the commands: a workspace's usage (``workspace_usage``, for its quota) and the deleted
files whose blobs are still to remove (``unpurged_files``).

Idempotency: the runtime commits rows and checkpoint together; besides, an upload or share that
exists already inserts nothing, and unsharing, deleting and marking blobs removed are the same
whether applied once or twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from domain.events import RecordedEvent
from domain.file import FileBlobsRemoved, FileDeleted, FileShared, FileUnshared, FileUploaded
from infra.db import Statement, run_statements

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files{s} (
    file_id         text        NOT NULL,
    workspace_id    text        NOT NULL,
    uploader_id     text        NOT NULL,
    name            text        NOT NULL,
    size            bigint      NOT NULL,
    mime            text        NOT NULL,
    sha256          text        NOT NULL,
    storage_key     text        NOT NULL,
    width           integer,
    height          integer,
    thumbnails      jsonb       NOT NULL DEFAULT '[]',
    thumbnail_error text,
    created_at      timestamptz NOT NULL,
    deleted         boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    deleted_by      text,
    blobs_removed   boolean     NOT NULL DEFAULT false,
    position        bigint      NOT NULL,
    CONSTRAINT files{s}_pkey PRIMARY KEY (file_id)
);
CREATE INDEX IF NOT EXISTS files{s}_workspace_idx ON files{s} (workspace_id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS files{s}_unpurged_idx ON files{s} (file_id) WHERE deleted AND NOT blobs_removed;
CREATE TABLE IF NOT EXISTS file_shares{s} (
    file_id    text        NOT NULL,
    message_id text        NOT NULL,
    channel_id text        NOT NULL,
    shared_by  text        NOT NULL,
    shared_at  timestamptz NOT NULL,
    CONSTRAINT file_shares{s}_pkey PRIMARY KEY (file_id, message_id)
);
CREATE INDEX IF NOT EXISTS file_shares{s}_channel_idx ON file_shares{s} (channel_id);
"""

_UPLOADED = """
INSERT INTO files{s} (file_id, workspace_id, uploader_id, name, size, mime, sha256, storage_key, width, height,
                      thumbnails, thumbnail_error, created_at, position)
VALUES (%(file_id)s, %(workspace_id)s, %(uploader_id)s, %(name)s, %(size)s, %(mime)s, %(sha256)s, %(storage_key)s,
        %(width)s, %(height)s, %(thumbnails)s, %(thumbnail_error)s, %(at)s, %(position)s)
ON CONFLICT (file_id) DO NOTHING
"""
_SHARED = """
INSERT INTO file_shares{s} (file_id, message_id, channel_id, shared_by, shared_at)
VALUES (%(file_id)s, %(message_id)s, %(channel_id)s, %(shared_by)s, %(at)s)
ON CONFLICT DO NOTHING
"""
_UNSHARED = "DELETE FROM file_shares{s} WHERE file_id = %(file_id)s AND message_id = %(message_id)s"
_DELETED = (
    """UPDATE files{s} SET deleted = true, deleted_at = %(at)s, deleted_by = %(deleted_by)s
       WHERE file_id = %(file_id)s AND NOT deleted""",
    "DELETE FROM file_shares{s} WHERE file_id = %(file_id)s",
)
_BLOBS_REMOVED = "UPDATE files{s} SET blobs_removed = true WHERE file_id = %(file_id)s"
_USAGE = "SELECT coalesce(sum(size), 0) FROM files WHERE workspace_id = %s AND NOT deleted"
_UNPURGED = "SELECT file_id FROM files WHERE deleted AND NOT blobs_removed ORDER BY file_id LIMIT %s"


def _statements(recorded: RecordedEvent) -> list[tuple[str, dict]]:
    at = recorded.meta.occurred_at or recorded.recorded_at
    match recorded.event:
        case FileUploaded() as e:
            return [
                (
                    _UPLOADED,
                    {
                        "file_id": e.file_id,
                        "workspace_id": e.workspace_id,
                        "uploader_id": e.uploader_id,
                        "name": e.name,
                        "size": e.size,
                        "mime": e.mime,
                        "sha256": e.sha256,
                        "storage_key": e.storage_key,
                        "width": e.width,
                        "height": e.height,
                        "thumbnails": Jsonb(msgspec.to_builtins(e.thumbnails)),
                        "thumbnail_error": e.thumbnail_error,
                        "at": at,
                        "position": recorded.position,
                    },
                )
            ]
        case FileShared() as e:
            return [
                (
                    _SHARED,
                    {
                        "file_id": e.file_id,
                        "message_id": e.message_id,
                        "channel_id": e.channel_id,
                        "shared_by": e.shared_by,
                        "at": at,
                    },
                )
            ]
        case FileUnshared() as e:
            return [(_UNSHARED, {"file_id": e.file_id, "message_id": e.message_id})]
        case FileDeleted() as e:
            params = {"file_id": e.file_id, "at": at, "deleted_by": e.deleted_by}
            return [(statement, params) for statement in _DELETED]
        case FileBlobsRemoved() as e:
            return [(_BLOBS_REMOVED, {"file_id": e.file_id})]
    return []


class Files:
    name = "files"
    tables: Sequence[str] = ("files", "file_shares")

    def schema(self, suffix: str = "") -> str:
        return _SCHEMA.format(s=suffix)

    async def handle(self, conn: psycopg.AsyncConnection, events: Sequence[RecordedEvent], suffix: str = "") -> None:
        await run_statements(conn, self.statements(events, suffix))

    def statements(self, events: Sequence[RecordedEvent], suffix: str = "") -> list[Statement]:
        return [
            (statement.format(s=suffix), params) for recorded in events for statement, params in _statements(recorded)
        ]


async def workspace_usage(pool: AsyncConnectionPool, workspace_id: str) -> int:
    """Bytes of the workspace's files that are not deleted (for the quota)."""
    async with pool.connection() as conn:
        cur = await conn.execute(_USAGE, (workspace_id,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def unpurged_files(pool: AsyncConnectionPool, limit: int = 100) -> list[str]:
    """Deleted files whose blobs are not recorded as removed yet."""
    async with pool.connection() as conn:
        cur = await conn.execute(_UNPURGED, (limit,))
        return [r[0] for r in await cur.fetchall()]
