"""The embedded on-disk store (pyoxigraph) and an rdflib in-memory twin for comparison.

Named graphs: the ontology (OWL as shipped), its inferred direct parent edges, the
predictions and the text-mined training labels (see :mod:`kg.vocab`). Queries run over
their union as the default graph, the same dataset the endpoint client asks a remote
server for (``default-graph-uri``), so the same SPARQL text works everywhere.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, islice
from pathlib import Path
from typing import Any, cast

import pyoxigraph as ox
import rdflib
from rdflib.query import ResultRow
from rdflib.term import Identifier

from kg import ntriples as nt
from kg import rdf, rdf_io, vocab
from kg.backend import SparqlBackend, load_json_records
from kg.binding import Binding, bind_values, to_rdflib
from kg.errors import KgError
from kg.results import Cell, QueryResult
from ontology.errors import LesanetError
from ontology.protocol import OntologyLike

_LINES_PER_CHUNK = 20_000
_LINES_PER_BULK_LOAD = 200_000


class ResultTooLarge(LesanetError, ValueError):
    """A user query's result passed its row or byte limit (the message names the option)."""


def _too_large(max_rows: int | None, max_bytes: int | None, rows_left: int, unit: str) -> None:
    if max_rows is not None and rows_left < 0:
        raise ResultTooLarge(
            f"the result has more than {max_rows:,} {unit} (--max-rows); add LIMIT or narrow the query"
        )
    raise ResultTooLarge(f"the result is over {max_bytes:,} bytes (--max-bytes); add LIMIT or select fewer variables")


_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"


def _oxigraph_cell(term: Any) -> Cell:
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    cell = {"type": "literal", "value": term.value}
    if term.language:
        cell["xml:lang"] = term.language
    elif term.datatype.value != _XSD_STRING:
        cell["datatype"] = term.datatype.value
    return cell


def _rdflib_cell(term: Any) -> Cell:
    if isinstance(term, rdflib.URIRef):
        return {"type": "uri", "value": str(term)}
    if isinstance(term, rdflib.BNode):
        return {"type": "bnode", "value": str(term)}
    cell = {"type": "literal", "value": str(term)}
    if term.language:
        cell["xml:lang"] = term.language
    elif term.datatype is not None and str(term.datatype) not in (_XSD_STRING, _LANG_STRING):
        cell["datatype"] = str(term.datatype)
    return cell


