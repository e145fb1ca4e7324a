"""NATS subjects and the envelope of a published event.

One NATS message carries one log event for one subject: its client frames (JSON, one per line,
already encoded: a gateway forwards them as they are) and, in headers, the log position and
what the gateway must do besides forwarding (re-check who sees what; close a session).
An event's frames are the same on every subject it goes to, so a socket that gets it twice
(on its user subject and on a channel subject) keeps the first by position and loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from realtime.wire import text_frames

POSITION = "Hubbub-Position"
RESYNC = "Hubbub-Resync"
"""Present when the event changes what the subject's recipients may see (membership, role)."""
SESSION_ENDED = "Hubbub-Session-Ended"
"""The id of a session that logged out or was revoked: its sockets are closed."""


def channel(channel_id: str) -> str:
    return f"hubbub.ch.{channel_id}"


def user(user_id: str) -> str:
    return f"hubbub.user.{user_id}"


ALL_USERS = "hubbub.user.*"


def is_user(subject: str) -> bool:
    return subject.startswith("hubbub.user.")


def workspace(workspace_id: str) -> str:
    """Workspace-wide events every non-guest member may see (a public channel created, members)."""
    return f"hubbub.ws.{workspace_id}"


TYPING_SUFFIX = ".typing"
PRESENCE_SUFFIX = ".presence"
TYPIST = "Hubbub-Typist"
"""Who is typing: the gateway does not echo a typing event to that user's own sockets."""


def typing(channel_id: str) -> str:
    return channel(channel_id) + TYPING_SUFFIX


def presence(workspace_id: str) -> str:
    """Where ``realtime/presence.py`` publishes a workspace's presence.changed frames."""
    return workspace(workspace_id) + PRESENCE_SUFFIX


def guest_presence(workspace_id: str, user_id: str) -> str:
    """A guest's presence.changed frames of the workspace: only the people they see (a guest
    hears no workspace subject, and so not its presence companion)."""
    return f"{presence(workspace_id)}.{user_id}"


def is_ephemeral(subject: str) -> bool:
    """Whether ``subject`` carries ephemeral events (typing, presence: no position, no order)."""
    parts = subject.split(".")
    guests = len(parts) == 5 and parts[1] == "ws" and parts[3] == PRESENCE_SUFFIX[1:]
    return guests or companion_of(subject) is not None


def ephemeral_companion(subject: str) -> str | None:
    """The subject of the ephemeral events that go with a channel or workspace subject."""
    if subject.startswith("hubbub.ch.") and subject.count(".") == 2:
        return subject + TYPING_SUFFIX
    if subject.startswith("hubbub.ws.") and subject.count(".") == 2:
        return subject + PRESENCE_SUFFIX
    return None


def companion_of(subject: str) -> str | None:
    """The channel or workspace subject an ephemeral subject goes with (None for others)."""
    for suffix in (TYPING_SUFFIX, PRESENCE_SUFFIX):
        if subject.endswith(suffix) and subject.count(".") == 3:
            return subject[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Envelope:
    """A published event as a gateway reads it."""

    subject: str
    position: int
    frames: tuple[str, ...]
    resync: bool = False
    session_ended: str | None = None

    @cached_property
    def wire(self) -> bytes:
        """The frames as WebSocket frames, built the first time a socket needs them (once per node)."""
        return text_frames(self.frames)

    def headers(self) -> dict[str, str]:
        headers = {POSITION: str(self.position)}
        if self.resync:
            headers[RESYNC] = "1"
        if self.session_ended:
            headers[SESSION_ENDED] = self.session_ended
        return headers

    def payload(self) -> bytes:
        return "\n".join(self.frames).encode()


def parse(subject: str, headers: dict[str, str] | None, data: bytes) -> Envelope | None:
    """The envelope of a NATS message, None if it is not one of ours (no position)."""
    raw = (headers or {}).get(POSITION, "")
    if not raw.isdigit():
        return None
    frames = tuple(data.decode().split("\n")) if data else ()
    return Envelope(subject, int(raw), frames, RESYNC in (headers or {}), (headers or {}).get(SESSION_ENDED))
