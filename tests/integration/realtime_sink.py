"""A stand-in for a socket's transport in the gateway's per-process tests: it records what is
written and, once ``stalled``, reads nothing, so what is written waits behind what it has not read."""

from __future__ import annotations

from realtime.wire import split_text_frames


class RecordingSink:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.stalled = False

    def write(self, wire: bytes) -> None:
        self.written.append(wire)

    def paused(self) -> bool:
        return self.stalled

    async def drained(self) -> None:
        raise AssertionError("nothing waits on a drain in these tests")

    def frames(self) -> list[str]:
        return [text for wire in self.written for text in split_text_frames(wire)]