class _ChunkReader(io.RawIOBase):
    """A binary file over an iterator of text chunks: streams N-Triples into bulk_load."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")
        self.lines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not len(self._buffer):
            try:
                text = next(self._chunks)
            except StopIteration:
                return 0
            self.lines += text.count("\n")
            self._buffer = memoryview(text.encode("utf-8"))
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]  # a view: no copy of the rest
        return size


# ----------------------------------------------------------------- pyoxigraph store


class LesionStore(SparqlBackend):
    """A pyoxigraph store on disk (or in memory when ``path`` is None)."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is None:
            self._store = ox.Store()
        elif read_only:
            if not self.path.is_dir():
                raise FileNotFoundError(
                    f"no store at {self.path}; create it with `lesanet kg load FILE --store {self.path}`"
                )
            self._store = ox.Store.read_only(str(self.path))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._store = ox.Store(str(self.path))

    # -- loading

    def load_ntriples(self, lines: Iterable[str], graph: str = vocab.GRAPH_PREDICTIONS) -> int:
        """Bulk-load N-Triples lines into ``graph``; returns the number of lines read.

        One ``bulk_load`` per ``_LINES_PER_BULK_LOAD`` lines: Oxigraph's bulk loader keeps
        what it is given in memory until the call ends, so one call over a whole file
        grows with the file (about 1.7 GiB for 4.5 M triples); ``optimize()`` afterwards
        merges the extra index files."""
        chunks = nt.chunked(lines, _LINES_PER_CHUNK)
        total = 0
        while (first := next(chunks, None)) is not None:
            batch = chain([first], islice(chunks, _LINES_PER_BULK_LOAD // _LINES_PER_CHUNK - 1))
            reader = _ChunkReader(batch)
            self._store.bulk_load(
                io.BufferedReader(reader, buffer_size=1 << 20),
                format=ox.RdfFormat.N_TRIPLES,
                to_graph=ox.NamedNode(graph),
            )
            total += reader.lines
        return total

    def load_graph(self, graph: rdflib.Graph, graph_iri: str = vocab.GRAPH_PREDICTIONS) -> int:
        """Load an rdflib graph (e.g. from :func:`kg.rdf_io.predictions_to_graph`)."""
        data = graph.serialize(format="nt", encoding="utf-8")
        self._store.bulk_load(data, format=ox.RdfFormat.N_TRIPLES, to_graph=ox.NamedNode(graph_iri))
        return len(graph)

    def load_records(self, records: Iterable[Any], onto: OntologyLike, errors: list[str] | None = None) -> int:
        """Prediction records straight into the predictions graph (no rdflib graph built)."""
        return load_json_records(self, "predictions", records, onto, errors)

    def load_sentences(
        self,
        records: Iterable[Any],
        onto: OntologyLike,
        dataset: str = "deeplesion",
        errors: list[str] | None = None,
    ) -> int:
        return load_json_records(self, "sentences", records, onto, errors, dataset)

    def load_ontology(self, onto: OntologyLike) -> int:
        """Replace the ontology graphs with ``onto`` (its OWL + inferred parent edges)."""
        for graph in (vocab.GRAPH_ONTOLOGY, vocab.GRAPH_ONTOLOGY_INFERRED):
            self._store.clear_graph(ox.NamedNode(graph))
        turtle = onto.serialize("ttl")  # type: ignore[attr-defined]
        self._store.bulk_load(
            turtle.encode("utf-8"), format=ox.RdfFormat.TURTLE, to_graph=ox.NamedNode(vocab.GRAPH_ONTOLOGY)
        )
        inferred = self.load_ntriples(rdf.ontology_inferred_ntriples(onto), vocab.GRAPH_ONTOLOGY_INFERRED)
        return self.count(vocab.GRAPH_ONTOLOGY) + inferred

    def load_rdf_file(self, path: Path, fmt: ox.RdfFormat, graph: str) -> int:
        """An RDF file that parses (``load_files`` checked it), bulk-loaded (fast, not
        atomic): triples into ``graph``, N-Quads / TriG into their own graphs."""
        before = len(self._store)
        target = None if fmt.supports_datasets else ox.NamedNode(graph)
        self._store.bulk_load(path=str(path), format=fmt, to_graph=target)
        return len(self._store) - before

    # -- queries

    def query(
        self, text: str, bindings: Mapping[str, Binding] | None = None, graphs: Iterable[str] | None = None
    ) -> QueryResult:
        """Run SPARQL over the union of all graphs (or of ``graphs``) with ``bindings``
        bound by a VALUES block (:func:`kg.binding.bind_values`); the project prefixes
        (``kg:``, ``lesion:``, ``oa:``, ``prov:``…) need no PREFIX lines.

        Oxigraph's union default graph is ~2-3x faster than an explicit graph list; the
        store holds only the project graphs, so it is the same dataset the endpoint
        client asks a server for.
        """
        return self._collect(self._evaluate(bind_values(text, bindings or {}), graphs), None, None)

    def query_limited(self, text: str, graphs: Iterable[str] | None, max_rows: int, max_bytes: int) -> QueryResult:
        """A user query that stops (raises :class:`ResultTooLarge`) as soon as its result
        passes ``max_rows`` rows/triples or about ``max_bytes`` of values, so a
        ``SELECT * {?s ?p ?o}`` costs neither the time nor the memory of the whole store."""
        return self._collect(self._evaluate(text, graphs), max_rows, max_bytes)

    def _evaluate(self, text: str, graphs: Iterable[str] | None) -> Any:
        graph_list = list(graphs or [])
        try:
            dataset: dict[str, Any] = (
                {"default_graph": [ox.NamedNode(g) for g in graph_list]}
                if graph_list
                else {"use_default_graph_as_union": True}
            )
            return self._store.query(text, prefixes=vocab.PREFIXES, **dataset)
        except SyntaxError as exc:
            raise KgError(f"SPARQL syntax error: {exc}") from exc

    @staticmethod
    def _collect(result: Any, max_rows: int | None, max_bytes: int | None) -> QueryResult:
        """Solutions as a :class:`QueryResult`; with limits (both or neither), raise
        :class:`ResultTooLarge` at the first row past either."""
        if isinstance(result, ox.QueryBoolean):
            return QueryResult(boolean=bool(result))
        limited = max_rows is not None and max_bytes is not None
        rows_left, bytes_left = (max_rows or 0, max_bytes or 0) if limited else (0, 0)
        if isinstance(result, ox.QueryTriples):
            lines = []
            for triple in result:
                lines.append(f"{triple} .\n")
                if limited:
                    rows_left -= 1
                    bytes_left -= len(lines[-1])
                    if rows_left < 0 or bytes_left < 0:
                        _too_large(max_rows, max_bytes, rows_left, "triples")
            return QueryResult(ntriples="".join(lines))
        variables = [v.value for v in result.variables]
        rows = []
        for solution in result:
            row = {}
            for var in variables:
                term = solution[var]
                if term is not None:
                    row[var] = _oxigraph_cell(term)
            rows.append(row)
            if limited:
                rows_left -= 1
                # Values plus a JSON/CSV overhead per cell: an under-count; callers check the exact size.
                bytes_left -= sum(len(cell["value"]) + 32 for cell in row.values())
                if rows_left < 0 or bytes_left < 0:
                    _too_large(max_rows, max_bytes, rows_left, "rows")
        return QueryResult(variables=variables, rows=rows)

    def update(self, text: str) -> None:
        self._store.update(text)

    # -- inspection

    def count(self, graph: str | None = None) -> int:
        if graph is None:
            return len(self._store)
        return sum(1 for _ in self._store.quads_for_pattern(None, None, None, ox.NamedNode(graph)))

    def has_ontology(self) -> bool:
        return self._store.contains_named_graph(ox.NamedNode(vocab.GRAPH_ONTOLOGY)) and any(
            True for _ in self._store.quads_for_pattern(None, None, None, ox.NamedNode(vocab.GRAPH_ONTOLOGY))
        )

    def graph_sizes(self) -> dict[str, int]:
        return {str(g.value): self.count(g.value) for g in self._store.named_graphs()}

    def flush(self) -> None:
        self._store.flush()

    def optimize(self) -> None:
        """Compact the on-disk indexes after bulk loads (bulk loading writes many small
        sorted files; queries on a fresh bulk load are several times slower until this)."""
        self._store.optimize()

    def dump_ntriples(self, graph: str = vocab.GRAPH_PREDICTIONS) -> Iterator[str]:
        """The N-Triples lines of one graph (to upload it elsewhere)."""
        for quad in self._store.quads_for_pattern(None, None, None, ox.NamedNode(graph)):
            yield f"{quad.subject} {quad.predicate} {quad.object} .\n"


# ----------------------------------------------------------------- rdflib twin


class RdflibStore:
    """The same dataset in rdflib's in-memory store: the baseline of ``bench/kg.py`` and
    an independent engine that tests check the canned queries against.

    rdflib 7's own union-graph code calls its deprecated ``default_context`` once per
    triple pattern; those warnings are silenced here (they say nothing about our use).
    """

    def __init__(self) -> None:
        self.dataset = rdflib.Dataset(default_union=True)

    def load_ntriples(self, lines: Iterable[str], graph: str = vocab.GRAPH_PREDICTIONS) -> int:
        target = self.dataset.graph(rdflib.URIRef(graph))
        before = len(target)
        rdf_io.ntriples_to_graph(lines, target)
        return len(target) - before

    def load_graph(self, graph: rdflib.Graph, graph_iri: str = vocab.GRAPH_PREDICTIONS) -> int:
        target = self.dataset.graph(rdflib.URIRef(graph_iri))
        target += graph
        return len(graph)

    def load_ontology(self, onto: OntologyLike) -> int:
        ontology = self.dataset.graph(rdflib.URIRef(vocab.GRAPH_ONTOLOGY))
        ontology.parse(data=onto.serialize("ttl"), format="turtle")  # type: ignore[attr-defined]
        inferred = self.load_ntriples(rdf.ontology_inferred_ntriples(onto), vocab.GRAPH_ONTOLOGY_INFERRED)
        return len(ontology) + inferred

    def query(self, text: str, bindings: Mapping[str, Binding] | None = None) -> QueryResult:
        init = {k: to_rdflib(v) for k, v in (bindings or {}).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._query(text, init)

    def _query(self, text: str, init: dict[str, Identifier]) -> QueryResult:
        result = self.dataset.query(text, initBindings=init, initNs=vocab.PREFIXES)
        if result.type == "ASK":
            return QueryResult(boolean=bool(result.askAnswer))
        if result.type in ("CONSTRUCT", "DESCRIBE"):
            return QueryResult(ntriples=(result.serialize(format="nt") or b"").decode("utf-8"))
        variables = [str(v) for v in result.vars or ()]
        rows = [
            {var: _rdflib_cell(row[i]) for i, var in enumerate(variables) if row[i] is not None}
            for row in cast(Iterable[ResultRow], result)
        ]
        return QueryResult(variables=variables, rows=rows)
