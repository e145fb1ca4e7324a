"""Which NATS subjects carry ephemeral events (no position): the hub hands those out as they come."""

from __future__ import annotations

from realtime import subjects


def test_presence_and_typing_subjects_are_ephemeral_and_log_subjects_are_not() -> None:
    ephemeral = [subjects.typing("c"), subjects.presence("w"), subjects.guest_presence("w", "u")]
    ordered = [subjects.channel("c"), subjects.workspace("w"), subjects.user("u")]
    assert [subjects.is_ephemeral(s) for s in ephemeral] == [True] * 3
    assert [subjects.is_ephemeral(s) for s in ordered] == [False] * 3


def test_a_guest_s_presence_subject_is_not_the_workspace_s_nor_a_companion() -> None:
    mine = subjects.guest_presence("w", "u")
    assert mine == "hubbub.ws.w.presence.u" and mine != subjects.presence("w")
    assert subjects.ephemeral_companion(mine) is None and subjects.companion_of(mine) is None
