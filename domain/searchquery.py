"""The search query language (issue 6): what a user types into the search box, parsed.

Pure: no I/O, names are not resolved here (``readapi/search.py`` turns ``from:@ada`` and
``in:#general`` into ids at query time). A query is a list of space-separated parts:

- ``word``: must appear (stemmed, case-insensitive); ``"exact phrase"``: the words in that order;
- ``-word`` / ``-"phrase"``: must not appear;
- ``from:@name`` / ``from:name`` / ``from:"Ada Lovelace"`` / ``from:<user id>`` / ``from:me``;
- ``in:#channel`` / ``in:channel`` / ``in:<channel id>``;
- ``has:file`` / ``has:link`` / ``has:reaction``; ``is:thread`` (a reply, or a message with replies);
- ``before:YYYY-MM-DD`` (earlier days), ``after:YYYY-MM-DD`` (later days), ``on:YYYY-MM-DD`` (UTC days).

Repeated ``from:`` or ``in:`` widen (any of them); everything else narrows (all of them).
An unknown operator (``title:foo``) is a word, and so is a known one with nothing after the colon.
An unbalanced ``"`` is dropped and what follows it is read as words. Nothing here is syntax for
a database or a search engine: the backends pass every word on as a value. Refused with 422
(field ``q``): an empty query, more than ``MAX_QUERY`` characters, an invalid date, a ``has:``
or ``is:`` value we do not know, and a query with nothing to search for (only punctuation).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field

from domain.errors import DomainError

MAX_QUERY = 1000
HAS_VALUES = {
    "file": "file",
    "files": "file",
    "link": "link",
    "links": "link",
    "reaction": "reaction",
    "reactions": "reaction",
}
IS_VALUES = {"thread": "thread", "threads": "thread"}
OPERATORS = ("from", "in", "has", "is", "before", "after", "on")
_OPERATOR = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_FIELD = "q"


class InvalidQuery(DomainError):
    """The search query cannot be run as written; the detail says what to change."""


@dataclass(frozen=True)
class DateRange:
    """``start <= created_at < end``; either end may be open. ``empty`` when nothing can match."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def empty(self) -> bool:
        return self.start is not None and self.end is not None and self.start >= self.end

    def narrowed(self, start: dt.datetime | None, end: dt.datetime | None) -> DateRange:
        new_start = max(filter(None, (self.start, start)), default=None)
        new_end = min(filter(None, (self.end, end)), default=None)
        return DateRange(new_start, new_end)


NEVER = DateRange(dt.datetime(1, 1, 2, tzinfo=dt.UTC), dt.datetime(1, 1, 1, tzinfo=dt.UTC))
"""A range no message is in (``after:9999-12-31``)."""


@dataclass(frozen=True)
class ParsedQuery:
    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    not_words: tuple[str, ...] = ()
    not_phrases: tuple[str, ...] = ()
    from_users: tuple[str, ...] = ()
    """As written after ``from:``, without ``@``: a display name, a user id, or ``me``."""
    in_channels: tuple[str, ...] = ()
    """As written after ``in:``, without ``#``: a channel name or id."""
    has: frozenset[str] = frozenset()
    is_thread: bool = False
    dates: DateRange = field(default_factory=DateRange)

    @property
    def has_text(self) -> bool:
        return bool(self.words or self.phrases or self.not_words or self.not_phrases)

    @property
    def empty(self) -> bool:
        """Nothing to search for: no text and no operator."""
        return not (
            self.has_text
            or self.from_users
            or self.in_channels
            or self.has
            or self.is_thread
            or self.dates != DateRange()
        )


def parse(q: str | None) -> ParsedQuery:
    """``q`` as a ``ParsedQuery``; ``InvalidQuery`` (422, field ``q``) when it cannot be run."""
    text = _clean(q or "")
    if not text.strip():
        raise InvalidQuery("q is empty; type something to search for, e.g. q=deploy from:@ada", field=_FIELD)
    if len(text) > MAX_QUERY:
        raise InvalidQuery(f"q is {len(text)} characters long; search with at most {MAX_QUERY}", field=_FIELD)
    builder = _Builder()
    for negated, quoted, token in _tokens(text):
        builder.add(negated, quoted, token)
    parsed = builder.build()
    if parsed.empty:
        raise InvalidQuery(
            "q has nothing to search for (only punctuation); add a word or an operator such as from:@name", field=_FIELD
        )
    return parsed


