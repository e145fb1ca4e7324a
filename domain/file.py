"""Files: one stream per file, ``file-{id}``: its upload, where it is shared, its deletion.

The bytes live in the blob store under a key the server made up (never the name); the stream
holds what the app knows about them. Rules where API.md is silent, chosen like Slack:
- a file belongs to its workspace and to its uploader; only the uploader may attach it to a
  message, and only in a channel of the same workspace. Posting the message appends
  ``file.shared`` to the file's stream in the same append, so a file is visible in a channel
  exactly when a live message there lists it. Deleting the message appends ``file.unshared``.
- who may see a file: its uploader, and whoever may see a channel where it is shared now.
  Everyone else gets 404, as for a file that does not exist.
- deleting a file (uploader, or a workspace admin who can see it) leaves a tombstone in the
  messages that list it; its blobs are removed right after (``file.blobs_removed`` records it),
  since no message can use them any more. Deleting again records nothing.
- the original name is metadata only: its last path component, control and invisible format
  characters removed, at most 255 UTF-8 bytes (extension kept). It never reaches a path.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

import msgspec

from domain.decider import Decider
from domain.errors import DomainError, Forbidden, NotFound
from domain.events import Event

MAX_NAME_BYTES = 255
DEFAULT_NAME = "file"
_DROPPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, bidi overrides and zero-widths, lone surrogates, line breaks


class Thumbnail(msgspec.Struct, frozen=True, kw_only=True):
    px: int
    """The box it fits in (360 or 1024)."""
    key: str
    width: int
    height: int
    mime: str
    size: int


class FileUploaded(Event, frozen=True, tag="file.uploaded"):
    file_id: str
    workspace_id: str
    uploader_id: str
    name: str
    size: int
    mime: str
    sha256: str
    storage_key: str
    width: int | None = None
    height: int | None = None
    thumbnails: list[Thumbnail] = []
    thumbnail_error: str | None = None
    """Why an image got no thumbnails (truncated, too many pixels); the file is kept all the same."""


class FileShared(Event, frozen=True, tag="file.shared"):
    file_id: str
    workspace_id: str
    channel_id: str
    message_id: str
    shared_by: str


class FileUnshared(Event, frozen=True, tag="file.unshared"):
    file_id: str
    channel_id: str
    message_id: str


class FileDeleted(Event, frozen=True, tag="file.deleted"):
    file_id: str
    workspace_id: str
    deleted_by: str
    channel_ids: tuple[str, ...] = ()
    """The channels where live messages listed the file (they show its tombstone now); empty in
    events recorded before this field was."""


class FileBlobsRemoved(Event, frozen=True, tag="file.blobs_removed"):
    file_id: str
    keys: list[str]


FileEvent = FileUploaded | FileShared | FileUnshared | FileDeleted | FileBlobsRemoved


@dataclass(frozen=True)
class File:
    file_id: str | None = None
    workspace_id: str | None = None
    uploader_id: str | None = None
    keys: tuple[str, ...] = ()
    """The original's blob key first, then the thumbnails'."""
    shares: Mapping[str, str] = field(default_factory=dict)
    """message id -> channel id, for the live messages that list the file"""
    deleted: bool = False
    blobs_removed: bool = False
    uploaded: FileUploaded | None = None
    """The upload as recorded (a repeated upload is answered from it)."""

    @property
    def exists(self) -> bool:
        return self.file_id is not None and not self.deleted

    @property
    def channel_ids(self) -> frozenset[str]:
        return frozenset(self.shares.values())


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str
    workspace_id: str
    uploader_id: str
    name: str
    size: int
    mime: str
    sha256: str
    storage_key: str
    width: int | None = None
    height: int | None = None
    thumbnails: tuple[Thumbnail, ...] = ()
    thumbnail_error: str | None = None


class Share(msgspec.Struct, frozen=True, kw_only=True):
    """Attach the file to a message being posted in ``channel_id``; ``actor_sees_file``: whether the
    poster may see the file through a channel it is shared in (403 rather than 404 if not theirs)."""

    actor_id: str
    workspace_id: str
    channel_id: str
    message_id: str
    actor_sees_file: bool = False


class Unshare(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str


class Delete(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_is_admin: bool = False
    actor_sees_file: bool = False


class RemoveBlobs(msgspec.Struct, frozen=True, kw_only=True):
    pass


FileCommand = Upload | Share | Unshare | Delete | RemoveBlobs


class FileTooLarge(DomainError):
    status = 413
    title = "File too large"


class QuotaExceeded(DomainError):
    status = 413
    title = "Workspace storage quota exceeded"


def file_stream(file_id: str) -> str:
    return f"file-{file_id}"


def clean_name(raw: str | None) -> str:
    """The name to keep: the last path component (either slash), without control, format
    (bidi override, zero-width) or line-break characters, whitespace runs made one space,
    trimmed, at most ``MAX_NAME_BYTES`` UTF-8 bytes with the extension kept; ``file`` if nothing
    is left."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rpartition("/")[2]
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED)
    name = " ".join(name.split()).rstrip(". ")  # trailing dots and spaces: Windows drops them
    return _truncated(name) or DEFAULT_NAME


