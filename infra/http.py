"""HTTP conventions shared by the command and query sides (which must not import each other).

Every command answers with the log position of what it appended, in ``X-Hubbub-Position``; a
client sends it back on its next query to read its own writes (see ``projections/consistency.py``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Response

POSITION_HEADER = "X-Hubbub-Position"

R = TypeVar("R", bound=Response[Any])


def with_position(response: R, position: int) -> R:
    """Set ``X-Hubbub-Position`` on a command's response and return it."""
    response.headers[POSITION_HEADER] = str(position)
    return response


def command_response(body: Any, position: int, status_code: int = 200) -> Response[Any]:
    """A command's answer: ``body`` (put ``position`` in it too for JSON bodies) plus the header."""
    return with_position(Response(body, status_code=status_code), position)
