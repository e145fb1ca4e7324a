"""The blob store port and its one adapter, over fsspec: ``file://`` (local disk, the default,
under the data dir) or ``s3://bucket/prefix`` through s3fs.

Keys are made by the server (``{workspace}/{file}/...``), never from user input. fsspec's calls
block (s3fs runs its own event loop in a thread and waits for it), so every call runs in this
store's thread pool and the app's event loop never waits on the disk or the network.

A write is all or nothing: ``writer(key)`` returns a ``BlobWriter`` whose bytes become the blob
only on ``commit()``; ``discard()`` (or an error) leaves nothing behind. On local disk the bytes
go to ``{key}.part`` and are renamed into place (same directory, so the rename is atomic); on S3
they go to a multipart upload that is completed on commit and aborted on discard. A crash
mid-upload can leave a ``.part`` file or an incomplete multipart upload, never a blob under a
real key; ``sweep_leftovers`` removes those once they are older than any upload can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")

WRITE_BATCH = 1 << 20
"""Bytes gathered, then joined, before they go to the threads: one write and one hash call per MiB,
not one per 64 KiB chunk."""
READ_CHUNK = 256 << 10
S3_PART_SIZE = 8 << 20
"""s3fs buffers a part in memory before sending it (its default is 50 MiB per open upload)."""
PART_SUFFIX = ".part"
"""A local blob being written (renamed into place on commit); ``sweep_leftovers`` removes old ones."""


@dataclass(frozen=True)
class BlobSource:
    """A blob to read in another process (fsspec file systems pickle with their settings)."""

    fs: fsspec.AbstractFileSystem
    path: str

    def open(self) -> Any:
        return self.fs.open(self.path, "rb")


class BlobWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None:
        """Make the written bytes the blob under the key."""
        ...

    async def discard(self) -> None:
        """Drop everything written; nothing is left under the key. Safe to call after a failure."""
        ...


class BlobStore(Protocol):
    """Where file bytes live. Contract: ``tests/contract/test_blobstore.py``, run over local disk
    and S3 (moto's server, over HTTP)."""

    url: str

    async def writer(
        self, key: str, content_type: str | None = None, observe: Callable[[bytes], Any] | None = None
    ) -> BlobWriter:
        """A writer for a new blob at ``key`` (``content_type`` is stored where the backend can);
        ``observe`` is called with every chunk, in order, off the event loop (e.g. a hash's update)."""
        ...

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a small blob in one call (thumbnails)."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start`` to ``end`` (exclusive; None: the end), in chunks."""
        ...

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, None if there is no blob at ``key``."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the blobs (missing ones are fine)."""
        ...

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking function (that reads blobs through ``open_sync``) in the store's threads."""
        ...

    def open_sync(self, key: str) -> Any:
        """A blocking binary file object for reading ``key``; only inside ``call``."""
        ...

    def source(self, key: str) -> BlobSource:
        """``key`` as something another process can open."""
        ...

    async def presigned_url(self, key: str, *, expires_s: int, content_type: str, disposition: str) -> str | None:
        """A URL that serves the blob directly for ``expires_s`` seconds with these response headers,
        or None where the backend cannot (local disk: the app streams it)."""
        ...

    async def sweep_leftovers(self, before: dt.datetime) -> int:
        """Remove what uploads that never finished left behind (a process killed mid-upload): ``.part``
        files last written before ``before`` on local disk, multipart uploads started before it on S3.
        Blobs under real keys are never touched. How many were removed."""
        ...

    async def close(self) -> None: ...


class FsspecBlobStore:
    def __init__(self, url: str, fs: fsspec.AbstractFileSystem, root: str, threads: int = 4) -> None:
        self.url = url
        self._fs = fs
        self._root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blobs")

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self._root}/{key}"

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def open_sync(self, key: str) -> Any:
        return self._fs.open(self._path(key), "rb")

    def source(self, key: str) -> BlobSource:
        return BlobSource(self._fs, self._path(key))

    async def writer(
        self, key: str, content_type: str | None = None, observe: Callable[[bytes], Any] | None = None
    ) -> BlobWriter:
        path = self._path(key)
        if self._local:
            return await self.call(_local_writer, self, path, observe)
        extra = {"ContentType": content_type} if content_type else {}
        handle = await self.call(lambda: self._fs.open(path, "wb", autocommit=False, block_size=S3_PART_SIZE, **extra))
        return _s3_writer(self, handle, observe)

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        writer = await self.writer(key, content_type)
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.discard()
            raise

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        handle = await self.call(self.open_sync, key)
        try:
            await self.call(handle.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                chunk = await self.call(handle.read, READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.shield(self.call(handle.close))

    async def size(self, key: str) -> int | None:
        def info() -> int | None:
            try:
                return int(self._fs.info(self._path(key))["size"])
            except FileNotFoundError:
                return None

        return await self.call(info)

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(k) for k in keys]

        def remove() -> None:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(path)
            self._fs.invalidate_cache()

        await self.call(remove)

    async def presigned_url(self, key: str, *, expires_s: int, content_type: str, disposition: str) -> str | None:
        if self._local:
            return None
        path = self._path(key)
        return await self.call(
            lambda: self._fs.sign(
                path, expiration=expires_s, ResponseContentType=content_type, ResponseContentDisposition=disposition
            )
        )

    async def sweep_leftovers(self, before: dt.datetime) -> int:
        return await self.call(self._sweep_parts if self._local else self._sweep_multipart_uploads, before)

    def _sweep_parts(self, before: dt.datetime) -> int:
        # mtime, not the start: a .part being written now is never old, however long its upload takes.
        removed, cutoff = 0, before.timestamp()
        for directory, _dirs, names in os.walk(self._root):
            for name in names:
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    if name.endswith(PART_SUFFIX) and os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
        return removed

    def _sweep_multipart_uploads(self, before: dt.datetime) -> int:
        bucket, _, prefix = self._root.partition("/")
        removed = 0
        for upload in self._multipart_uploads(bucket, f"{prefix}/" if prefix else ""):
            if upload["Initiated"] < before:
                with contextlib.suppress(FileNotFoundError):  # aborted meanwhile (s3fs: NoSuchUpload)
                    self._fs.call_s3(
                        "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed

    def _multipart_uploads(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        markers: dict[str, str] = {}
        while True:
            page = self._fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Writer:
    """Chunks gathered to ``WRITE_BATCH``; each batch is written in one thread and shown to
    ``observe`` in another, while the next batch is gathered (at most one write and one observe
    in flight: memory stays at about two batches). ``observe`` sees every chunk in order, beside
    the write rather than before it: a sha256 (hashlib lets go of the GIL) is the slowest stage
    of an upload on a CPU without SHA instructions, and the write no longer waits for it.
    ``finish`` and ``drop`` run in a thread and close the handle themselves."""

    def __init__(
        self,
        store: FsspecBlobStore,
        write: Callable[[bytes], Any],
        *,
        finish: Callable[[], None],
        drop: Callable[[], None],
        observe: Callable[[bytes], Any] | None = None,
    ) -> None:
        self._store = store
        self._write = write
        self._finish = finish
        self._drop = drop
        self._observe = observe
        self._chunks: list[bytes] = []
        self._gathered = 0
        self._pending: list[asyncio.Future[Any]] = []
        self._done = False

    async def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._gathered += len(data)
        if self._gathered >= WRITE_BATCH:
            await self._flush()

    async def _settle(self) -> None:
        """Wait for the batch in flight. Shielded: a cancelled upload leaves the threads running, and
        ``discard`` must still wait for them before it closes the handle."""
        if self._pending:
            outcomes = await asyncio.shield(asyncio.gather(*self._pending, return_exceptions=True))
            self._pending = []
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _flush(self) -> None:
        await self._settle()
        if self._chunks:
            # One call per batch, not per chunk: each call in a thread takes the GIL back when it returns,
            # and waits up to the switch interval (5 ms) for it while the event loop is parsing.
            batch = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks, self._gathered = [], 0
            self._pending = [asyncio.ensure_future(self._store.call(self._write, batch))]
            if self._observe is not None:
                self._pending.append(asyncio.ensure_future(self._store.call(self._observe, batch)))

    async def commit(self) -> None:
        await self._flush()
        await self._settle()  # the last batch
        self._done = True
        await self._store.call(self._finish)

    async def discard(self) -> None:
        if self._done:
            return
        self._done = True
        pending, self._pending = self._pending, []
        # Shielded: a cancelled upload (client gone) must still leave nothing behind.
        await asyncio.shield(self._dropped(pending))

    async def _dropped(self, pending: list[asyncio.Future[Any]]) -> None:
        await asyncio.gather(*pending, return_exceptions=True)  # the threads must be done with the handle first
        await self._store.call(self._drop)


def _local_writer(store: FsspecBlobStore, path: str, observe: Callable[[bytes], Any] | None) -> _Writer:
    part = path + PART_SUFFIX
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(part, "xb")  # noqa: SIM115 - closed by finish or drop

    def finish() -> None:
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the event that names it is appended
        handle.close()
        os.replace(part, path)  # same directory: atomic

    def drop() -> None:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)

    return _Writer(store, handle.write, finish=finish, drop=drop, observe=observe)


def _s3_writer(store: FsspecBlobStore, handle: Any, observe: Callable[[bytes], Any] | None) -> _Writer:
    def finish() -> None:
        handle.close()  # uploads the last part; with autocommit=False nothing is visible yet
        handle.commit()  # completes the multipart upload

    def drop() -> None:
        try:
            handle.discard()  # aborts the multipart upload, if one was started
        finally:  # even if that failed (e.g. swept already): or fsspec's close, also on garbage collection,
            handle.closed = True  # would try to upload the rest (and hangs there when run by the collector)

    return _Writer(store, handle.write, finish=finish, drop=drop, observe=observe)


def open_blob_store(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_access_key_id: str | None = None,
    s3_secret_access_key: str | None = None,
) -> FsspecBlobStore:
    """The store at ``url``: ``file:///abs/dir`` or ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        root = os.path.abspath(parts.netloc + parts.path if parts.netloc else parts.path)
        return FsspecBlobStore(url, LocalFileSystem(), root)
    if parts.scheme == "s3":
        import s3fs

        client_kwargs = {"region_name": s3_region} if s3_region else {}
        fs = s3fs.S3FileSystem(
            endpoint_url=s3_endpoint_url,
            key=s3_access_key_id,
            secret=s3_secret_access_key,
            client_kwargs=client_kwargs,
            default_block_size=S3_PART_SIZE,
            config_kwargs={"signature_version": "s3v4"},  # presigned URLs state X-Amz-Expires
            skip_instance_cache=True,
        )
        return FsspecBlobStore(url, fs, f"{parts.netloc}{parts.path}".rstrip("/"))
    raise ValueError(f"HUBBUB_BLOB_URL must be a file:// or s3:// URL, not {url!r}")
