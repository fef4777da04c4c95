"""RDF as rdflib graphs and as files: Turtle, sorted N-Triples or JSON-LD, written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef

from kg import ntriples as nt
from kg import vocab
from kg.errors import KgError
from kg.formats import output_format
from kg.rdf import prediction_ntriples, sentence_ntriples
from ontology.files import write_text_atomic
from ontology.protocol import OntologyLike


def _bind_prefixes(graph: Graph) -> Graph:
    for prefix, namespace in vocab.PREFIXES.items():
        graph.bind(prefix, namespace, override=True)
    return graph


def ntriples_to_graph(lines: Iterable[str], graph: Graph | None = None) -> Graph:
    """Add N-Triples lines to an rdflib graph (new, with the project prefixes, by default).

    pyoxigraph parses (about 3x faster than rdflib's N-Triples parser); the terms are
    converted once each (IRIs and repeated literals are cached).
    """
    graph = _bind_prefixes(Graph()) if graph is None else graph
    iris: dict[str, URIRef] = {}
    literals: dict[tuple[str, str, str | None], Literal] = {}

    def term(node: Any) -> Any:
        if isinstance(node, ox.NamedNode):
            iri = iris.get(node.value)
            if iri is None:
                iri = iris[node.value] = URIRef(node.value)
            return iri
        if isinstance(node, ox.Literal):
            key = (node.value, node.datatype.value, node.language)
            literal = literals.get(key)
            if literal is None:
                if node.language:
                    literal = Literal(node.value, lang=node.language)
                elif node.datatype.value == nt.XSD_STRING:  # rdflib's plain literal
                    literal = Literal(node.value)
                else:
                    literal = Literal(node.value, datatype=URIRef(node.datatype.value))
                if len(literals) < 100_000:
                    literals[key] = literal
            return literal
        return BNode(node.value)

    for chunk in nt.chunked(lines, 50_000):
        triples = ox.parse(chunk, format=ox.RdfFormat.N_TRIPLES)
        graph.addN((term(t.subject), term(t.predicate), term(t.object), graph) for t in triples)
    return graph


def predictions_to_graph(records: Iterable[Any], onto: OntologyLike, errors: list[str] | None = None) -> Graph:
    """Prediction records as an rdflib graph (see :func:`prediction_ntriples` for errors)."""
    return ntriples_to_graph(prediction_ntriples(records, onto, errors))


def sentences_to_graph(
    records: Iterable[Any],
    onto: OntologyLike,
    miner: Mapping[str, Any] | None = None,
    dataset: str = "deeplesion",
    errors: list[str] | None = None,
) -> Graph:
    """Mined-sentence records as an rdflib graph of training labels with provenance."""
    return ntriples_to_graph(sentence_ntriples(records, onto, miner, dataset, errors))


def turtle_from_ntriples(ntriples: str) -> str:
    """Turtle with the project prefixes, subjects grouped, literals kept exactly as written
    (pyoxigraph; rdflib's Turtle writer would round doubles to 7 digits)."""
    triples = sorted(
        ox.parse(ntriples, format=ox.RdfFormat.N_TRIPLES),
        key=lambda t: (str(t.subject), str(t.predicate), str(t.object)),
    )
    # No prefix for data IRIs: their local parts hold '/', which Turtle would escape.
    prefixes = {k: v for k, v in vocab.PREFIXES.items() if k != "data"}
    text = ox.serialize(triples, format=ox.RdfFormat.TURTLE, prefixes=prefixes)
    assert text is not None  # serialize returns the bytes when given no output
    return text.decode("utf-8")


def serialize_graph(graph: Graph, fmt: str) -> str:
    """A graph as Turtle, sorted N-Triples or compacted JSON-LD (project prefixes)."""
    fmt = output_format("", fmt)
    if fmt == "json-ld":
        context = {prefix: ns for prefix, ns in vocab.PREFIXES.items()}
        return graph.serialize(format="json-ld", context=context, auto_compact=True)
    ntriples = graph.serialize(format="nt")
    if fmt == "nt":
        return "".join(sorted(ntriples.splitlines(keepends=True)))
    return turtle_from_ntriples(ntriples)


def write_rdf(
    graph_or_records: Graph | Iterable[Any],
    path: str | os.PathLike[str],
    fmt: str | None = None,
    onto: OntologyLike | None = None,
    errors: list[str] | None = None,
) -> int:
    """Write a graph, or prediction records, as Turtle / N-Triples / JSON-LD (atomically).

    Records need ``onto``; Turtle and N-Triples from records skip rdflib. Returns the
    number of triples written.
    """
    target = Path(path)
    fmt = output_format(target, fmt)
    if isinstance(graph_or_records, Graph):
        text = serialize_graph(graph_or_records, fmt)
        write_text_atomic(target, text)
        return len(graph_or_records)
    if onto is None:
        raise KgError("write_rdf needs the ontology to convert prediction records")
    if fmt == "json-ld":
        graph = predictions_to_graph(graph_or_records, onto, errors)
        text = serialize_graph(graph, fmt)
        write_text_atomic(target, text)
        return len(graph)
    lines = list(prediction_ntriples(graph_or_records, onto, errors))
    ntriples = "".join(lines)
    text = "".join(sorted(ntriples.splitlines(keepends=True))) if fmt == "nt" else turtle_from_ntriples(ntriples)
    write_text_atomic(target, text)
    return ntriples.count("\n")
