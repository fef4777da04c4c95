"""A SPARQL 1.1 Protocol client: the same queries and loads against any remote server.

Works with Oxigraph server, Apache Jena Fuseki, GraphDB, Virtuoso… Queries ask for the
union of the project graphs with ``default-graph-uri`` (the same dataset the embedded
store queries); loads are SPARQL 1.1 ``INSERT DATA`` updates in chunks. Parameters are
bound with a ``VALUES`` block built from validated RDF terms (:mod:`kg.binding`).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyoxigraph as ox

from kg import rdf, vocab
from kg.backend import SparqlBackend
from kg.binding import Binding, bind_values
from kg.errors import KgError
from kg.ntriples import chunked
from kg.results import QueryResult
from ontology.errors import LesanetError
from ontology.protocol import OntologyLike

_RESULTS_JSON = "application/sparql-results+json"
_NTRIPLES = "application/n-triples"


class EndpointError(LesanetError, OSError):
    """The server refused a request or could not be reached (message says which)."""


class SparqlEndpoint(SparqlBackend):
    """A remote SPARQL 1.1 server.

    ``query_url`` answers queries; ``update_url`` takes updates (default: the query URL
    with a trailing ``/query`` or ``/sparql`` replaced by ``/update``, else the same URL).
    ``token`` is sent as ``Authorization: Bearer`` on updates.
    """

    def __init__(
        self, query_url: str, update_url: str | None = None, token: str | None = None, timeout: float = 120
    ) -> None:
        parsed = urllib.parse.urlparse(query_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise KgError(f"not an http(s) SPARQL endpoint URL: {query_url!r}")
        self.query_url = query_url
        self.update_url = update_url or re.sub(r"/(query|sparql)/?$", "/update", query_url)
        self.token = token
        self.timeout = timeout

    def _post(self, url: str, form: list[tuple[str, str]], accept: str, auth: bool) -> tuple[str, bytes]:
        data = urllib.parse.urlencode(form).encode("ascii")
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": accept}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip().splitlines()
            reason = detail[0][:300] if detail else exc.reason
            raise EndpointError(f"{url} answered HTTP {exc.code}: {reason}") from exc
        except urllib.error.URLError as exc:
            raise EndpointError(f"cannot reach {url}: {exc.reason}") from exc

    def query(self, text: str, bindings: Mapping[str, Binding] | None = None) -> QueryResult:
        # The project prefixes, declared first (a query may redeclare any of them).
        prologue = "".join(f"PREFIX {p}: <{ns}>\n" for p, ns in vocab.PREFIXES.items())
        form = [("query", prologue + bind_values(text, bindings or {}))]
        form += [("default-graph-uri", g) for g in vocab.QUERY_GRAPHS]
        content_type, body = self._post(self.query_url, form, f"{_RESULTS_JSON}, {_NTRIPLES};q=0.9", auth=False)
        if content_type.startswith(_NTRIPLES) or content_type.startswith("text/plain"):
            return QueryResult(ntriples=body.decode("utf-8"))
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise EndpointError(f"{self.query_url} did not answer SPARQL JSON results (got {content_type!r})") from exc
        if "boolean" in data:
            return QueryResult(boolean=bool(data["boolean"]))
        return QueryResult(variables=list(data["head"].get("vars", [])), rows=list(data["results"]["bindings"]))

    def update(self, text: str) -> None:
        self._post(self.update_url, [("update", text)], "*/*", auth=True)

    def load_ntriples(
        self, lines: Iterable[str], graph: str = vocab.GRAPH_PREDICTIONS, lines_per_request: int = 20_000
    ) -> int:
        """Upload N-Triples lines into ``graph`` with ``INSERT DATA`` (N-Triples is valid
        SPARQL triple syntax); returns the number of lines sent."""
        target = str(to_oxigraph_iri(graph))
        sent = 0
        for chunk in chunked(lines, lines_per_request):
            self.update(f"INSERT DATA {{ GRAPH {target} {{\n{chunk}}} }}")
            sent += chunk.count("\n")
        return sent

    def clear_graph(self, graph: str) -> None:
        self.update(f"CLEAR SILENT GRAPH {to_oxigraph_iri(graph)}")

    # --- the loading primitives of kg.backend.SparqlBackend (which gives load_files)

    def has_ontology(self) -> bool:
        result = self.query("ASK { ?class a <http://www.w3.org/2002/07/owl#Class> }")
        return bool(result.boolean)

    def load_ontology(self, onto: OntologyLike) -> int:
        """Replace the ontology graphs on the server with ``onto`` (OWL + inferred edges)."""
        self.clear_graph(vocab.GRAPH_ONTOLOGY)
        self.clear_graph(vocab.GRAPH_ONTOLOGY_INFERRED)
        triples = ox.parse(onto.serialize("ttl"), format=ox.RdfFormat.TURTLE)  # type: ignore[attr-defined]
        sent = self.load_ntriples((f"{t} .\n" for t in triples), vocab.GRAPH_ONTOLOGY)
        return sent + self.load_ntriples(rdf.ontology_inferred_ntriples(onto), vocab.GRAPH_ONTOLOGY_INFERRED)

    def load_rdf_file(self, path: Path, fmt: ox.RdfFormat, graph: str) -> int:
        """An RDF file that parses (``load_files`` checked it), read whole and uploaded
        graph by graph: triples (and quads in no named graph) into ``graph``, the other
        quads of N-Quads / TriG into their own graphs."""
        by_graph: dict[str, list[str]] = {}
        for item in ox.parse(path=str(path), format=fmt):
            named = item.graph_name if isinstance(item, ox.Quad) else None
            by_graph.setdefault(named.value if isinstance(named, ox.NamedNode) else graph, []).append(
                f"{item.subject} {item.predicate} {item.object} .\n"
            )
        return sum(self.load_ntriples(lines, g) for g, lines in by_graph.items())

    def optimize(self) -> None:
        """Nothing to do: a server keeps its own storage compact."""


def to_oxigraph_iri(iri: str) -> str:
    """``<iri>`` after validation (raises ValueError on a malformed IRI)."""
    return str(ox.NamedNode(iri))
