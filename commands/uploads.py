"""A multipart/form-data request body streamed into the blob store, one chunk at a time.

The body is read straight from the ASGI ``receive`` channel and fed to ``multipart``'s push
parser (Litestar's own form parsing would first spool the file to a temporary file). The part
named ``file`` goes to a ``BlobWriter`` as it arrives: its first ``SNIFF_BYTES`` decide its type,
its size is counted and its sha256 computed on the way (in the writer's thread, beside the event loop), and the upload stops with 413 as soon as it passes
the size cap or the workspace's remaining quota, without reading the rest. Other form fields
are skipped (at most ``MAX_FIELDS_BYTES`` of them). Anything malformed is a 4xx problem, and a
failure at any point discards what was written: the caller gets a committed blob or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from litestar.types import Receive
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from domain.errors import DomainError
from domain.file import FileTooLarge, QuotaExceeded, clean_name
from domain.filetypes import SNIFF_BYTES, sniff
from infra.blobs import BlobWriter

FIELD = "file"
MAX_FIELDS_BYTES = 64 << 10
"""Everything in the body that is not the file's bytes (boundaries, part headers, other fields)."""
MAX_PARTS = 16


class MalformedUpload(DomainError):
    status = 400
    title = "Malformed upload"


class NotMultipart(DomainError):
    status = 415
    title = "Unsupported media type"


class UploadAborted(DomainError):
    status = 400
    title = "Upload aborted"


@dataclass(frozen=True)
class Limits:
    cap: int
    """The most bytes a file may have (413 ``FileTooLarge`` past it)."""
    room: int | None = None
    """What is left of the workspace's quota (413 ``QuotaExceeded`` past it); None: no quota."""

    def check(self, size: int) -> None:
        if size > self.cap:
            raise FileTooLarge(f"a file may have at most {self.cap:,} bytes", field=FIELD)
        if self.room is not None and size > self.room:
            raise QuotaExceeded(
                f"the workspace has {max(self.room, 0):,} bytes of storage left; delete files or ask an admin for more",
                field=FIELD,
            )

    def check_body(self, length: int | None) -> None:
        """A Content-Length that cannot fit is refused before a byte of the body is read."""
        if length is not None and length - MAX_FIELDS_BYTES > 0:
            self.check(length - MAX_FIELDS_BYTES)


@dataclass
class Reservations:
    """Bytes of uploads in flight in this process, per workspace, so that concurrent uploads do not
    overrun the quota together (across processes the quota can be passed by what is in flight)."""

    held: dict[str, int] = field(default_factory=dict)

    def of(self, workspace_id: str) -> int:
        return self.held.get(workspace_id, 0)

    @contextlib.contextmanager
    def hold(self, workspace_id: str, size: int) -> Iterator[None]:
        self.held[workspace_id] = self.of(workspace_id) + size
        try:
            yield
        finally:
            left = self.of(workspace_id) - size
            if left:
                self.held[workspace_id] = left
            else:
                self.held.pop(workspace_id, None)


@dataclass(frozen=True)
class Received:
    name: str
    size: int
    sha256: str
    mime: str


def boundary_of(content_type: str | None) -> bytes:
    from litestar._multipart import parse_content_header  # the same header parser Litestar uses for forms

    kind, options = parse_content_header(content_type or "")
    if kind != "multipart/form-data":
        raise NotMultipart(f"send the file as multipart/form-data with a part named {FIELD!r}, not {kind or 'nothing'}")
    boundary = options.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise MalformedUpload("the Content-Type has no valid multipart boundary")
    return boundary.encode("latin-1")


async def body_chunks(receive: Receive, limits: Limits) -> AsyncIterator[bytes]:
    """The request body as it arrives; 400 if the client goes away, 413 once the body cannot
    hold a file within the limits any more."""
    total = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise UploadAborted("the client went away before the upload was complete")
        body = message.get("body", b"")
        if body:
            total += len(body)
            limits.check_body(total)
            yield body
        if not message.get("more_body", False):
            return


class _FilePart:
    """The ``file`` part: sniffed, hashed, counted and written as it arrives."""

    def __init__(
        self,
        segment: MultipartSegment,
        limits: Limits,
        open_writer: Callable[[str, Callable[[bytes], object]], Awaitable[BlobWriter]],
    ) -> None:
        self.name = clean_name(segment.filename)
        self.limits = limits
        self.open_writer = open_writer
        self.head = bytearray()
        self.hash = hashlib.sha256()
        self.size = 0
        self.mime = ""
        self.writer: BlobWriter | None = None

    async def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.limits.check(self.size)
        if self.writer is not None:
            await self.writer.write(data)
            return
        self.head += data
        if len(self.head) >= SNIFF_BYTES:
            await self._start(complete=False)

    async def _start(self, complete: bool) -> None:
        self.mime = sniff(bytes(self.head[:SNIFF_BYTES]), complete=complete)
        self.writer = await self.open_writer(self.mime, self.hash.update)  # hashed in the writer's thread
        head, self.head = bytes(self.head), bytearray()
        await self.writer.write(head)

    async def finish(self) -> Received:
        if self.size == 0:
            raise DomainError("the file is empty; send at least one byte", field=FIELD)
        if self.writer is None:
            await self._start(complete=True)
        assert self.writer is not None
        await self.writer.commit()  # every chunk has been hashed once this returns
        return Received(self.name, self.size, self.hash.hexdigest(), self.mime)

    async def discard(self) -> None:
        if self.writer is not None:
            await self.writer.discard()


async def receive_file(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    limits: Limits,
    open_writer: Callable[[str, Callable[[bytes], object]], Awaitable[BlobWriter]],
) -> Received:
    """Stream the ``file`` part of the body into the writer ``open_writer(mime, observe)`` gives, and commit
    it once the whole body has been read and found well-formed."""
    part: _FilePart | None = None
    received: Received | None = None
    try:
        with PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
            current: _FilePart | bool | None = None  # the file part, False for another part
            async for chunk in chunks:
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        current = _segment(event, part, limits, open_writer)
                        part = current or part
                    elif event is None:
                        current = None
                    elif current:
                        await current.feed(event)
        # Leaving the parser's block without an error closed it, which raises on an incomplete body.
        if part is None:
            raise DomainError(f"the form has no part named {FIELD!r}; send the file in it", field=FIELD)
        received = await part.finish()
        return received
    except (ParserError, ParserLimitReached) as exc:
        raise MalformedUpload(f"the multipart body is malformed: {exc}") from None
    finally:
        if received is None and part is not None:
            await part.discard()


class _Hashing:
    """A writer that keeps nothing: its bytes are only observed (hashed)."""

    def __init__(self, observe: Callable[[bytes], object]) -> None:
        self.observe = observe

    async def write(self, data: bytes) -> None:
        self.observe(data)

    async def commit(self) -> None:
        pass

    async def discard(self) -> None:
        pass


async def hash_only(mime: str, observe: Callable[[bytes], object]) -> BlobWriter:
    """An ``open_writer`` for ``receive_file`` that stores nothing: a repeated upload's body,
    read only for its name and hash."""
    return _Hashing(observe)


def _segment(
    segment: MultipartSegment,
    part: _FilePart | None,
    limits: Limits,
    open_writer: Callable[[str, Callable[[bytes], object]], Awaitable[BlobWriter]],
) -> _FilePart | bool:
    if segment.name != FIELD:
        return False
    if part is not None:
        raise MalformedUpload(f"send one file per request (the form has two parts named {FIELD!r})")
    return _FilePart(segment, limits, open_writer)
