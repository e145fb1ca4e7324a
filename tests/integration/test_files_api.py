"""Files over HTTP (API.md *Files*): upload, download, thumbnails, sharing, who may see what,
deletion, and every bad input ending in a 4xx problem with nothing left behind.

The module's app keeps its blobs in a temp dir (``blob_dir``) and caps uploads at 2 MiB, so the
limits are cheap to reach; "nothing left behind" is checked on that dir and on the ``files``
read model. Bodies that a client library would not send (malformed, cut off, endless) go to the
ASGI app directly (``raw_upload``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from PIL import Image

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration import messaging_helpers as helpers
from tests.integration.conftest import User, register
from tests.integration.messaging_helpers import problem

V1 = "/api/v1"
CAP = 2 << 20


def settings_for(service_urls: dict[str, str], url: str, blob_dir: Path, **extra: Any) -> Any:
    return load_settings(
        {},
        database_url=url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_post_per_s=1000.0,
        rate_post_burst=1000,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
        blob_url=f"file://{blob_dir}",
        max_upload_bytes=CAP,
        **extra,
    )


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="module")
async def api(service_urls: dict[str, str], migrated_url: str, blob_dir: Path) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(settings_for(service_urls, migrated_url, blob_dir))) as client:
        yield client


# -- helpers ----------------------------------------------------------------------------------------


def jpeg(width: int = 2000, height: int = 1500, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(out, "JPEG", exif=exif)
    return out.getvalue()


def png(width: int = 400, height: int = 300) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 128, 0, 128)).save(out, "PNG")
    return out.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


async def upload(
    api: AsyncTestClient,
    user: User,
    ws: str,
    data: bytes,
    name: str = "f.bin",
    content_type: str = "application/octet-stream",
    status: int = 201,
    **headers: str,
) -> dict:
    response = await api.post(
        f"{V1}/workspaces/{ws}/files", files={"file": (name, data, content_type)}, headers={**user.auth, **headers}
    )
    assert response.status_code == status, response.text
    if status == 201:
        assert response.headers["x-hubbub-position"] == str(response.json()["position"])
    return response.json()


async def get(api: AsyncTestClient, user: User, path: str, position: int = 0, **headers: str) -> Any:
    return await api.get(f"{V1}{path}", headers={**helpers.at(user, position), **headers})


async def post(
    api: AsyncTestClient, user: User, channel: str, file_ids: list[str], text: str = "", status: int = 201
) -> dict:
    response = await api.post(
        f"{V1}/channels/{channel}/messages", json={"text": text, "file_ids": file_ids}, headers=user.auth
    )
    assert response.status_code == status, response.text
    return response.json()


def stored_under(blob_dir: Path, ws: str) -> list[Path]:
    return sorted(p for p in (blob_dir / ws).rglob("*") if p.is_file())


async def file_rows(pool: Any, ws: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM files WHERE workspace_id = %s", (ws,))
        return (await cur.fetchone())[0]


async def team(api: AsyncTestClient, *names: str) -> helpers.Team:
    made = await helpers.create_workspace(api, await register(api, "Owner"))
    for name in names:
        role = "guest" if name.startswith("Guest") else "admin" if name.startswith("Admin") else "member"
        await helpers.join_workspace(api, made, name, role=role)
    return made


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def raw_upload(
    api: AsyncTestClient,
    user: User,
    ws: str,
    chunks: Iterator[bytes],
    *,
    content_type: str = "multipart/form-data; boundary=b0undary",
    content_length: int | None = None,
    disconnect: bool = False,
) -> tuple[int, dict, int]:
    """The upload route called over ASGI with ``chunks`` as the body, read only as the app asks;
    with ``disconnect`` the client goes away when the chunks run out. Status, JSON body, and how
    many chunks the app read."""
    headers = [(b"authorization", f"Bearer {user.token}".encode()), (b"content-type", content_type.encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{V1}/workspaces/{ws}/files",
        "raw_path": f"{V1}/workspaces/{ws}/files".encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    read, answer, status = 0, bytearray(), 0
    pending = next(chunks, None)

    async def receive() -> dict:
        nonlocal read, pending
        if pending is None:
            return (
                {"type": "http.disconnect"} if disconnect else {"type": "http.request", "body": b"", "more_body": False}
            )
        chunk, pending = pending, next(chunks, None)
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": pending is not None or disconnect}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer.extend(message.get("body", b""))

    # On the loop the app lives on (the test client's portal), as the client's own requests are.
    api.blocking_portal.call(api.app, scope, receive, send)  # type: ignore[arg-type]
    return status, json.loads(answer or b"{}"), read


# -- upload and download ---------------------------------------------------------------------------


async def test_a_file_comes_back_byte_for_byte_with_its_sha256(api: AsyncTestClient) -> None:
    t = await team(api)
    data = os.urandom(300_000)
    up = await upload(api, t.owner, t.workspace_id, data, name="report.bin")
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["size"] == len(data)
    assert (up["name"], up["mime"]) == ("report.bin", "application/octet-stream")
    meta = (await get(api, t.owner, f"/files/{up['id']}", up["position"])).json()
    assert {k: meta[k] for k in ("id", "name", "size", "mime", "sha256", "workspace_id", "uploader_id")} == {
        "id": up["id"],
        "name": "report.bin",
        "size": len(data),
        "mime": "application/octet-stream",
        "sha256": up["sha256"],
        "workspace_id": t.workspace_id,
        "uploader_id": t.owner.id,
    }
    got = await get(api, t.owner, f"/files/{up['id']}/content", up["position"])
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data)) and got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"] == "sandbox"
    assert got.headers["content-disposition"].startswith('attachment; filename="report.bin"')


async def test_ranges_give_206_and_a_range_past_the_end_416(api: AsyncTestClient) -> None:
    t = await team(api)
    data = bytes(range(256)) * 1000
    up = await upload(api, t.owner, t.workspace_id, data)
    path = f"/files/{up['id']}/content"
    first = await get(api, t.owner, path, up["position"], Range="bytes=0-99")
    assert first.status_code == 206 and first.content == data[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{len(data)}" and first.headers["content-length"] == "100"
    assert (await get(api, t.owner, path, Range="bytes=-10")).content == data[-10:]
    middle = await get(api, t.owner, path, Range="bytes=1000-")
    assert middle.status_code == 206 and middle.content == data[1000:]
    assert (await get(api, t.owner, path, Range="bytes=5-1000000")).content == data[5:]
    past = problem(await get(api, t.owner, path, Range=f"bytes={len(data)}-"), 416)
    assert "bytes" in past["detail"]
    assert (await get(api, t.owner, path, Range=f"bytes={len(data)}-")).headers[
        "content-range"
    ] == f"bytes */{len(data)}"
    several = await get(api, t.owner, path, Range="bytes=0-1,5-6")
    assert several.status_code == 200 and several.content == data
    stale = await get(api, t.owner, path, Range="bytes=0-1", **{"If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == data
    etag = first.headers["etag"]
    assert (await get(api, t.owner, path, **{"If-None-Match": etag})).status_code == 304


async def test_an_image_gets_thumbnails_and_its_displayed_size(api: AsyncTestClient) -> None:
    t = await team(api)
    up = await upload(
        api, t.owner, t.workspace_id, jpeg(2000, 1500, orientation=6), name="photo.jpg", content_type="image/jpeg"
    )
    assert (up["mime"], up["width"], up["height"]) == ("image/jpeg", 1500, 2000)
    assert up["thumbnail_url"] == f"{V1}/files/{up['id']}/thumbnail"
    meta = (await get(api, t.owner, f"/files/{up['id']}", up["position"])).json()
    assert [(th["size"], th["width"], th["height"]) for th in meta["thumbnails"]] == [
        (360, 270, 360),
        (1024, 768, 1024),
    ]
    small = await get(api, t.owner, f"/files/{up['id']}/thumbnail", up["position"])
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    assert (
        small.headers["content-disposition"].startswith("inline")
        and small.headers["x-content-type-options"] == "nosniff"
    )
    assert Image.open(io.BytesIO(small.content)).size == (270, 360)
    large = await get(api, t.owner, f"/files/{up['id']}/thumbnail?size=1024", up["position"])
    assert Image.open(io.BytesIO(large.content)).size == (768, 1024)
    original = await get(api, t.owner, f"/files/{up['id']}/content", up["position"])
    assert (
        original.headers["content-disposition"].startswith("inline")
        and original.headers["content-type"] == "image/jpeg"
    )


async def test_the_type_comes_from_the_bytes_not_the_name_or_the_header(api: AsyncTestClient) -> None:
    t = await team(api)
    html = await upload(
        api,
        t.owner,
        t.workspace_id,
        b"<html><script>alert(1)</script></html>",
        name="cat.png",
        content_type="image/png",
    )
    assert html["mime"] == "text/html" and "thumbnail_url" not in html
    served = await get(api, t.owner, f"/files/{html['id']}/content", html["position"])
    assert served.headers["content-type"].startswith("text/html")
    assert served.headers["content-disposition"].startswith("attachment")
    assert (
        served.headers["content-security-policy"] == "sandbox" and served.headers["x-content-type-options"] == "nosniff"
    )
    image = await upload(api, t.owner, t.workspace_id, png(), name="evil.html", content_type="text/html")
    assert image["mime"] == "image/png"
    assert (
        (await get(api, t.owner, f"/files/{image['id']}/content", image["position"]))
        .headers["content-disposition"]
        .startswith("inline")
    )


@pytest.mark.parametrize(
    ("data", "name", "mime", "inline"),
    [
        ("hello \u2603\n".encode(), "notes.txt", "text/plain; charset=utf-8", True),
        (b"console.log('x')\n", "app.js", "text/plain; charset=utf-8", False),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "logo.svg", "image/svg+xml", False),
        (b"%PDF-1.4\n...", "doc.pdf", "application/pdf", False),
    ],
)
async def test_only_images_and_plain_text_are_inline(
    api: AsyncTestClient, data: bytes, name: str, mime: str, inline: bool
) -> None:
    t = await team(api)
    up = await upload(api, t.owner, t.workspace_id, data, name=name)
    served = await get(api, t.owner, f"/files/{up['id']}/content", up["position"])
    assert served.headers["content-type"] == mime
    assert served.headers["content-disposition"].split(";")[0] == ("inline" if inline else "attachment")
    assert served.headers["content-security-policy"] == "sandbox"


async def test_a_truncated_image_is_kept_without_a_thumbnail(api: AsyncTestClient) -> None:
    t = await team(api)
    data = jpeg(1200, 900)
    up = await upload(api, t.owner, t.workspace_id, data[: len(data) // 3], name="cut.jpg")
    assert (up["mime"], up["width"], up["height"]) == ("image/jpeg", 1200, 900) and "thumbnail_url" not in up
    problem(await get(api, t.owner, f"/files/{up['id']}/thumbnail", up["position"]), 404)
    assert (await get(api, t.owner, f"/files/{up['id']}/content")).content == data[: len(data) // 3]


async def test_a_decompression_bomb_is_kept_without_a_thumbnail(api: AsyncTestClient) -> None:
    t = await team(api)
    up = await upload(api, t.owner, t.workspace_id, png_bomb(), name="bomb.png")
    assert up["mime"] == "image/png" and "thumbnail_url" not in up  # Pillow refuses even to say its size
    problem(await get(api, t.owner, f"/files/{up['id']}/thumbnail", up["position"]), 404)


async def test_a_name_with_paths_and_control_characters_is_cleaned(api: AsyncTestClient) -> None:
    t = await team(api)
    up = await upload(api, t.owner, t.workspace_id, b"x", name="../../etc/\u202epass\u200bwd\r\n.txt")
    assert up["name"] == "passwd.txt"  # httpx sends the CR LF as %0D%0A, which the server decodes
    raw = multipart([("file", "..\\..\\pa\x07ss\x1bwd\x7f.txt", b"x")])
    status, body, _ = await raw_upload(api, t.owner, t.workspace_id, iter([raw]))
    assert (status, body["name"]) == (201, "passwd.txt")
    served = await get(api, t.owner, f"/files/{up['id']}/content", up["position"])
    assert served.headers["content-disposition"] == "inline; filename=\"passwd.txt\"; filename*=UTF-8''passwd.txt"
    accented = await upload(api, t.owner, t.workspace_id, b"x", name='caf\u00e9 "quoted".txt')
    served = await get(api, t.owner, f"/files/{accented['id']}/content", accented["position"])
    assert served.headers["content-disposition"] == (
        "inline; filename=\"caf_ _quoted_.txt\"; filename*=UTF-8''caf%C3%A9%20%22quoted%22.txt"
    )
    only_path = await upload(api, t.owner, t.workspace_id, b"x", name="C:\\Users\\ada\\")
    assert only_path["name"] == "file"


async def test_a_repeated_upload_under_an_idempotency_key_stores_once(api: AsyncTestClient, blob_dir: Path) -> None:
    t = await team(api)
    first = await upload(api, t.owner, t.workspace_id, b"once", **{"Idempotency-Key": "k1"})
    again = await upload(api, t.owner, t.workspace_id, b"once", **{"Idempotency-Key": "k1"})
    assert again == first
    other = await upload(api, t.owner, t.workspace_id, b"other bytes", status=422, **{"Idempotency-Key": "k1"})
    assert "Idempotency-Key" in other["detail"]  # another file under the key: refused, not answered with the first
    assert len(stored_under(blob_dir, t.workspace_id)) == 1


# -- bad input: a 4xx problem, nothing stored --------------------------------------------------------


async def nothing_stored(blob_dir: Path, pool: Any, ws: str) -> None:
    assert stored_under(blob_dir, ws) == []
    assert await file_rows(pool, ws) == 0


async def test_an_empty_file_is_422(api: AsyncTestClient, blob_dir: Path, pool: Any) -> None:
    t = await team(api)
    body = problem(
        await api.post(f"{V1}/workspaces/{t.workspace_id}/files", files={"file": ("e.txt", b"")}, headers=t.owner.auth),
        422,
    )
    assert body["errors"][0]["field"] == "file"
    await nothing_stored(blob_dir, pool, t.workspace_id)


async def test_a_file_over_the_cap_is_413_and_not_stored(api: AsyncTestClient, blob_dir: Path, pool: Any) -> None:
    t = await team(api)
    body = problem(
        await api.post(
            f"{V1}/workspaces/{t.workspace_id}/files",
            files={"file": ("big", os.urandom(CAP + 1))},
            headers=t.owner.auth,
        ),
        413,
    )
    assert f"{CAP:,} bytes" in body["detail"]
    assert (await upload(api, t.owner, t.workspace_id, os.urandom(CAP)))["size"] == CAP  # the cap itself is fine
    assert len(stored_under(blob_dir, t.workspace_id)) == 1


async def test_413_comes_as_soon_as_the_cap_is_passed(api: AsyncTestClient, blob_dir: Path, pool: Any) -> None:
    t = await team(api)
    chunk = 64 << 10
    head = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="endless"\r\n\r\n'
    endless = iter([head, *(os.urandom(chunk) for _ in range(200))])  # 12.5 MiB if it were all read
    status, body, read = await raw_upload(api, t.owner, t.workspace_id, endless)
    assert status == 413 and body["status"] == 413
    assert read <= CAP // chunk + 2  # stopped right after the cap, not at the end of the body
    await nothing_stored(blob_dir, pool, t.workspace_id)
    status, _, read = await raw_upload(api, t.owner, t.workspace_id, iter([head]), content_length=50 << 20)
    assert (status, read) == (413, 0)  # a Content-Length that cannot fit: refused before reading


async def test_an_aborted_upload_leaves_nothing(api: AsyncTestClient, blob_dir: Path, pool: Any) -> None:
    t = await team(api)
    head = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="half"\r\n\r\n'
    status, body, _ = await raw_upload(api, t.owner, t.workspace_id, iter([head, os.urandom(1 << 20)]), disconnect=True)
    assert status == 400 and body["title"] == "Upload aborted"
    await nothing_stored(blob_dir, pool, t.workspace_id)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (multipart([("file", "a.txt", b"hello")])[:-12], "multipart/form-data; boundary=b0undary", 400),  # cut off
        (b"this is not multipart at all", "multipart/form-data; boundary=b0undary", 400),
        (
            b'--b0undary\r\nContent-Disposition: form-data; name="file"\r\n' + b"X" * 10_000,
            "multipart/form-data; boundary=b0undary",
            400,
        ),
        (multipart([("file", "a.txt", b"hello")]), "multipart/form-data", 400),  # no boundary
        (b'{"file": "aGVsbG8="}', "application/json", 415),
        (multipart([("other", None, b"x"), ("notes", None, b"y")]), "multipart/form-data; boundary=b0undary", 422),
        (
            multipart([("file", "a.txt", b"one"), ("file", "b.txt", b"two")]),
            "multipart/form-data; boundary=b0undary",
            400,
        ),
    ],
)
async def test_malformed_uploads_are_4xx_and_store_nothing(
    api: AsyncTestClient, blob_dir: Path, pool: Any, body: bytes, content_type: str, status: int
) -> None:
    t = await team(api)
    got, answer, _ = await raw_upload(
        api,
        t.owner,
        t.workspace_id,
        iter([body[:5000], body[5000:]] if body[5000:] else [body]),
        content_type=content_type,
    )
    assert got == status, answer
    assert answer["status"] == status and answer["detail"]
    await nothing_stored(blob_dir, pool, t.workspace_id)


async def test_uploads_to_a_workspace_one_is_not_in_are_404(api: AsyncTestClient) -> None:
    t = await team(api)
    outsider = await register(api, "Out")
    problem(
        await api.post(f"{V1}/workspaces/{t.workspace_id}/files", files={"file": ("a", b"x")}, headers=outsider.auth),
        404,
    )
    problem(
        await api.post(f"{V1}/workspaces/{uuid.uuid4()}/files", files={"file": ("a", b"x")}, headers=t.owner.auth), 404
    )
    problem(await api.post(f"{V1}/workspaces/not-an-id/files", files={"file": ("a", b"x")}, headers=t.owner.auth), 404)
    problem(await api.post(f"{V1}/workspaces/{t.workspace_id}/files", files={"file": ("a", b"x")}), 401)


async def test_the_workspace_quota_counts_files_until_they_are_deleted(
    service_urls: dict[str, str], migrated_url: str, tmp_path: Path
) -> None:
    settings = settings_for(service_urls, migrated_url, tmp_path, workspace_quota_bytes=1000)
    async with AsyncTestClient(create_app(settings)) as api:
        t = await team(api)
        first = await upload(api, t.owner, t.workspace_id, b"x" * 600)
        await get(api, t.owner, f"/files/{first['id']}", first["position"])  # the read model has it
        body = problem(
            await api.post(
                f"{V1}/workspaces/{t.workspace_id}/files", files={"file": ("b", b"y" * 600)}, headers=t.owner.auth
            ),
            413,
        )
        assert "400 bytes of storage left" in body["detail"]
        deleted = await api.delete(f"{V1}/files/{first['id']}", headers=t.owner.auth)
        await get(api, t.owner, f"/files/{uuid.uuid4()}", deleted.json()["position"])
        assert (await upload(api, t.owner, t.workspace_id, b"y" * 600))["size"] == 600


async def test_the_app_sweeps_uploads_a_crash_cut_off_when_it_starts(
    service_urls: dict[str, str], migrated_url: str, tmp_path: Path
) -> None:
    crashed = tmp_path / "ws" / "file" / "abc" / "original.part"  # a server killed mid-upload two days ago
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(b"half an upload")
    os.utime(crashed, (time.time() - 2 * 86_400,) * 2)
    uploading = crashed.with_name("thumb-360.part")  # written a minute ago: perhaps still being written
    uploading.write_bytes(b"x")
    async with AsyncTestClient(create_app(settings_for(service_urls, migrated_url, tmp_path))):
        for _ in range(100):
            if not crashed.exists():
                break
            await asyncio.sleep(0.05)
    assert not crashed.exists() and uploading.exists()


# -- sharing and who may see a file -----------------------------------------------------------------


async def test_a_posted_message_lists_its_files_and_shares_them(api: AsyncTestClient) -> None:
    t = await team(api, "Bea")
    bea = t.people["Bea"]
    await helpers.join_channel(api, t, t.general_id, bea)
    photo = await upload(api, t.owner, t.workspace_id, jpeg(800, 600), name="p.jpg")
    doc = await upload(api, t.owner, t.workspace_id, b"text", name="d.txt")
    problem(await get(api, bea, f"/files/{photo['id']}", doc["position"]), 404)  # shared nowhere yet
    posted = await post(api, t.owner, t.general_id, [photo["id"], doc["id"]], text="look")
    message = (await get(api, bea, f"/messages/{posted['id']}", posted["position"])).json()
    assert message["files"] == [
        {
            "id": photo["id"],
            "name": "p.jpg",
            "size": photo["size"],
            "mime": "image/jpeg",
            "thumbnail_url": f"{V1}/files/{photo['id']}/thumbnail",
        },
        {"id": doc["id"], "name": "d.txt", "size": 4, "mime": "text/plain"},
    ]
    assert (await get(api, bea, f"/files/{doc['id']}/content", posted["position"])).content == b"text"
    assert (await get(api, bea, f"/files/{photo['id']}/thumbnail", posted["position"])).status_code == 200


async def test_only_the_uploader_may_attach_a_file(api: AsyncTestClient) -> None:
    t = await team(api, "Bea")
    bea = t.people["Bea"]
    await helpers.join_channel(api, t, t.general_id, bea)
    mine = await upload(api, t.owner, t.workspace_id, b"owner's")
    body = problem(
        await api.post(
            f"{V1}/channels/{t.general_id}/messages", json={"text": "", "file_ids": [mine["id"]]}, headers=bea.auth
        ),
        404,
    )  # bea cannot see it: as if it did not exist
    assert body["errors"][0]["field"] == "file_ids"
    await post(api, t.owner, t.general_id, [mine["id"]])
    problem(
        await api.post(f"{V1}/channels/{t.general_id}/messages", json={"file_ids": [mine["id"]]}, headers=bea.auth), 403
    )


async def test_attaching_is_all_or_nothing(api: AsyncTestClient) -> None:
    t = await team(api, "Bea")
    bea = t.people["Bea"]
    await helpers.join_channel(api, t, t.general_id, bea)
    good = await upload(api, t.owner, t.workspace_id, b"good")
    other = await team(api)
    foreign = await upload(api, other.owner, other.workspace_id, b"foreign")
    for bad in (
        [good["id"], str(uuid.uuid4())],
        [good["id"], "not-an-id"],
        [good["id"], foreign["id"]],
        [good["id"], good["id"]],
    ):
        problem(
            await api.post(
                f"{V1}/channels/{t.general_id}/messages", json={"text": "x", "file_ids": bad}, headers=t.owner.auth
            ),
            404 if bad[1] != good["id"] else 422,
        )
    history = (await get(api, t.owner, f"/channels/{t.general_id}/messages", good["position"])).json()
    assert history["items"] == []
    problem(await get(api, bea, f"/files/{good['id']}", good["position"]), 404)  # not shared by the refused posts


async def test_visibility_follows_the_channels_it_is_shared_in(api: AsyncTestClient) -> None:
    t = await team(api, "Bea", "Cy", "GuestGil")
    bea, cy, gil = t.people["Bea"], t.people["Cy"], t.people["GuestGil"]
    outsider = await register(api, "Out")
    public = await helpers.create_channel(api, t, t.owner, "pub")
    private = await helpers.create_channel(api, t, t.owner, "priv", private=True)
    await helpers.add_to_channel(api, t, private, t.owner, bea)
    dm = await helpers.open_dm(api, t, t.owner, cy)
    cases = {}
    for where in (public, private, dm):
        up = await upload(api, t.owner, t.workspace_id, b"secret " + where.encode())
        cases[where] = up["id"]
        posted = await post(api, t.owner, where, [up["id"]])
        t.position = max(t.position, posted["position"])

    async def sees(user: User, file_id: str) -> bool:
        statuses = {
            (await get(api, user, f"/files/{file_id}{tail}", t.position)).status_code for tail in ("", "/content")
        }
        assert len(statuses) == 1, statuses
        return statuses == {200}

    # public: every member, joined or not, but not a guest outside it nor a stranger
    assert [await sees(u, cases[public]) for u in (bea, cy, gil, outsider)] == [True, True, False, False]
    # private channel: its members only
    assert [await sees(u, cases[private]) for u in (bea, cy, gil)] == [True, False, False]
    # DM: the two people in it
    assert [await sees(u, cases[dm]) for u in (cy, bea, gil)] == [True, False, False]
    problem(await get(api, bea, f"/files/{uuid.uuid4()}", t.position), 404)
    problem(await get(api, bea, "/files/not-an-id/content", t.position), 404)
    # someone removed from the workspace sees nothing any more, not even their own uploads
    own = await upload(api, bea, t.workspace_id, b"bea's")
    removed = await api.delete(f"{V1}/workspaces/{t.workspace_id}/members/{bea.id}", headers=t.owner.auth)
    assert removed.status_code == 200, removed.text
    t.position = removed.json()["position"]
    assert [await sees(bea, cases[public]), await sees(bea, cases[private]), await sees(bea, own["id"])] == [False] * 3


async def test_deleting_the_message_unshares_its_files(api: AsyncTestClient) -> None:
    t = await team(api, "Bea")
    bea = t.people["Bea"]
    up = await upload(api, t.owner, t.workspace_id, b"oops")
    posted = await post(api, t.owner, t.general_id, [up["id"]])
    assert (await get(api, bea, f"/files/{up['id']}", posted["position"])).status_code == 200
    deleted = await api.delete(f"{V1}/messages/{posted['id']}", headers=t.owner.auth)
    assert deleted.status_code == 200, deleted.text
    problem(await get(api, bea, f"/files/{up['id']}", deleted.json()["position"]), 404)
    assert (
        await get(api, t.owner, f"/files/{up['id']}", deleted.json()["position"])
    ).status_code == 200  # still theirs
    assert (await get(api, bea, f"/messages/{posted['id']}", deleted.json()["position"])).json()["files"] == []


async def test_deleting_a_file_leaves_a_tombstone_and_removes_its_blobs(api: AsyncTestClient, blob_dir: Path) -> None:
    t = await team(api, "Bea", "AdminAnn")
    bea, ann = t.people["Bea"], t.people["AdminAnn"]
    up = await upload(api, t.owner, t.workspace_id, jpeg(600, 400), name="pic.jpg")
    hidden = await upload(api, t.owner, t.workspace_id, b"shared nowhere")
    posted = await post(api, t.owner, t.general_id, [up["id"]])
    assert len(stored_under(blob_dir, t.workspace_id)) == 4  # two originals, two thumbnails (360, 600x400 < 1024)
    problem(await api.delete(f"{V1}/files/{up['id']}", headers=bea.auth), 403)  # sees it, did not upload it
    problem(await api.delete(f"{V1}/files/{hidden['id']}", headers=ann.auth), 404)  # an admin who cannot see it
    gone = await api.delete(f"{V1}/files/{up['id']}", headers=ann.auth)  # an admin who can
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    position = gone.json()["position"]
    assert gone.headers["x-hubbub-position"] == str(position)
    assert len(stored_under(blob_dir, t.workspace_id)) == 1  # only the unshared file is left
    message = (await get(api, bea, f"/messages/{posted['id']}", position)).json()
    assert message["files"] == [{"id": up["id"], "name": "", "size": 0, "mime": "", "deleted": True}]
    for tail in ("", "/content", "/thumbnail"):
        problem(await get(api, t.owner, f"/files/{up['id']}{tail}", position), 404)
    again = await api.delete(f"{V1}/files/{up['id']}", headers=t.owner.auth)  # the uploader, again: nothing new
    assert again.status_code == 200
    refused = await api.post(
        f"{V1}/channels/{t.general_id}/messages", json={"file_ids": [up["id"]]}, headers=t.owner.auth
    )
    problem(refused, 404)
