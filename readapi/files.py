"""A file's metadata, bytes and thumbnail: the query side of *Files* in API.md (read model: the
``files`` projection; who may see what: ``projections/visibility.py``).

A user may see a file they uploaded (while they are in its workspace) and a file shared in a
channel they may see now; anything else answers 404, like a file that does not exist.

Downloads are served so that a browser never runs what someone uploaded: the type is the one
sniffed at upload, ``X-Content-Type-Options: nosniff`` stops the browser from guessing another,
only images and plain text are ``inline`` (everything else, HTML, SVG and scripts included, is
an ``attachment``), and every answer carries ``Content-Security-Policy: sandbox``. On local disk
the app streams the bytes, with single ``Range`` requests (206, 416); on S3 the app checks,
then redirects to a presigned URL (at most 5 minutes) that makes S3 answer with the same type
and disposition (and serves ``Range`` itself).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
import psycopg
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.response import Stream
from psycopg_pool import AsyncConnectionPool

from domain.access import looks_like_id
from domain.errors import DomainError, NotFound
from domain.file import Thumbnail
from domain.filetypes import served_type, shown_inline
from domain.session import Principal
from infra.blobs import BlobStore
from infra.settings import Settings
from projections.consistency import ReadConsistency
from projections.shapes import API_PREFIX, thumbnail_url
from projections.visibility import FILE_VISIBLE

_VISIBLE_FILE = f"""
SELECT f.file_id, f.workspace_id, f.uploader_id, f.name, f.size, f.mime, f.sha256, f.storage_key, f.width, f.height,
       f.thumbnails, f.created_at
