"""What a reaction may be: one Unicode emoji, or a ``:short_name:``.

Unicode emoji are checked against the Unicode emoji list (RGI sequences, with skin tones, ZWJ
families, flags and keycaps) as the ``emoji`` package ships it: hand-written code-point ranges
would accept sequences no font draws as one glyph. A form that differs only by its variation
selectors (``❤`` and ``❤️``) is stored fully qualified, so both count as one reaction.
``:short_name:`` names (lower-case letters, digits, ``_ + -``, 1 to 64) are kept as written: they
may be a workspace's custom emoji, which the server does not know.
"""

from __future__ import annotations

import re

import emoji as unicode_emoji

from domain.errors import DomainError

SHORT_NAME = re.compile(r":[a-z0-9_+-]{1,64}:")
MAX_SEQUENCE = 16  # code points; the longest RGI sequence (a couple with two skin tones) has 10


def check_emoji(value: str) -> str:
    """The canonical form of ``value``, or a DomainError naming the field ``emoji``."""
    if SHORT_NAME.fullmatch(value):
        return value
    if len(value) <= MAX_SEQUENCE and unicode_emoji.is_emoji(value):
        return unicode_emoji.emojize(unicode_emoji.demojize(value))
    raise DomainError(
        "emoji must be one Unicode emoji (like 👍) or a :short_name: of lower-case letters, "
        "digits, _ + or - (1 to 64 between the colons)",
        field="emoji",
    )
