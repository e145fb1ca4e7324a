"""Mentions in message text: ``<@user_id>``, ``@channel`` and ``@here`` (Slack's spelling).

A ``<@id>`` counts only when ``id`` is a member of the message's workspace: anything else stays
plain text, so a typo or a stranger's id notifies nobody and reveals nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

USER = re.compile(r"<@([A-Za-z0-9_-]{1,64})>")
# A word of its own: not "email@channel.com", not "@channels", not "@@here".
BROADCAST = re.compile(r"(?<![\w@.])@(channel|here)(?![\w@-])")


@dataclass(frozen=True)
class Mentions:
    user_ids: tuple[str, ...] = ()
    channel: bool = False
    here: bool = False


def parse_mentions(text: str, members: Collection[str]) -> Mentions:
    """The members named in ``text`` (each once, in order of first mention) and the broadcasts."""
    users = dict.fromkeys(m for m in USER.findall(text) if m in members)
    words = {m.group(1) for m in BROADCAST.finditer(text)}
    return Mentions(tuple(users), channel="channel" in words, here="here" in words)


def says_here(text: str) -> bool:
    """Whether ``text`` holds an ``@here`` (the post route then reads who is online)."""
    return any(m.group(1) == "here" for m in BROADCAST.finditer(text))
