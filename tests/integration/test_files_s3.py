"""Files on S3 (moto's server over real HTTP, real s3fs): the same upload, and downloads that are
checked by the app and then redirected to a presigned URL forcing the type and disposition."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from litestar.testing import AsyncTestClient

from hubbub.app import create_app
from infra.settings import load_settings
from tests.integration.conftest import register
from tests.integration.test_files_api import V1, jpeg, problem, raw_upload, team, upload


@pytest.fixture(scope="module")
def prefix(s3_server: dict[str, str]) -> str:
    return f"files-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def api(
    service_urls: dict[str, str], migrated_url: str, s3_server: dict[str, str], prefix: str
) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings(
        {},
        database_url=migrated_url,
        nats_url=service_urls["nats"],
        redis_url=service_urls["redis"],
        insecure_fast_passwords=True,
        rate_register_per_s=1000.0,
        rate_register_burst=1000,
        blob_url=f"s3://{s3_server['bucket']}/{prefix}",
        s3_endpoint_url=s3_server["s3_endpoint_url"],
        s3_region=s3_server["s3_region"],
        s3_access_key_id=s3_server["s3_access_key_id"],
        s3_secret_access_key=s3_server["s3_secret_access_key"],
        presigned_url_ttl_s=120,
        # moto answers every multipart upload's start as 2010-11-10, so the app's sweep at start
        # would abort this module's uploads in flight (a 500 on CompleteMultipartUpload): a grace
        # that date cannot pass. The sweep itself is tested on moto in tests/contract.
        blob_sweep_grace_s=1e9,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


def s3(s3_server: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def objects(s3_server: dict[str, str], prefix: str) -> list[str]:
    listed = s3(s3_server).list_objects_v2(Bucket=s3_server["bucket"], Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


async def get(api: AsyncTestClient, user: Any, path: str, position: int = 0) -> Any:
    """A GET that shows the redirect instead of following it (the test client follows by default)."""
    return await api.get(
        f"{V1}{path}", headers={**user.auth, "X-Hubbub-Position": str(position)}, follow_redirects=False
    )


def fetch(url: str, **headers: str) -> tuple[int, bytes, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.status, response.read(), response.headers


async def test_downloads_redirect_to_a_short_lived_url_with_forced_headers(
    api: AsyncTestClient, s3_server: dict[str, str], prefix: str
) -> None:
    t = await team(api)
    photo = await upload(api, t.owner, t.workspace_id, jpeg(1600, 1200), name="photo.jpg")
    assert photo["thumbnail_url"]
    assert len(objects(s3_server, f"{prefix}/{t.workspace_id}/{photo['id']}/")) == 3  # original and two thumbnails
    redirect = await get(api, t.owner, f"/files/{photo['id']}/content", photo["position"])
    assert redirect.status_code == 302 and redirect.headers["x-content-type-options"] == "nosniff"
    url = redirect.headers["location"]
    assert int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) == 120
    status, body, headers = fetch(url)
    assert status == 200 and body == jpeg(1600, 1200)
    assert headers["Content-Type"] == "image/jpeg" and headers["Content-Disposition"].startswith("inline")
    status, body, _ = fetch(url, Range="bytes=0-9")
    assert status == 206 and body == jpeg(1600, 1200)[:10]
    thumb = await get(api, t.owner, f"/files/{photo['id']}/thumbnail?size=1024", photo["position"])
    assert thumb.status_code == 302
    assert fetch(thumb.headers["location"])[2]["Content-Type"] == "image/jpeg"


async def test_active_content_on_s3_is_an_attachment(api: AsyncTestClient) -> None:
    t = await team(api)
    page = await upload(
        api, t.owner, t.workspace_id, b"<html><script>alert(1)</script>", name="x.png", content_type="image/png"
    )
    url = (await get(api, t.owner, f"/files/{page['id']}/content", page["position"])).headers["location"]
    _, _, headers = fetch(url)
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Disposition"].startswith('attachment; filename="x.png"')


async def test_no_redirect_for_those_who_may_not_see_it(api: AsyncTestClient) -> None:
    t = await team(api)
    up = await upload(api, t.owner, t.workspace_id, b"private")
    stranger = await register(api, "Stranger")
    response = await get(api, stranger, f"/files/{up['id']}/content", up["position"])
    problem(response, 404)
    assert "location" not in response.headers


async def test_deleting_removes_the_objects_and_an_abort_leaves_none(
    api: AsyncTestClient, s3_server: dict[str, str], prefix: str
) -> None:
    t = await team(api)
    up = await upload(api, t.owner, t.workspace_id, os.urandom(100_000))
    assert objects(s3_server, f"{prefix}/{t.workspace_id}/")
    assert (await api.delete(f"{V1}/files/{up['id']}", headers=t.owner.auth)).status_code == 200
    assert objects(s3_server, f"{prefix}/{t.workspace_id}/") == []
    head = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="half"\r\n\r\n'
    status, _, _ = await raw_upload(api, t.owner, t.workspace_id, iter([head, os.urandom(9 << 20)]), disconnect=True)
    assert status == 400
    assert objects(s3_server, f"{prefix}/{t.workspace_id}/") == []
    uploads = s3(s3_server).list_multipart_uploads(Bucket=s3_server["bucket"], Prefix=f"{prefix}/{t.workspace_id}/")
    assert uploads.get("Uploads", []) == []
