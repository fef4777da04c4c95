"""SHACL validation (pyshacl) of what the toolkit emits against ``kg/shapes.ttl``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyshacl
import rdflib
from rdflib.namespace import OWL, RDF, SH

from kg.formats import BY_NAME, input_syntax
from kg.vocab import OA

SHAPES_PATH = Path(__file__).resolve().with_name("shapes.ttl")


@dataclass(frozen=True)
class ShaclReport:
    conforms: bool
    violations: int
    text: str  # pyshacl's human-readable report


@lru_cache(maxsize=1)
def _shapes() -> rdflib.Graph:
    graph = rdflib.Graph()
    graph.parse(SHAPES_PATH, format="turtle")
    return graph


def _shapes_with_ontology_check() -> rdflib.Graph:
    """The shapes plus: every annotation body is a class of the given ontology."""
    graph = rdflib.Graph()
    graph += _shapes()
    shape = rdflib.URIRef("https://w3id.org/lesanet/kg/shapes#BodyIsOntologyClassShape")
    graph.add((shape, RDF.type, SH.NodeShape))
    graph.add((shape, SH.targetObjectsOf, OA.hasBody))
    graph.add((shape, SH["class"], OWL.Class))
    return graph


def validate_graph(data: rdflib.Graph, ontology: rdflib.Graph | None = None) -> ShaclReport:
    """Validate ``data``; with ``ontology`` also check every body is one of its classes."""
    shapes = _shapes() if ontology is None else _shapes_with_ontology_check()
    conforms, results, text = pyshacl.validate(
        data, shacl_graph=shapes, ont_graph=ontology, inference="none", allow_warnings=False
    )
    violations = sum(1 for _ in results.subjects(RDF.type, SH.ValidationResult))
    return ShaclReport(conforms=bool(conforms), violations=violations, text=str(text))


def validate_file(path: str | Path, ontology: rdflib.Graph | None = None) -> tuple[ShaclReport, int]:
    """Validate an RDF file (syntax by suffix, ``.json`` = JSON-LD); the report and its triples."""
    path = Path(path)
    syntax = BY_NAME["json-ld"] if path.suffix.lower() == ".json" else input_syntax(path)
    graph = rdflib.Graph().parse(path, format=syntax.rdflib)
    return validate_graph(graph, ontology), len(graph)