def _truncated(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext if dot and stem and len(ext) <= 16 else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    head = (stem if suffix else name).encode()[:room].decode(errors="ignore")
    return head + suffix


def decide(state: File, command: FileCommand) -> Sequence[Event]:
    match command:
        case Upload():
            return _upload(state, command)
        case Share():
            return _share(state, command)
        case Unshare():
            return _unshare(state, command)
        case Delete():
            return _delete(state, command)
        case RemoveBlobs():
            return _remove_blobs(state)
        case _:
            assert_never(command)


def _upload(state: File, c: Upload) -> Sequence[Event]:
    if state.file_id is not None:
        raise DomainError("a file with this id exists already; upload with another Idempotency-Key")
    if c.size <= 0:
        raise DomainError("the file is empty; send at least one byte", field="file")
    return [
        FileUploaded(
            file_id=c.file_id,
            workspace_id=c.workspace_id,
            uploader_id=c.uploader_id,
            name=clean_name(c.name),
            size=c.size,
            mime=c.mime,
            sha256=c.sha256,
            storage_key=c.storage_key,
            width=c.width,
            height=c.height,
            thumbnails=list(c.thumbnails),
            thumbnail_error=c.thumbnail_error,
        )
    ]


def _share(state: File, c: Share) -> Sequence[Event]:
    if not state.exists or state.workspace_id != c.workspace_id:
        raise NotFound("no such file in this workspace", field="file_ids")
    if state.uploader_id != c.actor_id:
        if c.actor_sees_file:
            raise Forbidden("only the uploader can attach a file; ask them to share it", field="file_ids")
        raise NotFound("no such file in this workspace", field="file_ids")
    if c.message_id in state.shares:
        return []
    assert state.file_id is not None
    return [
        FileShared(
            file_id=state.file_id,
            workspace_id=c.workspace_id,
            channel_id=c.channel_id,
            message_id=c.message_id,
            shared_by=c.actor_id,
        )
    ]


def _unshare(state: File, c: Unshare) -> Sequence[Event]:
    channel_id = state.shares.get(c.message_id)
    if channel_id is None or state.file_id is None or state.deleted:
        return []
    return [FileUnshared(file_id=state.file_id, channel_id=channel_id, message_id=c.message_id)]


def _delete(state: File, c: Delete) -> Sequence[Event]:
    uploader = state.uploader_id == c.actor_id
    if state.file_id is None or not (uploader or c.actor_sees_file):
        raise NotFound("no such file")
    if not (uploader or c.actor_is_admin):
        raise Forbidden("only the uploader or a workspace admin can delete a file")
    if state.deleted:
        return []
    assert state.workspace_id is not None
    return [
        FileDeleted(
            file_id=state.file_id,
            workspace_id=state.workspace_id,
            deleted_by=c.actor_id,
            channel_ids=tuple(sorted(set(state.shares.values()))),
        )
    ]


def _remove_blobs(state: File) -> Sequence[Event]:
    if not state.deleted or state.blobs_removed or state.file_id is None:
        return []
    return [FileBlobsRemoved(file_id=state.file_id, keys=list(state.keys))]


def evolve(state: File, event: Event) -> File:
    if not isinstance(event, FileEvent):
        return state
    match event:
        case FileUploaded():
            keys = (event.storage_key, *(t.key for t in event.thumbnails))
            return File(event.file_id, event.workspace_id, event.uploader_id, keys, uploaded=event)
        case FileShared():
            return replace(state, shares={**state.shares, event.message_id: event.channel_id})
        case FileUnshared():
            return replace(state, shares={m: c for m, c in state.shares.items() if m != event.message_id})
        case FileDeleted():
            return replace(state, deleted=True, shares={})
        case FileBlobsRemoved():
            return replace(state, blobs_removed=True)
        case _:
            assert_never(event)


FILE: Decider[File, FileCommand] = Decider("file", File(), evolve, decide)
