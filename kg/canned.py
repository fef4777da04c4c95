"""Canned SPARQL queries (``kg/queries/*.rq``) with typed, bound parameters.

A parameter is never pasted into the query text: a label name is resolved through the
ontology to its class IRI, a lesion id is minted into its IRI, and the resulting RDF term
is bound (a ``VALUES`` block built from validated terms for pyoxigraph and remote
endpoints, ``initBindings`` for rdflib; see :mod:`kg.binding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import rdflib

from kg import vocab
from kg.backend import SparqlBackend
from kg.binding import Binding
from kg.errors import KgError
from kg.results import QueryResult
from ontology import load_ontology
from ontology.protocol import OntologyLike

QUERY_DIR = Path(__file__).resolve().parent / "queries"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "label": ontology label name/synonym/IRI; "lesion": lesion id or IRI
    help: str


@dataclass(frozen=True)
class CannedQuery:
    name: str
    description: str
    params: tuple[Param, ...] = ()

    @property
    def path(self) -> Path:
        return QUERY_DIR / f"{self.name}.rq"

    @property
    def text(self) -> str:
        return _read(self.path)


_LABEL = Param("label", "label", "label name, synonym or class IRI (resolved through the ontology)")
_LESION = Param("lesion", "lesion", "lesion id (e.g. deeplesion/12) or lesion IRI")

CANNED: dict[str, CannedQuery] = {
    q.name: q
    for q in (
        CannedQuery("lesions-with-label", "lesions with a decided label or any of its subclasses", (_LABEL,)),
        CannedQuery("labels-of-lesion", "every scored label of a lesion, highest score first", (_LESION,)),
        CannedQuery("cooccurring-labels", "decided labels co-occurring with a label, with lesion counts", (_LABEL,)),
        CannedQuery("label-cooccurrence", "co-occurrence counts of every pair of decided labels"),
        CannedQuery("exclusion-violations", "lesions whose decided labels break an (inherited) exclusion"),
        CannedQuery("similar-lesions", "a lesion's stored nearest neighbours with shared labels", (_LESION,)),
        CannedQuery("label-counts", "number of lesions per decided label"),
        CannedQuery(
            "training-labels-of-lesion", "text-mined training labels of a lesion with their sentence", (_LESION,)
        ),
    )
}


@cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def lesion_term(value: str) -> rdflib.URIRef:
    """A lesion id (``deeplesion/12``) or an already minted lesion IRI, as an IRI term."""
    if value.startswith(vocab.LESION_PREFIX):
        return rdflib.URIRef(value)
    return rdflib.URIRef(vocab.lesion_iri(value))


def label_term(value: str, onto: OntologyLike | None) -> rdflib.URIRef:
    """A label name / synonym / IRI resolved through the ontology to its class IRI."""
    if onto is None:
        onto = load_ontology()
    return rdflib.URIRef(str(onto.term(value).iri))


def bindings_for(query: CannedQuery, params: dict[str, Any], onto: OntologyLike | None) -> dict[str, Binding]:
    """Check ``params`` against the query's parameters and turn them into RDF terms."""
    expected = {p.name: p for p in query.params}
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise KgError(
            f"query {query.name!r} has no parameter {', '.join(unknown)}; it takes: {', '.join(expected) or 'none'}"
        )
    missing = [name for name in expected if params.get(name) in (None, "")]
    if missing:
        raise KgError(f"query {query.name!r} needs --{missing[0]} ({expected[missing[0]].help})")
    bindings: dict[str, Binding] = {}
    for name, param in expected.items():
        value = str(params[name])
        bindings[name] = label_term(value, onto) if param.kind == "label" else lesion_term(value)
    return bindings


def get_canned(name: str) -> CannedQuery:
    try:
        return CANNED[name]
    except KeyError:
        raise LookupError(f"no canned query {name!r}; available: {', '.join(CANNED)}") from None


def run_canned(backend: SparqlBackend, name: str, onto: OntologyLike | None = None, **params: Any) -> QueryResult:
    """Run canned query ``name`` on a store or endpoint, e.g.
    ``run_canned(store, "lesions-with-label", onto, label="lung nodule")``."""
    query = get_canned(name)
    return backend.query(query.text, bindings_for(query, params, onto))
