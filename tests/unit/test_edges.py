"""The root's services object has what each room's edge module says the room reads of it
(``commands/edge.py``, ``readapi/edge.py``, ``realtime/edge.py``): a member a room starts to read
must be wired by the root, or this fails before any route does."""

from __future__ import annotations

import dataclasses

import pytest

from commands import edge as command_edge
from hubbub import deps
from readapi import edge as query_edge
from realtime import edge as realtime_edge


@pytest.mark.parametrize("edge", [command_edge, query_edge, realtime_edge], ids=lambda e: e.__name__)
def test_the_roots_services_serve_every_room(edge) -> None:
    services = deps.Services(**{field.name: None for field in dataclasses.fields(deps.Services)})
    assert isinstance(services, edge.Services)
    assert edge.STATE_KEY == deps.STATE_KEY
