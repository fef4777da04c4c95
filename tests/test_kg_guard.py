"""Property tests of the SPARQL pre-check (kg.guard): depth, SERVICE, sizes; checked
against what Oxigraph itself parses."""

from __future__ import annotations

import pyoxigraph as ox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kg.guard import QueryLimits, QueryRejected, check_sparql, scan_sparql


@st.composite
def nested_groups(draw) -> tuple[str, int]:
    """A well-formed SELECT whose WHERE nests groups and FILTER parentheses; its depth."""
    groups = draw(st.integers(0, 30))
    parens = draw(st.integers(0, 30))
    filter_ = "FILTER(" + "(" * parens + "true" + ")" * parens + ")"
    body = "{" * groups + f" ?s ?p ?o {filter_} " + "}" * groups
    return f"SELECT * WHERE {{ {body} }}", 1 + groups + 1 + parens


@settings(max_examples=150, deadline=None)
@given(nested_groups())
def test_depth_is_the_nesting_the_engine_parses(case):
    text, depth = case
    assert scan_sparql(text).depth == depth
    list(ox.Store().query(text))  # a real, parseable query
    limits = QueryLimits(max_depth=depth)
    check_sparql(text, limits)
    with pytest.raises(QueryRejected, match=f"nests brackets {depth} deep, over the limit of {depth - 1}"):
        check_sparql(text, QueryLimits(max_depth=depth - 1))


@settings(max_examples=200, deadline=None)
@given(
    noise=st.text(alphabet="{}()[]#<>\"' SERVICEservice", max_size=60), quote=st.sampled_from(['"', "'", '"""', "'''"])
)
def test_brackets_and_keywords_in_strings_and_comments_do_not_count(noise, quote):
    inner = noise.replace("\\", "").replace('"', "").replace("'", "")
    literal = f"{quote}{inner}{quote}"
    comment = "#" + noise.replace("\n", " ").replace("\r", " ")
    text = f"SELECT ?x WHERE {{ BIND({literal} AS ?x) }} {comment}\n"
    shape = scan_sparql(text)
    assert (shape.depth, shape.service) == (2, False)
    list(ox.Store().query(text))


@settings(max_examples=150, deadline=None)
@given(flips=st.lists(st.booleans(), min_size=7, max_size=7), space=st.sampled_from([" ", "\n", "\t", "  "]))
def test_service_in_any_case_is_refused_unless_allowed(flips, space):
    keyword = "".join(c.upper() if up else c for c, up in zip("service", flips))
    text = f"SELECT * WHERE {{{space}{keyword}{space}<http://127.0.0.1:9/sparql> {{ ?s ?p ?o }} }}"
    with pytest.raises(QueryRejected, match="SERVICE is refused") as refused:
        check_sparql(text)
    assert refused.value.status == 403
    assert check_sparql(text, QueryLimits(allow_service=True)).service


@pytest.mark.parametrize(
    "text",
    [
        "SELECT ?service WHERE { ?s <http://x/SERVICE> ?service }",
        "PREFIX ex: <http://x/> SELECT * WHERE { ?s ex:SERVICE ?o }",
        'SELECT * WHERE { ?s ?p "SERVICE <http://x/> { }" }',
        "SELECT * WHERE { ?s ?p ?o } # SERVICE <http://x/> {}",
    ],
)
def test_service_as_a_name_string_or_comment_is_not_the_keyword(text):
    assert not check_sparql(text).service


def test_load_is_refused_in_updates_only():
    with pytest.raises(QueryRejected, match="LOAD is refused"):
        check_sparql("LOAD <http://127.0.0.1:9/data.ttl>", update=True)
    check_sparql("SELECT ?load WHERE { ?load ?p ?o }")


def test_parens_inside_an_iri_lookalike_still_count():
    # To the engine this is ?x < ((((…1…)))) > 0, an expression, not an IRI.
    text = "SELECT * WHERE { FILTER(?x<" + "(" * 300 + "1" + ")" * 300 + ">0) }"
    with pytest.raises(QueryRejected, match="nests brackets 302 deep"):
        check_sparql(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_scanned_without_error(text):
    try:
        check_sparql(text)
    except QueryRejected as exc:
        assert str(exc) and exc.status in (400, 403, 413)


def test_size_limit_names_the_option():
    with pytest.raises(
        QueryRejected, match=r"the query is 101 characters, over the limit of 100 \(--max-query-chars\)"
    ) as too_long:
        check_sparql("#" + "x" * 100, QueryLimits(max_chars=100))
    assert too_long.value.status == 413
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        QueryLimits(max_rows=0)
