"""Upload and delete files, and attach them to messages: the command side of *Files* in API.md.

``POST /workspaces/{ws}/files`` (multipart, part ``file``): the bytes are streamed into the blob
store under a key the server makes up (``{ws}/{file}/{random}/original``), images get their
thumbnails, and only then is ``file.uploaded`` appended: the blob is written first, the event
after. Any failure before or at the append (a bad body, a limit, a rejected append) deletes
what was written, so an aborted upload leaves neither a blob nor metadata. The one exception is
an append whose outcome is unknown (the connection broke during it): the blobs stay, since the
event may reference them. Under an ``Idempotency-Key`` the file id is derived from the key, and a
repeat has its body hashed, not stored: the same file is answered from the first upload, another
one is 422.

Attaching (``file_ids`` on a post) appends ``file.shared`` to each file's stream in the same
``append_many`` as ``message.posted``: the message and its files' visibility come together or
not at all. Deleting the message appends ``file.unshared`` the same way.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import structlog
from litestar import Controller, Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath

from commands.access import workspace_role
from commands.auth import authenticate
from commands.edge import Services, services_of
from commands.file_purge import purge
from commands.handlers import context, context_of, dispatch
from commands.shell import CommandShell, Context, Entry
from commands.uploads import Limits, Received, body_chunks, boundary_of, hash_only, receive_file
from domain import access
from domain import file as f
from domain.errors import DomainError, NotFound
from domain.filetypes import is_image
from domain.idempotency import KEYS, key_stream
from domain.message import could_be_id
from domain.session import Principal
from infra.blobs import BlobStore, BlobWriter
from infra.eventstore.port import WrongExpectedVersion
from infra.http import with_position
from infra.ids import new_id
from projections.files import workspace_usage
from projections.shapes import thumbnail_url
from projections.visibility import shared_with

log = structlog.get_logger(__name__)

UPLOAD_NAMESPACE = uuid.UUID("2f4e9c3a-8b1d-4e6f-a7c2-5d3b9e1f0a64")


class UploadedOut(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    name: str
    size: int
    mime: str
    sha256: str
    position: int
    width: int | None = None
    height: int | None = None
    thumbnail_url: str | None = None


@dataclass
class UploadOperation(Operation):
    """The upload's body in the OpenAPI document (the route reads the body itself, so Litestar
    cannot infer it)."""

    def __post_init__(self) -> None:
        file_part = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description="the file")
        form = Schema(type=OpenAPIType.OBJECT, properties={"file": file_part}, required=["file"])
        self.request_body = RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True)


class FileDeletedOut(msgspec.Struct, frozen=True):
    id: str
    deleted: bool
    position: int


class Stored:
    """What one upload attempt wrote, so that it can all be deleted again."""

    def __init__(self, blobs: BlobStore, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix
        self.keys: list[str] = []

    @property
    def original(self) -> str:
        return f"{self.prefix}/original"

    async def open_original(self, mime: str, observe: Callable[[bytes], object]) -> BlobWriter:
        self.keys.append(self.original)
        return await self.blobs.writer(self.original, mime, observe)

    async def put(self, name: str, data: bytes, mime: str) -> str:
        key = f"{self.prefix}/{name}"
        self.keys.append(key)
        await self.blobs.put(key, data, mime)
        return key

    async def remove(self) -> None:
        if self.keys:
            # Shielded: a cancelled request still leaves nothing behind.
            await asyncio.shield(self.blobs.delete(self.keys))


async def limits_for(services: Services, workspace_id: str) -> Limits:
    quota = services.settings.workspace_quota_bytes
    if quota is None:
        return Limits(services.settings.max_upload_bytes)
    used = await workspace_usage(services.pool, workspace_id) + services.uploads.of(workspace_id)
    return Limits(services.settings.max_upload_bytes, room=quota - used)


def upload_file_id(workspace_id: str, user_id: str, key: str) -> str:
    return str(uuid.uuid5(UPLOAD_NAMESPACE, f"{workspace_id}\n{user_id}\n{key}"))


def uploaded_out(event: f.FileUploaded, position: int) -> UploadedOut:
    thumb = thumbnail_url(event.file_id) if event.thumbnails else None
    return UploadedOut(
        event.file_id, event.name, event.size, event.mime, event.sha256, position, event.width, event.height, thumb
    )


async def thumbnails(services: Services, stored: Stored, mime: str) -> dict[str, object]:
    """Width, height and thumbnails of an image (stored next to it); nothing for other files."""
    if not is_image(mime):
        return {}
    started = time.perf_counter()
    facts = await services.thumbnailer.describe(services.blobs.source(stored.original))
    made = []
    for thumb in facts.thumbnails:
        key = await stored.put(f"thumb-{thumb.px}", thumb.data, thumb.mime)
        made.append(
            f.Thumbnail(
                px=thumb.px, key=key, width=thumb.width, height=thumb.height, mime=thumb.mime, size=len(thumb.data)
            )
        )
    log.info(
        "file.thumbnailed",
        key=stored.original,
        thumbnails=len(made),
        error=facts.error,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return {"width": facts.width, "height": facts.height, "thumbnails": tuple(made), "thumbnail_error": facts.error}


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


class FileCommands(Controller):
    path = "/"
    tags = ["files"]

    @post(
        "/workspaces/{workspace_id:str}/files",
        status_code=201,
        operation_id="uploadFile",
        request_max_body_size=None,  # the upload enforces its own cap while streaming (commands/uploads.py)
        operation_class=UploadOperation,
        description="multipart/form-data with the file in a part named `file`; streamed, never held in memory.",
    )
    async def upload(self, request: Request, workspace_id: FromPath[str]) -> Response[UploadedOut]:
        services = services_of(request)
        principal = await authenticate(services.shell, request.headers.get("authorization"))
        user = principal.user_id
        if await workspace_role(services.shell, workspace_id, user) is None:
            raise NotFound("no such workspace")
        boundary = boundary_of(request.headers.get("content-type"))
        limits = await limits_for(services, workspace_id)
        limits.check_body(content_length(request))
        key = request.headers.get("idempotency-key")
        file_id = upload_file_id(workspace_id, user, key) if key else new_id()
        if key is not None and (await services.shell.load(KEYS, key_stream(user, key))).version > 0:
            return await repeated_upload(request, services.shell, user, file_id, boundary, limits)
        stored = Stored(services.blobs, f"{workspace_id}/{file_id}/{secrets.token_hex(8)}")
        with services.uploads.hold(workspace_id, min(content_length(request) or 0, limits.cap)):
            received, extra = await store_upload(request, services, stored, boundary, limits)
        command = f.Upload(
            file_id=file_id,
            workspace_id=workspace_id,
            uploader_id=user,
            name=received.name,
            size=received.size,
            mime=received.mime,
            sha256=received.sha256,
            storage_key=stored.original,
            **extra,
        )  # type: ignore[arg-type]
        ctx = context(request, user, file_body(received))
        outcome = await append_upload(services.shell, stored, command, ctx, key is None)
        assert outcome.state.uploaded is not None
        log.info(
            "file.uploaded",
            file_id=file_id,
            workspace_id=workspace_id,
            size=received.size,
            mime=received.mime,
            position=outcome.position,
        )
        return with_position(
            Response(uploaded_out(outcome.state.uploaded, outcome.position), status_code=201), outcome.position
        )

    @delete("/files/{file_id:str}", status_code=200, operation_id="deleteFile")
    async def delete_file(
        self,
        request: Request,
        file_id: FromPath[str],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
    ) -> Response[FileDeletedOut]:
        user, shell = principal.user_id, services.shell
        if not could_be_id(file_id):
            raise NotFound("no such file")

        async def make(_: None) -> f.Delete:
            state = (await shell.load(f.FILE, f.file_stream(file_id))).state
            role = await workspace_role(shell, state.workspace_id or "", user)
            if state.file_id is None or role is None:
                raise NotFound("no such file")
            sees = state.uploader_id == user
            if not sees:
                async with services.pool.connection() as conn:
                    sees = await shared_with(conn, file_id, user)
            return f.Delete(actor_id=user, actor_is_admin=access.is_admin(role), actor_sees_file=sees)

        decided = await dispatch(shell, context(request, user), f.Delete, file_id, make)
        await purge(shell, services.blobs, file_id, context_of(user, request.headers.get))  # not the request's key
        return with_position(Response(FileDeletedOut(file_id, True, decided.position)), decided.position)


def file_body(received: Received) -> dict[str, str]:
    """What an upload's Idempotency-Key is tied to besides the route: the file's name and bytes."""
    return {"name": received.name, "sha256": received.sha256}


async def repeated_upload(
    request: Request, shell: CommandShell, user: str, file_id: str, boundary: bytes, limits: Limits
) -> Response[UploadedOut]:
    """An upload under a used key: the body is read for its hash only, nothing is stored; the same
    file is answered as the first time, any other request under the key is 422. (Within the size
    cap only: the quota already counts the first upload.)"""
    received = await receive_file(
        body_chunks(request.receive, Limits(limits.cap)), boundary, Limits(limits.cap), hash_only
    )
    decided = await shell.replay([(f.FILE, f.file_stream(file_id), ())], context(request, user, file_body(received)))
    assert decided is not None, "the key's record exists"
    uploaded = decided.states[0].uploaded
    assert uploaded is not None  # the same request: an upload of this file under this id
    return with_position(Response(uploaded_out(uploaded, decided.position), status_code=201), decided.position)


async def store_upload(
    request: Request, services: Services, stored: Stored, boundary: bytes, limits: Limits
) -> tuple[Received, dict[str, object]]:
    """The body's file in the blob store, with its thumbnails; on any failure nothing is left."""
    try:
        received = await receive_file(body_chunks(request.receive, limits), boundary, limits, stored.open_original)
        return received, await thumbnails(services, stored, received.mime)
    except BaseException:
        await stored.remove()
        raise


