"""The RDF syntaxes kg reads and writes: one table (names, suffixes, parser names) for every path.

``kg rdf`` / ``kg export`` write the first three; ``kg load`` and ``kg validate`` read them all.
A ``.json`` file is a JSON records file on input (prediction or mined-sentence records,
``kg.backend.classify_json``) and JSON-LD on output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kg.errors import KgError


@dataclass(frozen=True)
class RdfSyntax:
    name: str  # the toolkit's name (--format)
    oxigraph_name: str  # pyoxigraph's RdfFormat member
    rdflib: str  # rdflib's parser / serializer name
    suffixes: tuple[str, ...]  # read and written
    written: bool  # the toolkit writes it (kg rdf --format)
    output_suffixes: tuple[str, ...] = ()  # written only

    @property
    def oxigraph(self) -> Any:
        """pyoxigraph's ``RdfFormat``."""
        import pyoxigraph as ox  # local: the CLI reads this table to build --help, which stays fast without it

        return getattr(ox.RdfFormat, self.oxigraph_name)


SYNTAXES: tuple[RdfSyntax, ...] = (
    RdfSyntax("turtle", "TURTLE", "turtle", (".ttl",), True),
    RdfSyntax("nt", "N_TRIPLES", "nt", (".nt",), True),
    RdfSyntax("json-ld", "JSON_LD", "json-ld", (".jsonld",), True, (".json",)),
    RdfSyntax("nquads", "N_QUADS", "nquads", (".nq",), False),
    RdfSyntax("trig", "TRIG", "trig", (".trig",), False),
    RdfSyntax("rdf-xml", "RDF_XML", "xml", (".owl", ".rdf", ".xml"), False),
    RdfSyntax("n3", "N3", "n3", (".n3",), False),
)
BY_NAME = {s.name: s for s in SYNTAXES}
ALIASES = {"ttl": "turtle", "ntriples": "nt", "n-triples": "nt", "jsonld": "json-ld"}
#: the names ``--format`` takes for output
OUTPUT_FORMATS: tuple[str, ...] = tuple(s.name for s in SYNTAXES if s.written)


def output_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """Normalise an output format name, or guess it from the file suffix (.ttl, .nt, .jsonld)."""
    if fmt:
        fmt = ALIASES.get(fmt.lower(), fmt.lower())
        if fmt not in OUTPUT_FORMATS:
            raise KgError(f"unknown RDF format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for syntax in SYNTAXES:
        if syntax.written and suffix in syntax.suffixes + syntax.output_suffixes:
            return syntax.name
    raise KgError(f"cannot tell the RDF format of {path} from its suffix; use .ttl, .nt or .jsonld, or give the format")


def input_syntax(path: str | os.PathLike[str]) -> RdfSyntax:
    """The RDF syntax of a file to read, from its suffix."""
    suffix = Path(path).suffix.lower()
    for syntax in SYNTAXES:
        if suffix in syntax.suffixes:
            return syntax
    known = " ".join(s for syntax in SYNTAXES for s in syntax.suffixes)
    raise KgError(f"{path}: unknown RDF suffix {Path(path).suffix!r}; use {known}")
