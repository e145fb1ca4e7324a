"""The blob store contract, over both backends: local disk, and S3 through moto's server over real
HTTP with real s3fs (``s3_server`` in ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from infra.blobs import S3_PART_SIZE, WRITE_BATCH, BlobStore, open_blob_store


@pytest.fixture(params=["file", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "file":
        store = open_blob_store(f"file://{tmp_path}/blobs")
    else:
        s3 = request.getfixturevalue("s3_server")
        store = open_blob_store(
            f"{s3['blob_url']}-{uuid.uuid4().hex[:6]}",
            s3_endpoint_url=s3["s3_endpoint_url"],
            s3_region=s3["s3_region"],
            s3_access_key_id=s3["s3_access_key_id"],
            s3_secret_access_key=s3["s3_secret_access_key"],
        )
    yield store
    await store.close()


async def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


def key() -> str:
    return f"ws/{uuid.uuid4()}/blob"


async def test_put_then_read_gives_the_same_bytes_and_size(blobs: BlobStore) -> None:
    k = key()
    await blobs.put(k, b"hello, blob", "text/plain")
    assert await read_all(blobs, k) == b"hello, blob"
    assert await blobs.size(k) == 11


async def test_a_streamed_write_of_many_chunks_is_one_blob(blobs: BlobStore) -> None:
    k, data = key(), os.urandom(2 * S3_PART_SIZE + WRITE_BATCH + 12_345)  # several S3 parts, a short last one
    writer = await blobs.writer(k, "application/octet-stream")
    for i in range(0, len(data), 64 << 10):
        await writer.write(data[i : i + (64 << 10)])
    assert await blobs.size(k) is None  # nothing under the key before commit
    await writer.commit()
    assert await blobs.size(k) == len(data)
    assert hashlib.sha256(await read_all(blobs, k)).digest() == hashlib.sha256(data).digest()


async def test_a_discarded_write_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    k = key()
    writer = await blobs.writer(k)
    await writer.write(os.urandom(S3_PART_SIZE + WRITE_BATCH))  # far enough for an S3 part to be sent
    await writer.write(b"more")
    await writer.discard()
    await writer.discard()  # twice is fine
    assert await blobs.size(k) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # local: no .part file either


async def test_a_discarded_s3_write_leaves_no_multipart_upload(s3_server: dict[str, str]) -> None:
    import boto3

    prefix = f"mpu-{uuid.uuid4().hex[:6]}"
    store = open_blob_store(
        f"s3://{s3_server['bucket']}/{prefix}",
        s3_endpoint_url=s3_server["s3_endpoint_url"],
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    try:
        writer = await store.writer("ws/f/blob")
        await writer.write(os.urandom(S3_PART_SIZE + WRITE_BATCH))
        await writer.write(os.urandom(S3_PART_SIZE))
        await writer.discard()
    finally:
        await store.close()
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    uploads = client.list_multipart_uploads(Bucket=s3_server["bucket"], Prefix=prefix).get("Uploads", [])
    assert uploads == []
    assert client.list_objects_v2(Bucket=s3_server["bucket"], Prefix=prefix).get("KeyCount") == 0


async def test_an_upload_cut_off_by_a_crash_is_swept_once_older_than_the_cutoff(
    blobs: BlobStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kept, k = key(), key()
    await blobs.put(kept, b"a committed blob")
    writer = await blobs.writer(k)
    await writer.write(os.urandom(S3_PART_SIZE + WRITE_BATCH))  # an S3 multipart upload begins; a .part on disk
    await writer.write(os.urandom(WRITE_BATCH))  # the next batch: it returns once the one before is written
    try:
        now = dt.datetime.now(dt.UTC)
        if request.node.callspec.params["blobs"] == "file":
            # moto answers every multipart upload's Initiated as 2010-11-10, so on its S3 an upload
            # is never younger than a cutoff; that side of the rule is shown on disk only.
            assert await blobs.sweep_leftovers(now - dt.timedelta(days=1)) == 0  # still being written, for all we know
        assert await blobs.sweep_leftovers(now + dt.timedelta(minutes=1)) == 1
        assert await blobs.sweep_leftovers(now + dt.timedelta(minutes=1)) == 0
        assert await read_all(blobs, kept) == b"a committed blob"
        assert await blobs.size(k) is None
        assert [p.name for p in tmp_path.rglob("*") if p.is_file()] in ([], ["blob"])  # local: only the committed one
    finally:
        with contextlib.suppress(Exception):
            await writer.discard()


async def test_a_sweep_on_s3_aborts_only_the_uploads_under_its_own_prefix(s3_server: dict[str, str]) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    prefix, bucket = f"sweep-{uuid.uuid4().hex[:6]}", s3_server["bucket"]
    ours = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/ws/f/original")["UploadId"]
    theirs = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}-other/ws/f/original")["UploadId"]
    store = open_blob_store(
        f"s3://{bucket}/{prefix}",
        s3_endpoint_url=s3_server["s3_endpoint_url"],
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    try:
        assert await store.sweep_leftovers(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == 1
    finally:
        await store.close()
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert theirs in left and ours not in left
    client.abort_multipart_upload(Bucket=bucket, Key=f"{prefix}-other/ws/f/original", UploadId=theirs)


async def test_ranges_read_exactly_the_bytes_asked_for(blobs: BlobStore) -> None:
    k, data = key(), bytes(range(256)) * 4096  # 1 MiB: several read chunks
    await blobs.put(k, data)
    assert await read_all(blobs, k, 0, 1) == data[:1]
    assert await read_all(blobs, k, 1000, 300_000) == data[1000:300_000]
    assert await read_all(blobs, k, len(data) - 5) == data[-5:]


async def test_delete_removes_blobs_and_ignores_missing_ones(blobs: BlobStore) -> None:
    a, b = key(), key()
    await blobs.put(a, b"a")
    await blobs.put(b, b"b")
    await blobs.delete([a, b, key()])
    assert await blobs.size(a) is None and await blobs.size(b) is None


async def test_a_key_cannot_leave_the_store(blobs: BlobStore) -> None:
    for bad in ("../outside", "ws/../../outside", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            await blobs.put(bad, b"x")


async def test_blocking_readers_run_in_the_store_threads(blobs: BlobStore) -> None:
    k = key()
    await blobs.put(k, b"0123456789")

    def read_tail() -> bytes:
        with blobs.open_sync(k) as handle:
            handle.seek(6)
            return handle.read()

    assert await blobs.call(read_tail) == b"6789"


async def test_a_presigned_url_serves_the_blob_with_the_headers_asked_for(blobs: BlobStore) -> None:
    k = key()
    await blobs.put(k, b"<html>not to be rendered</html>", "text/html")
    url = await blobs.presigned_url(
        k, expires_s=300, content_type="application/octet-stream", disposition='attachment; filename="x.html"'
    )
    if blobs.url.startswith("file://"):
        assert url is None  # local disk: the app streams it
        return
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["300"]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"<html>not to be rendered</html>"
        assert response.headers["Content-Disposition"] == 'attachment; filename="x.html"'
        assert response.headers["Content-Type"] == "application/octet-stream"
