"""``file.shared`` over the WebSocket: channel members hear of a file when a message shares it,
right after the message itself; people who cannot see the channel never do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import register
from tests.integration.messaging_helpers import API, create_channel, create_workspace, join_workspace
from tests.integration.test_realtime import _settings, serving, ws


@pytest.fixture(scope="module")
async def server(
    service_urls: dict[str, str], migrated_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    blobs: Path = tmp_path_factory.mktemp("blobs")
    async with serving(_settings(service_urls, migrated_url, blob_url=f"file://{blobs}")) as address:
        yield address


async def settled(api: httpx.AsyncClient, team: Any) -> None:
    """The read models have the set-up: a socket opened before would get it as live events, or find
    no tables yet on a slow start."""
    response = await api.get(
        f"{API}/workspaces/{team.workspace_id}", headers={**team.owner.auth, "X-Hubbub-Position": str(team.position)}
    )
    assert response.status_code == 200 and "x-hubbub-stale" not in response.headers, response.text


async def test_a_shared_file_reaches_the_channel_after_its_message(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as api:
        team = await create_workspace(api, await register(api, "Owner"))  # type: ignore[arg-type]
        bea = await join_workspace(api, team, "Bea")  # type: ignore[arg-type]
        cy = await join_workspace(api, team, "Cy")  # type: ignore[arg-type]
        secret = await create_channel(api, team, team.owner, "secret", private=True)  # type: ignore[arg-type]
        up = (
            await api.post(
                f"{API}/workspaces/{team.workspace_id}/files",
                files={"file": ("n.txt", b"notes")},
                headers=team.owner.auth,
            )
        ).json()
        hidden = (
            await api.post(
                f"{API}/workspaces/{team.workspace_id}/files", files={"file": ("s.txt", b"s")}, headers=team.owner.auth
            )
        ).json()
        await settled(api, team)
        async with ws(server, bea) as bea_sock, ws(server, cy) as cy_sock:
            await api.post(
                f"{API}/channels/{secret}/messages", json={"file_ids": [hidden["id"]]}, headers=team.owner.auth
            )
            posted = (
                await api.post(
                    f"{API}/channels/{team.general_id}/messages",
                    json={"text": "see", "file_ids": [up["id"]]},
                    headers=team.owner.auth,
                )
            ).json()
            # Only these: a member_joined of the team's set-up can still arrive after a socket's ready.
            message = await bea_sock.event("message.posted", "file.shared")
            shared = await bea_sock.event("message.posted", "file.shared")
            heard = await cy_sock.event("message.posted", "file.shared")  # Cy never hears of the secret file
            assert heard["type"] == "message.posted" and heard["data"]["id"] == posted["id"]
        assert message["type"] == "message.posted" and message["data"]["files"][0]["id"] == up["id"]
        assert shared["type"] == "file.shared" and shared["position"] == posted["position"]
        assert shared["channel_id"] == team.general_id
        assert shared["data"] == {
            "message_id": posted["id"],
            "file": {"id": up["id"], "name": "n.txt", "size": 5, "mime": "text/plain"},
        }


async def test_a_deleted_file_reaches_the_channels_that_listed_it_as_a_tombstone(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as api:
        team = await create_workspace(api, await register(api, "Owner"))  # type: ignore[arg-type]
        bea = await join_workspace(api, team, "Bea")  # type: ignore[arg-type]
        secret = await create_channel(api, team, team.owner, "secret", private=True)  # type: ignore[arg-type]

        async def shared_in(*channels: str) -> str:
            file_id = (
                await api.post(
                    f"{API}/workspaces/{team.workspace_id}/files",
                    files={"file": ("n.txt", b"n")},
                    headers=team.owner.auth,
                )
            ).json()["id"]
            for channel in channels:
                await api.post(
                    f"{API}/channels/{channel}/messages", json={"file_ids": [file_id]}, headers=team.owner.auth
                )
            return file_id

        hidden, public = await shared_in(secret), await shared_in(secret, team.general_id)
        await settled(api, team)
        async with ws(server, bea) as bea_sock, ws(server, team.owner) as owner_sock:
            await api.delete(f"{API}/files/{hidden}", headers=team.owner.auth)
            deleted = (await api.delete(f"{API}/files/{public}", headers=team.owner.auth)).json()
            heard = await bea_sock.event("file.deleted")  # never the one only #secret listed
            mine = await owner_sock.event("file.deleted")
        assert heard == {
            "op": "event",
            "position": deleted["position"],
            "type": "file.deleted",
            "workspace_id": team.workspace_id,
            "channel_id": None,
            "data": {"file_id": public, "file": {"id": public, "name": "", "size": 0, "mime": "", "deleted": True}},
        }
        assert mine["data"]["file_id"] == hidden  # the owner sees #secret: both, in order
        assert (await api.get(f"{API}/channels/{team.general_id}/messages", headers=bea.auth)).status_code == 200