async def append_upload(shell: CommandShell, stored: Stored, command: f.Upload, ctx: Context, new: bool):
    """Append ``file.uploaded``; the blobs are removed again if the append is refused, or if a
    racing repeat of the same Idempotency-Key got there first (it is answered instead)."""
    try:
        outcome = await shell.handle(f.FILE, f.file_stream(command.file_id), command, ctx, new=new)
    except (DomainError, WrongExpectedVersion):
        await stored.remove()
        raise
    except BaseException:
        log.warning("file.upload_outcome_unknown", file_id=command.file_id, keys=stored.keys)
        raise
    if outcome.repeated:
        await stored.remove()
    return outcome


# -- attaching to messages ----------------------------------------------------------------------


async def share_entries(
    services: Services, file_ids: list[str], user_id: str, workspace_id: str, channel_id: str, message_id: str
) -> list[Entry]:
    """The file streams to decide on with a post that lists ``file_ids`` (one ``Share`` each)."""
    if not all(could_be_id(i) for i in file_ids):
        raise NotFound("no such file in this workspace", field="file_ids")
    loaded = await services.shell.load_many([(f.FILE, f.file_stream(i)) for i in file_ids])
    entries: list[Entry] = []
    for file_id, state in zip(file_ids, (lo.state for lo in loaded), strict=True):
        sees = False
        if state.exists and state.uploader_id != user_id:  # only to say 403 rather than 404
            async with services.pool.connection() as conn:
                sees = await shared_with(conn, file_id, user_id)
        share = f.Share(
            actor_id=user_id,
            workspace_id=workspace_id,
            channel_id=channel_id,
            message_id=message_id,
            actor_sees_file=sees,
        )
        entries.append((f.FILE, f.file_stream(file_id), [share]))
    return entries


def unshare_entries(file_ids: tuple[str, ...], message_id: str) -> list[Entry]:
    return [(f.FILE, f.file_stream(i), [f.Unshare(message_id=message_id)]) for i in file_ids]
