"""N-Triples terms, written as text: IRIs, escaped literals, lines and chunks.

The record-to-triples mapping (:mod:`kg.rdf`) builds every triple with these, so no record
value can form RDF syntax: an IRI from outside is checked once, a literal is JSON-escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from rdflib.namespace import OWL, RDF, RDFS, XSD

from ontology.batch import RecordError

XSD_DOUBLE = f"<{XSD.double}>"
XSD_INTEGER = f"<{XSD.integer}>"
XSD_STRING = str(XSD.string)
TRUE = f'"true"^^<{XSD.boolean}>'
FALSE = f'"false"^^<{XSD.boolean}>'

A = f"<{RDF.type}>"
VALUE = f"<{RDF.value}>"
LABEL = f"<{RDFS.label}>"
SUBCLASS = f"<{RDFS.subClassOf}>"
DISJOINT = f"<{OWL.disjointWith}>"


NOT_IN_IRI = re.compile(r'[<>"{}|^`\\\x00-\x20]')


@lru_cache(maxsize=4096)
def iri(value: str) -> str:
    """``<value>`` for an IRI from outside (ontology classes, constants), checked once."""
    if NOT_IN_IRI.search(value):
        raise RecordError(f"not a usable IRI: {value!r}")
    return f"<{value}>"


def minted(value: str) -> str:
    """``<value>`` for an IRI minted by :mod:`kg.vocab` (%-encoded: safe by construction)."""
    return f"<{value}>"


def ref(ns_term: Any) -> str:
    return f"<{ns_term}>"


def string(text: str) -> str:
    # JSON string escaping is valid N-Triples STRING_LITERAL_QUOTE syntax.
    return json.dumps(text, ensure_ascii=False)


def double(value: float) -> str:
    return f'"{float(value)!r}"^^{XSD_DOUBLE}'


def integer(value: int) -> str:
    return f'"{int(value)}"^^{XSD_INTEGER}'


def boolean(value: bool) -> str:
    return TRUE if value else FALSE


def line(s: str, p: str, o: str) -> str:
    return f"{s} {p} {o} .\n"


def chunked(pieces: Iterable[str], size: int) -> Iterator[str]:
    """Join N-Triples text pieces (whole lines each; a prediction record comes as one
    piece) into chunks of about ``size`` lines."""
    batch: list[str] = []
    lines = 0
    for piece in pieces:
        batch.append(piece)
        lines += piece.count("\n")
        if lines >= size:
            yield "".join(batch)
            batch, lines = [], 0
    if batch:
        yield "".join(batch)
