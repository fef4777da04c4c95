"""The SPARQL behind the browser's pages, with every value bound (:mod:`kg.binding`).

Page queries are this module's text or the canned queries (``kg/queries``); a lesion id
or label is turned into an RDF term and bound with a ``VALUES`` block, never pasted. A
search for several labels builds its query's *shape* from the number of labels
(variables ``?l0``, ``?l1``…, fixed text) and binds the labels' class IRIs to them;
paging numbers are Python ints formatted into ``LIMIT``/``OFFSET``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import rdflib

from kg.binding import Binding
from kg.canned import get_canned, lesion_term
from kg.errors import KgError
from kg.results import QueryResult

Runner = Callable[[str, Mapping[str, Binding]], QueryResult]

LESION_INFO = """
SELECT ?lesionId ?dataset ?index ?boxPx ?boxMm ?widthMm ?heightMm ?spacingMm ?file ?slice
WHERE {
  ?lesion kg:lesionId ?lesionId .
  OPTIONAL { ?lesion kg:dataset ?dataset }
  OPTIONAL { ?lesion kg:lesionIndex ?index }
  OPTIONAL { ?lesion kg:boxPx ?boxPx }
  OPTIONAL { ?lesion kg:boxMm ?boxMm }
  OPTIONAL { ?lesion kg:widthMm ?widthMm }
  OPTIONAL { ?lesion kg:heightMm ?heightMm }
  OPTIONAL { ?lesion kg:spacingMm ?spacingMm }
  OPTIONAL { ?lesion kg:keyRegion ?region . ?region oa:hasSource ?image .
             OPTIONAL { ?image kg:file ?file } OPTIONAL { ?image kg:sliceIndex ?slice } }
}
"""

# Every field of LESION_INFO: a lesion's page shows each, unbound ones (no source file for a
# lesion predicted from a cache or volume, no mm box for a PNG) as absent.
LESION_INFO_FIELDS: tuple[str, ...] = tuple(re.findall(r"\?(\w+)", LESION_INFO.split("WHERE")[0]))

# The inference activity behind a lesion's labels (model, ontology version).
LESION_MODEL = """
SELECT DISTINCT ?modelName ?modelVersion ?config ?ontologyVersion
WHERE {
  ?lesion kg:keyRegion ?region .
  ?annotation oa:hasTarget ?region ; prov:wasGeneratedBy ?activity .
  ?activity prov:used ?model .
  ?model a kg:Model ; kg:modelName ?modelName .
  OPTIONAL { ?model kg:modelVersion ?modelVersion }
  OPTIONAL { ?model kg:config ?config }
  OPTIONAL { ?activity prov:used ?onto . ?onto a kg:OntologyVersion ; kg:versionString ?ontologyVersion }
}
LIMIT 1
"""

STORE_SUMMARY = """
SELECT (COUNT(DISTINCT ?predicted) AS ?predictedLesions) (COUNT(DISTINCT ?sentence) AS ?sentences)
WHERE {
  { ?predicted kg:keyRegion ?region } UNION { ?sentence a kg:ReportSentence }
}
"""

# Lesions decided with this very class (a label page also counts those with any subclass).
DIRECT_COUNT = "SELECT (COUNT(DISTINCT ?lesion) AS ?n) WHERE { ?lesion a ?label . ?lesion kg:keyRegion ?region }"

FIRST_LESIONS = """
SELECT ?lesionId WHERE { ?lesion kg:keyRegion ?region ; kg:lesionId ?lesionId } ORDER BY ?lesionId LIMIT %d
"""


@dataclass(frozen=True)
class LabelFilter:
    """Lesions whose decided labels include every ``required`` class (or a subclass of
    it) and none of the ``excluded`` ones (nor their subclasses)."""

    required: tuple[str, ...]  # class IRIs
    excluded: tuple[str, ...] = ()


def _filter_where(flt: LabelFilter, lesion_pattern: str) -> str:
    """The WHERE body of a label filter: a class (or subclass) per required label, then
    ``lesion_pattern``, then no excluded one (``?l{i}`` / ``?n{i}`` bound by :func:`_filter_bindings`)."""
    patterns = [f"  ?c{i} rdfs:subClassOf* ?l{i} .\n  ?lesion a ?c{i} ." for i in range(len(flt.required))]
    negations = [
        f"  FILTER NOT EXISTS {{ ?x{i} rdfs:subClassOf* ?n{i} . ?lesion a ?x{i} }}" for i in range(len(flt.excluded))
    ]
    return "\n".join(patterns) + f"\n  {lesion_pattern}\n" + "\n".join(negations)


def _lesion_search_text(flt: LabelFilter, limit: int, offset: int) -> str:
    return (
        'SELECT ?lesion ?lesionId (GROUP_CONCAT(DISTINCT ?name; separator=", ") AS ?labels)\nWHERE {\n'
        + _filter_where(flt, "?lesion kg:lesionId ?lesionId ; kg:keyRegion ?region .")
        + "\n  OPTIONAL { ?lesion a ?decided . ?decided a owl:Class ; rdfs:label ?name }\n}\n"
        + f"GROUP BY ?lesion ?lesionId\nORDER BY ?lesionId\nLIMIT {int(limit)}\nOFFSET {int(offset)}\n"
    )


def _lesion_count_text(flt: LabelFilter) -> str:
    return (
        "SELECT (COUNT(DISTINCT ?lesion) AS ?n)\nWHERE {\n"
        + _filter_where(flt, "?lesion kg:keyRegion ?region .")
        + "\n}\n"
    )


def _filter_bindings(flt: LabelFilter) -> dict[str, Binding]:
    bindings: dict[str, Binding] = {f"l{i}": rdflib.URIRef(iri) for i, iri in enumerate(flt.required)}
    bindings.update({f"n{i}": rdflib.URIRef(iri) for i, iri in enumerate(flt.excluded)})
    return bindings


@dataclass(frozen=True)
class LesionHit:
    lesion_id: str
    labels: str


def search_lesions(run: Runner, flt: LabelFilter, limit: int, offset: int) -> tuple[int, list[LesionHit]]:
    """(how many lesions match, the page of them from ``offset``)."""
    if not flt.required:
        raise KgError("a lesion search needs at least one required label")
    bindings = _filter_bindings(flt)
    total = int(run(_lesion_count_text(flt), bindings).values()[0]["n"])
    rows = run(_lesion_search_text(flt, limit, offset), bindings).values() if total > offset else []
    return total, [LesionHit(str(r["lesionId"]), str(r.get("labels") or "")) for r in rows]


def canned(run: Runner, name: str, bindings: Mapping[str, Binding]) -> QueryResult:
    return run(get_canned(name).text, bindings)


def lesion_bindings(lesion_id: str) -> dict[str, Binding]:
    return {"lesion": lesion_term(lesion_id)}


def first_row(result: QueryResult) -> dict | None:
    rows = result.values()
    return rows[0] if rows else None


def merged_rows(rows: Sequence[dict]) -> dict:
    """One lesion's info rows (a lesion loaded from predictions and from sentences has
    one row per dataset value) merged: the first non-empty value of each column."""
    merged: dict = {}
    for row in rows:
        for key, value in row.items():
            if merged.get(key) is None and value is not None:
                merged[key] = value
    return merged
