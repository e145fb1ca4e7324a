"""The search query language (``domain/searchquery.py``): what each part of a query means,
what is refused with 422, and, fuzzed, that nothing else is ever raised."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.searchquery import MAX_QUERY, NEVER, DateRange, InvalidQuery, ParsedQuery, parse


def day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("deploy", ParsedQuery(words=("deploy",))),
        ("deploy  the\tbuild", ParsedQuery(words=("deploy", "the", "build"))),
        ('"exact phrase"', ParsedQuery(phrases=("exact phrase",))),
        ('"  spaced   out  "', ParsedQuery(phrases=("spaced out",))),
        ('"single"', ParsedQuery(words=("single",))),
        ("-noise", ParsedQuery(not_words=("noise",))),
        ('-"not this"', ParsedQuery(not_phrases=("not this",))),
        ("deploy -friday", ParsedQuery(words=("deploy",), not_words=("friday",))),
        ("well-known", ParsedQuery(words=("well-known",))),
        ("from:@ada", ParsedQuery(from_users=("ada",))),
        ("from:ada from:@bob from:ada", ParsedQuery(from_users=("ada", "bob"))),
        ('from:"Ada Lovelace" x', ParsedQuery(words=("x",), from_users=("Ada Lovelace",))),
        ('from:@"Ada Lovelace"', ParsedQuery(from_users=("Ada Lovelace",))),
        ("from:me", ParsedQuery(from_users=("me",))),
        ("FROM:@Ada", ParsedQuery(from_users=("Ada",))),
        ("in:#General", ParsedQuery(in_channels=("general",))),
        ("in:random in:#dev", ParsedQuery(in_channels=("random", "dev"))),
        ("has:file has:link has:reaction", ParsedQuery(has=frozenset({"file", "link", "reaction"}))),
        ("has:links has:REACTIONS", ParsedQuery(has=frozenset({"link", "reaction"}))),
        ("is:thread", ParsedQuery(is_thread=True)),
        ("before:2024-03-01", ParsedQuery(dates=DateRange(None, day("2024-03-01")))),
        ("after:2024-03-01", ParsedQuery(dates=DateRange(day("2024-03-02"), None))),
        ("on:2024-02-29", ParsedQuery(dates=DateRange(day("2024-02-29"), day("2024-03-01")))),
        ("after:2024-01-01 before:2024-02-01", ParsedQuery(dates=DateRange(day("2024-01-02"), day("2024-02-01")))),
        ("before:2024-03-01 before:2024-02-01", ParsedQuery(dates=DateRange(None, day("2024-02-01")))),
        ("after:2024-03-01 before:2024-03-01", ParsedQuery(dates=NEVER)),
        ("on:2024-01-01 on:2024-01-02", ParsedQuery(dates=NEVER)),
        ("after:9999-12-31", ParsedQuery(dates=NEVER)),
        ("on:9999-12-31", ParsedQuery(dates=DateRange(day("9999-12-31"), None))),
        ("before:0001-01-01", ParsedQuery(dates=DateRange(None, day("0001-01-01")))),
        # Unknown operators, and known ones with nothing after the colon, are words.
        ("title:foo", ParsedQuery(words=("title:foo",))),
        ("http://example.com", ParsedQuery(words=("http://example.com",))),
        ("from: x", ParsedQuery(words=("from:", "x"))),
        ("from:@ in:#", ParsedQuery(words=("from:@", "in:#"))),
        ("-from:@ada", ParsedQuery(not_words=("from:@ada",))),
        # Unbalanced quotes: the odd one is dropped, its words stay words.
        ('"unbalanced quote', ParsedQuery(words=("unbalanced", "quote"))),
        ('"a b" "c', ParsedQuery(words=("c",), phrases=("a b",))),
        ('say "hi', ParsedQuery(words=("say", "hi"))),
        ('foo"bar baz"qux', ParsedQuery(words=("foo", "bar", "baz", "qux"))),
        # SQL and Lucene syntax are text like any other.
        ("'; DROP TABLE messages; --", ParsedQuery(words=("DROP", "TABLE", "messages;"))),
        ("title:foo AND (bar OR baz)~2", ParsedQuery(words=("title:foo", "AND", "(bar", "OR", "baz)~2"))),
        ("a:b & c | !d <-> e", ParsedQuery(words=("a:b", "c", "!d", "e"))),
        # Punctuation-only parts are dropped; control characters are spaces.
        ("deploy && ||", ParsedQuery(words=("deploy",))),
        ("x\x00y\x1bz", ParsedQuery(words=("x", "y", "z"))),
        ("--foo", ParsedQuery(not_words=("-foo",))),
        ("- foo", ParsedQuery(words=("foo",))),
    ],
)
def test_parses(q: str, expected: ParsedQuery) -> None:
    assert parse(q) == expected


@pytest.mark.parametrize(
    ("q", "says"),
    [
        ("", "empty"),
        ("   \t\n", "empty"),
        (None, "empty"),
        ("x" * (MAX_QUERY + 1), "at most 1000"),
        ("on:2024-02-30", "not a date"),
        ("before:yesterday", "not a date"),
        ("after:2024-1-1", "not a date"),
        ("on:0000-01-01", "not a date"),
        ("on:2024-13-01", "not a date"),
        ("before:٢٠٢٤-٠١-٠١", "not a date"),
        ("has:pizza", "has: takes file, link, reaction"),
        ("is:dm", "is: takes thread"),
        ("&& || -", "nothing to search for"),
        ('""', "nothing to search for"),
    ],
)
def test_refuses_with_a_422_on_q(q: str | None, says: str) -> None:
    with pytest.raises(InvalidQuery) as refused:
        parse(q)
    assert refused.value.status == 422 and refused.value.field == "q"
    assert says in refused.value.detail


def test_a_query_of_exactly_the_limit_is_searched() -> None:
    assert parse("ab " * (MAX_QUERY // 3) + "a").words[-1] == "a"


def test_the_refusal_does_not_echo_a_long_value() -> None:
    with pytest.raises(InvalidQuery) as refused:
        parse("on:" + "9" * 900)
    assert len(refused.value.detail) < 200


NASTY = st.sampled_from(
    [
        '"',
        "-",
        ":",
        "@",
        "#",
        " ",
        "from:",
        "in:",
        "has:",
        "is:",
        "before:",
        "after:",
        "on:",
        "2024-02-29",
        "9999-12-31",
        "0001-01-01",
        "'",
        ";",
        "\\",
        "(",
        ")",
        "*",
        "~",
        "&",
        "|",
        "!",
        "<->",
        "\x00",
        "\ud800",
        "é",
        "字",
        "🎉",
        "thread",
        "link",
        "x",
    ]
)
QUERIES = st.one_of(st.text(max_size=MAX_QUERY + 20), st.lists(NASTY, max_size=60).map("".join))


@settings(max_examples=1500, deadline=None)
@given(QUERIES)
def test_any_text_parses_or_is_refused_with_a_422(q: str) -> None:
    try:
        parsed = parse(q)
    except InvalidQuery as refused:
        assert refused.status == 422 and refused.field == "q"
        return
    assert not parsed.empty
    parts = (
        *parsed.words,
        *parsed.phrases,
        *parsed.not_words,
        *parsed.not_phrases,
        *parsed.from_users,
        *parsed.in_channels,
    )
    for part in parts:
        assert part and part == part.strip() and '"' not in part
        assert not any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in part)
    assert parsed.has <= {"file", "link", "reaction"}
    assert parsed.dates.empty is False or parsed.dates == NEVER