def _clean(text: str) -> str:
    """Control characters (NUL included) become spaces and lone surrogates are dropped: neither
    can be stored in a message, so neither can be searched for, and neither may reach a backend."""
    text = text.encode("utf-8", "ignore").decode("utf-8")
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def _tokens(text: str) -> list[tuple[bool, bool, str]]:
    """(negated, quoted, text) per part. A ``"`` without a partner is dropped (its words stay)."""
    if text.count('"') % 2:
        last = text.rindex('"')
        text = text[:last] + " " + text[last + 1 :]
    out: list[tuple[bool, bool, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        start = i + 1 if negated else i
        if start < n and text[start] == '"':
            end = text.index('"', start + 1)
            out.append((negated, True, text[start + 1 : end]))
            i = end + 1
            continue
        end = start
        while end < n and not text[end].isspace():
            if text[end] == '"':  # from:"Ada Lovelace": the quoted part belongs to the token
                end = text.index('"', end + 1)
            end += 1
        out.append((negated, False, text[start:end]))
        i = end
    return out


def _searchable(text: str) -> bool:
    return any(c.isalnum() for c in text)


class _Builder:
    def __init__(self) -> None:
        self.words: list[str] = []
        self.phrases: list[str] = []
        self.not_words: list[str] = []
        self.not_phrases: list[str] = []
        self.from_users: list[str] = []
        self.in_channels: list[str] = []
        self.has: set[str] = set()
        self.is_thread = False
        self.dates = DateRange()

    def add(self, negated: bool, quoted: bool, token: str) -> None:
        if quoted:
            self._text(negated, token, phrase=True)
            return
        match = _OPERATOR.fullmatch(token)
        name = match.group(1).lower() if match else ""
        value = " ".join(match.group(2).replace('"', " ").split()) if match else ""
        if negated or name not in OPERATORS or not value.lstrip("@#").strip():
            self._text(negated, token.replace('"', " "), phrase=False)
            return
        self._operator(name, value)

    def _text(self, negated: bool, text: str, phrase: bool) -> None:
        if not _searchable(text):
            return
        if phrase and len(text.split()) > 1:
            (self.not_phrases if negated else self.phrases).append(" ".join(text.split()))
        else:
            (self.not_words if negated else self.words).extend(text.split())

    def _operator(self, name: str, value: str) -> None:
        if name == "from":
            self.from_users.append(value.removeprefix("@").strip())
        elif name == "in":
            self.in_channels.append(value.removeprefix("#").strip().lower())
        elif name == "has":
            self.has.add(_one_of(name, value, HAS_VALUES))
        elif name == "is":
            self.is_thread = _one_of(name, value, IS_VALUES) == "thread" or self.is_thread
        else:
            self.dates = self.dates.narrowed(*_day_bounds(name, value))

    def build(self) -> ParsedQuery:
        dates = NEVER if self.dates.empty else self.dates
        return ParsedQuery(
            tuple(self.words),
            tuple(self.phrases),
            tuple(self.not_words),
            tuple(self.not_phrases),
            tuple(dict.fromkeys(self.from_users)),
            tuple(dict.fromkeys(self.in_channels)),
            frozenset(self.has),
            self.is_thread,
            dates,
        )


def _one_of(name: str, value: str, allowed: dict[str, str]) -> str:
    found = allowed.get(value.lower())
    if found is None:
        choices = ", ".join(sorted(set(allowed.values())))
        raise InvalidQuery(f"{name}:{value[:40]} is not something to search for; {name}: takes {choices}", field=_FIELD)
    return found


def _day_bounds(name: str, value: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The half-open range of ``before:``/``after:``/``on:`` that day (UTC); NEVER's ends when the
    day is the calendar's last and nothing can come after it."""
    day = _date(name, value)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        next_day: dt.datetime | None = start + dt.timedelta(days=1)
    except OverflowError:
        next_day = None
    if name == "before":
        return None, start
    if name == "after":
        return (next_day, None) if next_day else (NEVER.start, NEVER.end)
    return start, next_day


def _date(name: str, value: str) -> dt.date:
    if _DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidQuery(
        f"{name}:{value[:40]} is not a date; write it as YYYY-MM-DD, e.g. {name}:2024-03-01", field=_FIELD
    )
