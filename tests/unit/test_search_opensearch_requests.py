"""The OpenSearch backend's requests, built without a server (its behaviour against a real one is
``tests/contract/test_search_index.py``, run where HUBBUB_OPENSEARCH_URL is set)."""

from __future__ import annotations

import datetime as dt

import pytest

from domain.searchquery import parse
from infra.search.opensearch import OpenSearchIndex, bulk_body, bulk_failures, check_after, hits_of, search_body
from infra.search.port import BadCursor, Indexed, Reacted, Removed, Replied, SearchDoc, TextChanged
from readapi.search import search_query

AT = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
DOC = SearchDoc("m1", "w1", "c1", "u1", "hello <b>", AT, None, False, True, 7)


def test_bulk_lines_keep_log_order_and_carry_values_only_as_data() -> None:
    body = bulk_body(
        "idx",
        [
            Indexed(DOC),
            TextChanged("m1", "x", False, AT),
            Reacted("m1", "👍 u2", True),
            Replied("m0", "m1", False),
            Removed("m1"),
        ],
    )
    actions = [next(iter(body[i])) for i in (0, 2, 4, 6, 8)]
    assert actions == ["index", "update", "update", "update", "delete"]
    assert body[1]["text"] == "hello <b>" and body[1]["created_at"] == "2024-03-01T12:00:00+00:00"
    assert body[1]["reaction_keys"] == [] and body[1]["reply_ids"] == []
    script = body[5]["script"]
    assert script["params"] == {"f": "reaction_keys", "v": "👍 u2"} and "params.v" in script["source"]
    assert body[7]["script"]["params"] == {"f": "reply_ids", "v": "m1"} and body[6]["update"]["_id"] == "m0"


def test_missing_documents_are_not_failures_but_everything_else_is() -> None:
    ok = {
        "errors": True,
        "items": [{"update": {"status": 404}}, {"delete": {"status": 404}}, {"index": {"status": 201}}],
    }
    assert bulk_failures(ok) == []
    bad = {
        "errors": True,
        "items": [
            {"index": {"status": 404, "error": {"type": "index_not_found_exception"}}},
            {"update": {"status": 400, "error": {"type": "illegal_argument_exception"}}},
        ],
    }
    assert len(bulk_failures(bad)) == 2


def test_the_search_body_puts_text_in_queries_and_everything_else_in_filters() -> None:
    query = search_query(
        parse('deploy "hot fix" -friday -"on call" has:file has:reaction is:thread after:2024-01-01 before:2024-02-01'),
        "w1",
        "relevance",
        ("u1",),
        None,
    )
    body = search_body(query, ["c1", "c2"], 51, [1.5, 1700000000000, "m9"])
    bool_ = body["query"]["bool"]
    assert {"terms": {"channel_id": ["c1", "c2"]}} in bool_["filter"]
    assert {"term": {"workspace_id": "w1"}} in bool_["filter"]
    assert {"terms": {"author_id": ["u1"]}} in bool_["filter"]
    assert {"range": {"created_at": {"gte": "2024-01-02T00:00:00+00:00", "lt": "2024-02-01T00:00:00+00:00"}}} in bool_[
        "filter"
    ]
    assert bool_["must"][0]["match"]["text"]["query"] == "deploy"
    assert bool_["must"][1]["match_phrase"]["text"]["query"] == "hot fix"
    assert [c.get("match", c.get("match_phrase"))["text"]["query"] for c in bool_["must_not"]] == ["friday", "on call"]
    assert body["sort"][0] == {"_score": {"order": "desc"}} and body["search_after"] == [1.5, 1700000000000, "m9"]
    assert body["highlight"]["encoder"] == "html" and body["size"] == 51


def test_a_query_with_only_operators_asks_for_no_highlight() -> None:
    body = search_body(search_query(parse("has:link"), "w1", "newest", None, None), ["c1"], 11, None)
    assert "highlight" not in body and body["query"]["bool"]["must"] == []
    assert body["sort"] == [{"created_at": {"order": "desc"}}, {"message_id": {"order": "desc"}}]


def test_hits_and_the_next_cursor() -> None:
    response = {
        "hits": {
            "hits": [
                {"_id": "a", "sort": [2, "a"], "highlight": {"text": ["x <mark>y</mark>", "z"]}},
                {"_id": "b", "sort": [1, "b"]},
                {"_id": "c", "sort": [0, "c"]},
            ]
        }
    }
    found = hits_of(response, 2)
    assert [(h.message_id, h.highlight) for h in found.hits] == [("a", "x <mark>y</mark> … z"), ("b", "")]
    assert found.after == [1, "b"]
    assert hits_of(response, 3).after is None


@pytest.mark.parametrize(
    ("sort", "after"),
    [
        ("newest", [1.5, "x"]),
        ("newest", ["1", "x"]),
        ("newest", [1]),
        ("relevance", [1, 2]),
        ("newest", [True, "x"]),
        ("newest", [1, "x" * 65]),
    ],
)
def test_cursors_of_the_wrong_shape_are_refused(sort: str, after: list) -> None:
    with pytest.raises(BadCursor):
        check_after(search_query(parse("x"), "w", sort, None, None), after)  # type: ignore[arg-type]


def test_index_names_are_checked() -> None:
    with pytest.raises(ValueError, match="HUBBUB_OPENSEARCH_INDEX"):
        OpenSearchIndex(client=None, alias="Bad Name")  # type: ignore[arg-type]


def test_the_opensearch_projection_follows_the_log_apart() -> None:
    from projections.registry import all_projections
    from projections.search import split_external, with_search_backend

    local = all_projections()
    assert [[p.name for p in g] for g in split_external(local)] == [[p.name for p in local]]
    groups = split_external(with_search_backend(local, OpenSearchIndex(client=None, alias="x")))  # type: ignore[arg-type]
    assert [[p.name for p in g] for g in groups] == [
        [p.name for p in local if p.name != "search"],
        ["search_opensearch"],
    ]