FROM files f
WHERE f.file_id = %(file_id)s AND NOT f.deleted AND {FILE_VISIBLE}
"""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, max-age=0, must-revalidate",
}


@dataclass(frozen=True)
class FileRow:
    file_id: str
    workspace_id: str
    uploader_id: str
    name: str
    size: int
    mime: str
    sha256: str
    storage_key: str
    width: int | None
    height: int | None
    thumbnails: list[Thumbnail]
    created_at: dt.datetime


class ThumbnailOut(msgspec.Struct, frozen=True):
    size: int
    width: int
    height: int
    mime: str
    url: str


class FileMeta(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    workspace_id: str
    uploader_id: str
    name: str
    size: int
    mime: str
    sha256: str
    created_at: dt.datetime
    content_url: str
    width: int | None = None
    height: int | None = None
    thumbnail_url: str | None = None
    thumbnails: list[ThumbnailOut] = []


class RangeNotSatisfiable(DomainError):
    status = 416
    title = "Range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the file has {size:,} bytes; ask for a range that starts before its end")
        self.headers = {"Content-Range": f"bytes */{size}"}


def content_url(file_id: str) -> str:
    return f"{API_PREFIX}/files/{file_id}/content"


async def visible_file(conn: psycopg.AsyncConnection, file_id: str, user_id: str) -> FileRow:
    """The file if ``user_id`` may see it; 404 otherwise (missing, deleted, or not theirs to see)."""
    if not looks_like_id(file_id):
        raise NotFound("no such file")
    cur = await conn.execute(_VISIBLE_FILE, {"file_id": file_id, "user_id": user_id})
    row = await cur.fetchone()
    if row is None:
        raise NotFound("no such file")
    return FileRow(*row[:10], msgspec.convert(row[10], list[Thumbnail]), row[11])


def meta(row: FileRow) -> FileMeta:
    thumbs = [
        ThumbnailOut(t.px, t.width, t.height, t.mime, f"{thumbnail_url(row.file_id)}?size={t.px}")
        for t in row.thumbnails
    ]
    return FileMeta(
        row.file_id,
        row.workspace_id,
        row.uploader_id,
        row.name,
        row.size,
        row.mime,
        row.sha256,
        row.created_at,
        content_url(row.file_id),
        row.width,
        row.height,
        thumbnail_url(row.file_id) if thumbs else None,
        thumbs,
    )


def content_disposition(kind: str, name: str) -> str:
    """``kind; filename="ascii"; filename*=UTF-8''...`` (RFC 6266): every browser gets a safe name."""
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single ``bytes=`` range; None for the whole file (no
    header, another unit, several ranges or a malformed one: RFC 9110 lets a server ignore those);
    ``RangeNotSatisfiable`` for a range that starts at or after the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    if not first:  # the last N bytes
        if not last.isdigit():
            return None
        if int(last) == 0:
            raise RangeNotSatisfiable(size)
        return max(size - int(last), 0), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last) + 1 if last else size
    if start >= size:
        raise RangeNotSatisfiable(size)
    return (start, min(end, size)) if end > start else None


class FileQueries(Controller):
    path = "/files"
    tags = ["files"]

    @get("/{file_id:str}", operation_id="getFile")
    async def metadata(
        self,
        file_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
    ) -> FileMeta:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            return meta(await visible_file(conn, file_id, principal.user_id))

    @get(
        "/{file_id:str}/content",
        operation_id="getFileContent",
        description="The bytes (Range supported), or on S3 a redirect to a presigned URL valid for at most 5 minutes.",
    )
    async def content(
        self,
        request: Request,
        file_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        services: NamedDependency[Any],
    ) -> Response[Any]:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            row = await visible_file(conn, file_id, principal.user_id)
        kind = "inline" if shown_inline(row.mime, row.name) else "attachment"
        blob = Blob(row.storage_key, row.size, served_type(row.mime), content_disposition(kind, row.name), row.sha256)
        return await serve(request, services.blobs, services.settings, blob)

    @get("/{file_id:str}/thumbnail", operation_id="getFileThumbnail")
    async def thumbnail(
        self,
        request: Request,
        file_id: FromPath[str],
        principal: NamedDependency[Principal],
        pool: NamedDependency[AsyncConnectionPool],
        consistency: NamedDependency[ReadConsistency],
        services: NamedDependency[Any],
        size: Annotated[
            int, Parameter(ge=1, le=4096, description="the box the thumbnail should fit (360 or 1024)")
        ] = 360,
    ) -> Response[Any]:
        await consistency.wait(principal.since_position)
        async with pool.connection() as conn:
            row = await visible_file(conn, file_id, principal.user_id)
        if not row.thumbnails:
            raise NotFound("this file has no thumbnail (only PNG, JPEG, GIF and WebP images get one)")
        thumb = next((t for t in row.thumbnails if t.px >= size), row.thumbnails[-1])
        name = f"{row.name.rpartition('.')[0] or row.name}-{thumb.px}.{thumb.mime.rpartition('/')[2]}"
        blob = Blob(
            thumb.key, thumb.size, thumb.mime, content_disposition("inline", name), f"{row.sha256[:32]}-{thumb.px}"
        )
        return await serve(request, services.blobs, services.settings, blob)


@dataclass(frozen=True)
class Blob:
    key: str
    size: int
    content_type: str
    disposition: str
    tag: str


async def serve(request: Request, blobs: BlobStore, settings: Settings, blob: Blob) -> Response[Any]:
    """The blob as a download: a presigned redirect where the store has one, else streamed."""
    url = await blobs.presigned_url(
        blob.key, expires_s=settings.presigned_url_ttl_s, content_type=blob.content_type, disposition=blob.disposition
    )
    if url is not None:
        return Response(None, status_code=302, headers={"Location": url, **SECURITY_HEADERS})
    etag = f'"{blob.tag}"'
    headers = {**SECURITY_HEADERS, "ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": blob.disposition}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(None, status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    wanted = byte_range(request.headers.get("range"), blob.size) if if_range in (None, etag) else None
    start, end = wanted or (0, blob.size)
    headers["Content-Length"] = str(end - start)
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    # Litestar adds "; charset=utf-8" to text/* itself.
    return Stream(
        blobs.read(blob.key, start, end),
        status_code=206 if wanted else 200,
        media_type=blob.content_type.partition(";")[0],
        headers=headers,
    )
