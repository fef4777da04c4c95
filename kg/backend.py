"""The backend interface (:class:`SparqlBackend`) and ``kg load``'s one path over it.

A backend (the embedded :class:`kg.store.LesionStore`, a remote
:class:`kg.endpoint.SparqlEndpoint`) subclasses :class:`SparqlBackend` and supplies the
primitives: queries, N-Triples lines into a named graph, an RDF file that parses into
its dataset, the ontology graphs. :meth:`SparqlBackend.load_files` is the rest, written
once: every named file must exist before anything is loaded; ``.json`` / ``.jsonl``
files of prediction or mined-sentence records are streamed through :mod:`kg.rdf`
(memory: one record, not the file); JSON-LD and the RDF syntaxes of :mod:`kg.formats`
are checked to parse (all or nothing) and handed to the backend; bad records and RDF
files that do not parse are reported as ``FILE: line N …: reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pyoxigraph as ox

from kg import rdf, vocab
from kg.binding import Binding
from kg.errors import KgError
from kg.formats import BY_NAME, input_syntax
from kg.records import iter_json_records
from kg.results import QueryResult
from ontology.batch import ErrorSink, RecordError
from ontology.protocol import OntologyLike

JSON_SUFFIXES = (".json", ".jsonl")  # JSON records (or JSON-LD) on input


class SparqlBackend(Protocol):
    """What canned queries and the CLI need from a store or an endpoint. A backend
    subclasses it, implements the primitives and inherits :meth:`load_files`."""

    def query(self, text: str, bindings: Mapping[str, Binding] | None = None) -> QueryResult: ...

    def load_ntriples(self, lines: Iterable[str], graph: str = vocab.GRAPH_PREDICTIONS) -> int:
        """N-Triples lines into ``graph``; returns the lines (triples) loaded."""
        ...

    def load_rdf_file(self, path: Path, fmt: ox.RdfFormat, graph: str) -> int:
        """An RDF file already checked to parse: triples into ``graph``, the quads of
        N-Quads / TriG into their own graphs; returns the triples loaded."""
        ...

    def has_ontology(self) -> bool: ...

    def load_ontology(self, onto: OntologyLike) -> int: ...

    def optimize(self) -> None: ...

    def load_files(
        self,
        paths: Iterable[str | Path],
        graph: str | None = None,
        onto: OntologyLike | None = None,
        errors: ErrorSink | None = None,
        dataset: str = "deeplesion",
    ) -> dict[str, int]:
        """Load RDF files (by suffix; N-Quads/TriG keep their graphs) and JSON records;
        returns the triples (or lines) loaded per file.

        ``.json``/``.jsonl`` holding prediction or mined-sentence records are converted
        (needs ``onto``); OWL/RDF-XML goes to ``graph`` or the predictions graph like any
        other triples file. With ``errors``, a bad record (torn line, bad field…) or an
        RDF file with a syntax error (loaded all or nothing) is reported there as
        ``FILE: line N …: reason`` and the rest is loaded; without it, the first one
        raises :class:`RecordError` after its file.
        """
        files = [Path(p) for p in paths]
        for path in files:  # all named files must exist before anything is loaded
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
        loaded: dict[str, int] = {}
        for path in files:
            file_errors = _FileErrors(errors, path)
            loaded[str(path)] = _load_file(self, path, graph or vocab.GRAPH_PREDICTIONS, onto, file_errors, dataset)
            if file_errors.first is not None:
                raise RecordError(file_errors.first)
        return loaded


def _record_kind(record: Any) -> str | None:
    if isinstance(record, Mapping):
        if "lesion_id" in record and "labels" in record:
            return "predictions"
        if "lesion_idx" in record and "text" in record:
            return "sentences"
    return None


def _looks_json_ld(record: Any) -> bool:
    return isinstance(record, Mapping) and any(isinstance(k, str) and k.startswith("@") for k in record)


def classify_json(path: Path, probe: int = 100) -> str:
    """``predictions``, ``sentences`` or ``json-ld`` for a .json/.jsonl file, from its
    first good records (the file is not read whole; torn lines are skipped here and
    reported by the load). A ``.jsonl`` file is never JSON-LD; a ``.json`` file is when
    it is one JSON document (not a list or lines of records) or its records carry
    ``@`` keys. Records of no known shape count as predictions, so that the load
    names each of them with its line and the missing field."""
    is_lines = path.suffix.lower() == ".jsonl"
    for i, item in enumerate(iter_json_records(path, errors=[])):
        kind = _record_kind(item.value)
        if kind is not None:
            return kind
        if not is_lines and _looks_json_ld(item.value):
            return "json-ld"
        if i + 1 >= probe:
            break
    if not is_lines:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
            handle.seek(0)
            first_line = handle.readline(1 << 20)
        if head.startswith(b"{"):
            try:
                first = json.loads(first_line)
            except ValueError:
                return "json-ld"  # a multi-line JSON document
            if _looks_json_ld(first) or _record_kind(first) is None:
                return "json-ld"
    return "predictions"


def load_json_records(
    backend: SparqlBackend,
    kind: str,
    records: Iterable[Any],
    onto: OntologyLike,
    errors: ErrorSink | None = None,
    dataset: str = "deeplesion",
) -> int:
    """Prediction (``kind`` ``predictions``) or mined-sentence records as N-Triples into
    their graph (no rdflib graph built); bad records as :func:`kg.rdf.prediction_ntriples`
    says."""
    if kind == "predictions":
        return backend.load_ntriples(rdf.prediction_ntriples(records, onto, errors), vocab.GRAPH_PREDICTIONS)
    lines = rdf.sentence_ntriples(records, onto, dataset=dataset, errors=errors)
    return backend.load_ntriples(lines, vocab.GRAPH_TRAINING_LABELS)


class _FileErrors:
    """One file's ``errors`` sink: each message, with the file name before it, goes on to
    the caller's sink; with no sink, only the first is kept (to raise after the file)."""

    def __init__(self, target: ErrorSink | None, path: Path) -> None:
        self.target = target
        self.path = path
        self.first: str | None = None

    def append(self, message: str, /) -> None:
        line = f"{self.path}: {message}"
        if self.target is not None:
            self.target.append(line)
        elif self.first is None:
            self.first = line


def _load_file(
    backend: SparqlBackend, path: Path, graph: str, onto: OntologyLike | None, errors: _FileErrors, dataset: str
) -> int:
    if path.suffix.lower() in JSON_SUFFIXES:
        kind = classify_json(path)
        if kind != "json-ld":
            if onto is None:
                raise KgError(f"{path}: converting {kind} records needs the ontology")
            return load_json_records(backend, kind, iter_json_records(path, errors), onto, errors, dataset)
        fmt = BY_NAME["json-ld"].oxigraph
    else:
        fmt = input_syntax(path).oxigraph
    problem = _parse_problem(path, fmt)
    if problem is not None:
        errors.append(f"not loaded: {problem}")
        return 0
    return backend.load_rdf_file(path, fmt, graph)


def _parse_problem(path: Path, fmt: ox.RdfFormat) -> str | None:
    """Why an RDF file does not parse (its first line), or None: one streaming parse,
    nothing kept, so that a bad file is loaded not at all rather than in part."""
    try:
        for _ in ox.parse(path=str(path), format=fmt):
            pass
    except SyntaxError as exc:
        return str(exc).splitlines()[0]
    except (OSError, ValueError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None
