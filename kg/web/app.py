"""The lesion browser: server-rendered pages on ``kg serve``'s route table.

Pages (GET; ``/sparql`` also POST): ``/`` (the store at a glance), ``/lesion?id=``,
``/label?name=``, ``/search?by=description|label|lesion&q=``, ``/sparql``; images
``/patch?id=``; ``/static/…`` (the style sheet). Every page query runs in the server's
worker pool under its limits, with its values bound (:mod:`kg.web.queries`). HTML comes
from Jinja2 templates with autoescaping, so every text from the store or the request is
escaped; the pages use no JavaScript and fetch nothing from the network (the
Content-Security-Policy header says so to the browser too).

``kg`` does not import the text miner: a free-text search calls a ``describe(text)``
function handed in by whoever builds the browser (``cli.py``).
"""

from __future__ import annotations

import importlib.resources
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import jinja2
import rdflib

from kg import vocab
from kg.binding import Binding, bind_values
from kg.canned import CANNED, bindings_for
from kg.guard import QueryRejected, check_sparql
from kg.pool import QueryFailed, query_request
from kg.results import QueryResult, parse_results, short_form
from kg.server import HttpError, Request, Response, Route, SparqlServer
from kg.web import queries
from kg.web.evaluation import Evaluation
from kg.web.patches import PatchError, PatchRequest, PatchSource, as_int, parse_box
from ontology.protocol import OntologyLike

HTML = "text/html; charset=utf-8"
# No scripts, nothing from elsewhere: images, styles and form posts stay on this server.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
CATEGORIES = (("bodypart", "Body part"), ("type", "Type"), ("attribute", "Attribute"))
UNDECIDED_SHOWN = 8
SPARQL_ROWS_SHOWN = 500
HOME_LABELS_SHOWN = 30
HOME_LESIONS_SHOWN = 12
_STATIC = {"/static/browser.css": ("browser.css", "text/css; charset=utf-8")}
_LESION_PREFIX = vocab.LESION_PREFIX


@dataclass(frozen=True)
class Description:
    """What the text miner understood in a free-text description."""

    present: tuple[str, ...]  # label names said to be there
    uncertain: tuple[str, ...] = ()  # hedged ("possibly a cyst"): shown, not required
    absent: tuple[str, ...] = ()  # negated ("no calcification"): lesions with them are left out
    mentions: tuple[tuple[str, str, str], ...] = ()  # (words, label, relation)


Describe = Callable[[str], Description]


@dataclass
class BrowserConfig:
    ontology: OntologyLike
    patches: PatchSource = field(default_factory=PatchSource)
    evaluation: Evaluation = field(default_factory=Evaluation)
    describe: Describe | None = None
    page_size: int = 24


class LesionBrowser:
    """The browser's pages; :meth:`routes` is what ``kg.server.serve`` adds to its table."""

    def __init__(self, config: BrowserConfig) -> None:
        self.config = config
        self.onto: OntologyLike = config.ontology
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("kg.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["q"] = lambda value: urllib.parse.quote(str(value), safe="")
        self.env.filters["score"] = lambda value: "" if value is None else f"{float(value):.3f}"
        self.env.globals["categories"] = CATEGORIES
        self._templates = {name: self.env.get_template(name) for name in self.env.list_templates()}
        self._composites: dict[str, list[str]] = {}
        for term in self.onto.terms.values():
            for part in term.composite_of:
                self._composites.setdefault(part, []).append(term.name)
        self._static = {
            path: (importlib.resources.files("kg.web").joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }

    # ------------------------------------------------------------------ routing

    def routes(self) -> dict[str, Route]:
        def no_body(server: SparqlServer) -> int:
            return 0

        pages = {
            "/": self.home,
            "/lesion": self.lesion,
            "/label": self.label,
            "/search": self.search,
        }
        table = {path: Route(self._page(handler), ("GET",), no_body) for path, handler in pages.items()}
        table["/sparql"] = Route(self._page(self.sparql), ("GET", "POST"), lambda server: server.config.max_query_bytes)
        table["/patch"] = Route(self.patch, ("GET",), no_body)
        for path in self._static:
            table[path] = Route(self.static, ("GET",), no_body)
        return table

    def _page(
        self, handler: Callable[[SparqlServer, Request], Response]
    ) -> Callable[[SparqlServer, Request], Response]:
        """A page handler whose refusals are HTML pages with the same status and reason."""

        def page(server: SparqlServer, request: Request) -> Response:
            try:
                return handler(server, request)
            except HttpError as exc:
                body = self._render(
                    "error.html", status=exc.status, phrase=HTTPStatus(exc.status).phrase, message=str(exc)
                )
                return Response(exc.status, body, HTML, SECURITY_HEADERS + exc.headers)

        return page

    def _render(self, template: str, **context: Any) -> bytes:
        context.setdefault("title", "")
        return self._templates[template].render(**context).encode("utf-8")

    def _html(self, template: str, **context: Any) -> Response:
        return Response(HTTPStatus.OK, self._render(template, **context), HTML, list(SECURITY_HEADERS))

    # ------------------------------------------------------------------ queries

    def _runner(self, server: SparqlServer, request: Request) -> queries.Runner:
        limits = server.config.limits

        def run(text: str, bindings: Mapping[str, Binding]) -> QueryResult:
            work = query_request(bind_values(text, bindings), limits)
            try:
                header, body = server.pool.run(work, limits, request.client_gone)
            except QueryFailed as exc:
                raise HttpError(exc.status, str(exc)) from exc
            if not header.get("ok"):
                raise HttpError(int(header.get("status", 500)), str(header.get("message")))
            return parse_results(str(header["content_type"]), body)

        return run

    def _term(self, value: str) -> Any:
        """The ontology term of a label name, synonym or IRI; 404 naming close matches."""
        try:
            return self.onto.term(value)
        except LookupError as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, str(exc).strip("'\"")) from None

    def _label_name(self, iri: str) -> str | None:
        try:
            return str(self.onto.term(iri).name)
        except LookupError:
            return None

    @staticmethod
    def _param(request: Request, name: str, required: bool = True) -> str | None:
        value = request.single(name)
        if value is not None:
            value = value.strip()
        if required and not value:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"missing the {name!r} parameter")
        return value or None

    @staticmethod
    def _page_number(request: Request) -> int:
        text = request.single("page") or "1"
        if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"page must be a whole number from 1, got {text[:40]!r}")
        return int(text)

    def _lesion_info(self, run: queries.Runner, lesion_id: str) -> dict[str, Any]:
        rows = run(queries.LESION_INFO, queries.lesion_bindings(lesion_id)).values()
        if not rows:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no lesion {lesion_id!r} in the store; search for one at /search")
        info: dict[str, Any] = dict.fromkeys(queries.LESION_INFO_FIELDS) | queries.merged_rows(rows)
        # Predictions and mined sentences may name the dataset differently (kg load --dataset).
        info["dataset"] = ", ".join(dict.fromkeys(str(r["dataset"]) for r in rows if r.get("dataset"))) or None
        return info

    # ------------------------------------------------------------------ pages

    def home(self, server: SparqlServer, request: Request) -> Response:
        run = self._runner(server, request)
        summary = queries.first_row(run(queries.STORE_SUMMARY, {})) or {}
        counts = queries.canned(run, "label-counts", {}).values()
        lesions = [str(r["lesionId"]) for r in run(queries.FIRST_LESIONS % HOME_LESIONS_SHOWN, {}).values()]
        return self._html(
            "home.html",
            summary=summary,
            counts=counts[:HOME_LABELS_SHOWN],
            n_labels=len(counts),
            lesions=lesions,
            patches=self.config.patches.describe(),
            has_patches=self.config.patches.available,
            evaluation=self.config.evaluation,
            can_describe=self.config.describe is not None,
        )

    def lesion(self, server: SparqlServer, request: Request) -> Response:
        started = time.perf_counter()
        lesion_id = self._param(request, "id")
        assert lesion_id is not None
        run = self._runner(server, request)
        info = self._lesion_info(run, lesion_id)
        bindings = queries.lesion_bindings(lesion_id)
        scored = queries.canned(run, "labels-of-lesion", bindings).values()
        model = queries.first_row(run(queries.LESION_MODEL, bindings))
        training = queries.canned(run, "training-labels-of-lesion", bindings).values()
        similar = queries.canned(run, "similar-lesions", bindings).values()
        for row in similar:
            # A neighbour loaded from predictions and from mined sentences states its id in two
            # graphs, which the union default graph repeats in the canned query's GROUP_CONCAT.
            row["sharedLabels"] = ", ".join(dict.fromkeys(filter(None, str(row.get("sharedLabels") or "").split(", "))))
        labels = [self._scored_label(row) for row in scored]
        decided = [entry for entry in labels if entry["decision"]]
        grouped = {key: [e for e in decided if e["category"] == key] for key, _ in CATEGORIES}
        undecided = sorted((e for e in labels if not e["decision"]), key=lambda e: -e["score"])[:UNDECIDED_SHOWN]
        return self._html(
            "lesion.html",
            title=f"lesion {lesion_id}",
            lesion_id=lesion_id,
            info=info,
            model=model,
            grouped=grouped,
            n_decided=len(decided),
            n_scored=len(labels),
            undecided=undecided,
            broken=self._broken_exclusions([e["name"] for e in decided]),
            sentences=self._sentences(training),
            similar=similar,
            has_patches=self.config.patches.available,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def _scored_label(self, row: dict[str, Any]) -> dict[str, Any]:
        name = (
            row.get("name")
            or self._label_name(str(row["label"]))
            or short_form({"type": "uri", "value": str(row["label"])})
        )
        try:
            category = self.onto.category(name)
        except LookupError:
            category = "other"
        return {
            "name": name,
            "iri": row["label"],
            "score": float(row["score"]),
            "threshold": float(row["threshold"]),
            "decision": bool(row["decision"]),
            "category": category,
        }

    def _broken_exclusions(self, decided: list[str]) -> list[tuple[str, str]]:
        """Pairs of decided labels the ontology says exclude each other (stated or inherited)."""
        chosen = set(decided)
        pairs: set[tuple[str, str]] = set()
        for name in decided:
            try:
                clashing = self.onto.exclusive(name) & chosen
            except LookupError:
                continue
            pairs.update((min(name, other), max(name, other)) for other in clashing)
        return sorted(pairs)

    @staticmethod
    def _sentences(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Training-label rows grouped by sentence: its text and mined labels per relation."""
        by_sentence: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = by_sentence.setdefault(
                str(row["sentence"]), {"text": row["text"], "relevant": [], "uncertain": [], "irrelevant": []}
            )
            relation = str(row["relation"])
            entry.setdefault(relation, []).append(
                {"name": row.get("name") or str(row["label"]), "evidence": row.get("evidence") or ""}
            )
        return list(by_sentence.values())

    def label(self, server: SparqlServer, request: Request) -> Response:
        term = self._term(self._param(request, "name") or "")
        page = self._page_number(request)
        run = self._runner(server, request)
        size = self.config.page_size
        total, hits = queries.search_lesions(run, queries.LabelFilter((str(term.iri),)), size, (page - 1) * size)
        direct = queries.first_row(run(queries.DIRECT_COUNT, {"label": _uri(term.iri)})) or {"n": 0}
        onto = self.onto
        return self._html(
            "label.html",
            title=term.name,
            term=term,
            parents=sorted(onto.parents(term.name)),
            children=sorted(onto.children(term.name)),
            exclusive=sorted(onto.exclusive(term.name)),
            composites=sorted(self._composites.get(term.name, [])),
            category=onto.category(term.name),
            total=total,
            direct=direct["n"],
            hits=hits,
            page=page,
            pages=max(1, -(-total // size)),
            figures=self.config.evaluation.figures(term.name),
            evaluation=self.config.evaluation,
            has_patches=self.config.patches.available,
        )

    def search(self, server: SparqlServer, request: Request) -> Response:
        by = request.single("by") or "description"
        if by not in ("description", "label", "lesion"):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"search by description, label or lesion, not {by[:40]!r}")
        text = self._param(request, "q", required=False)
        context: dict[str, Any] = {
            "title": "search",
            "by": by,
            "q": text or "",
            "can_describe": self.config.describe is not None,
            "understood": None,
            "problem": None,
            "hits": None,
            "total": 0,
            "page": 1,
            "pages": 1,
            "has_patches": self.config.patches.available,
            "required": [],
            "excluded": [],
        }
        if not text:
            return self._html("search.html", **context)
        run = self._runner(server, request)
        if by == "lesion":
            lesion_id = _lesion_id_of(text)
            self._lesion_info(run, lesion_id)  # 404 when absent
            return Response(
                HTTPStatus.SEE_OTHER, b"", HTML, [("Location", "/lesion?id=" + urllib.parse.quote(lesion_id, safe=""))]
            )
        if by == "label":
            try:
                terms = [self.onto.term(text)]
            except LookupError as exc:
                context["problem"] = str(exc).strip("'\"")
                return self._html("search.html", **context)
            excluded_terms: list[Any] = []
        else:
            if self.config.describe is None:
                raise HttpError(
                    HTTPStatus.SERVICE_UNAVAILABLE, "this server has no text miner; search by label or lesion id"
                )
            try:
                description = self.config.describe(text)
            except (ValueError, LookupError, OSError, RuntimeError) as exc:
                raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"the text miner failed: {exc}") from None
            context["understood"] = description
            terms = [self.onto.term(name) for name in description.present]
            excluded_terms = [self.onto.term(name) for name in description.absent]
            if not terms:
                context["problem"] = "no ontology label was understood as present in this description"
                return self._html("search.html", **context)
        page = self._page_number(request)
        size = self.config.page_size
        flt = queries.LabelFilter(tuple(str(t.iri) for t in terms), tuple(str(t.iri) for t in excluded_terms))
        total, hits = queries.search_lesions(run, flt, size, (page - 1) * size)
        context.update(
            hits=hits,
            total=total,
            page=page,
            pages=max(1, -(-total // size)),
            required=[t.name for t in terms],
            excluded=[t.name for t in excluded_terms],
        )
        return self._html("search.html", **context)

    def sparql(self, server: SparqlServer, request: Request) -> Response:
        limits = server.config.limits
        example = request.single("example")
        text = request.single("query")
        fmt = request.single("format") or "html"
        if fmt not in ("html", "csv", "json"):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"format must be html, csv or json, not {fmt[:20]!r}")
        run = self._runner(server, request)
        if example is not None and text is None:
            samples = {name: value for name in ("label", "lesion") if (value := request.single(name))}
            text = self._example_text(run, example, samples)
        context: dict[str, Any] = {
            "title": "SPARQL",
            "query": text or self._example_text(run, "label-counts"),
            "examples": list(CANNED.values()),
            "prefixes": vocab.PREFIXES,
            "limits": limits,
            "result": None,
            "problem": None,
            "shown": SPARQL_ROWS_SHOWN,
            "ran": False,
            "cells": [],
        }
        if text is None or example is not None:
            return self._html("sparql.html", **context)
        try:
            check_sparql(text, limits)
        except QueryRejected as exc:
            if fmt != "html":
                raise HttpError(exc.status, str(exc)) from exc
            context["problem"] = (exc.status, str(exc))
            return Response(exc.status, self._render("sparql.html", **context), HTML, list(SECURITY_HEADERS))
        work = query_request(text, limits, "csv" if fmt == "csv" else "json")
        try:
            header, body = server.pool.run(work, limits, request.client_gone)
            if not header.get("ok"):
                raise QueryFailed(str(header.get("message")), int(header.get("status", 500)))
        except QueryFailed as exc:
            if fmt != "html":
                raise HttpError(exc.status, str(exc)) from exc
            context["problem"] = (exc.status, str(exc))
            return Response(exc.status, self._render("sparql.html", **context), HTML, list(SECURITY_HEADERS))
        content_type = str(header["content_type"])
        if fmt != "html":
            suffix = "csv" if content_type.startswith("text/csv") else "nt" if "n-triples" in content_type else "json"
            return Response(
                HTTPStatus.OK, body, content_type, [("Content-Disposition", f'attachment; filename="results.{suffix}"')]
            )
        result = parse_results(content_type, body)
        context.update(
            ran=True,
            result=result,
            cells=[[self._cell(row.get(v)) for v in result.variables] for row in result.rows[:SPARQL_ROWS_SHOWN]],
        )
        return self._html("sparql.html", **context)

    def _example_text(self, run: queries.Runner, name: str, given: Mapping[str, str] | None = None) -> str:
        """A canned query as an example; its parameters bound to the values given (a
        lesion page's own lesion) or to a sample (the first lesion, 'lung nodule'), so it
        runs as shown."""
        try:
            query = CANNED[name]
        except KeyError:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no example {name[:60]!r}; examples: {', '.join(CANNED)}") from None
        samples: dict[str, str] = {}
        for param in query.params:
            if given and given.get(param.name):
                samples[param.name] = given[param.name]
            elif param.kind == "label":
                samples[param.name] = "lung nodule"
            else:
                rows = run(queries.FIRST_LESIONS % 1, {}).values()
                samples[param.name] = str(rows[0]["lesionId"]) if rows else "deeplesion/0"
        try:
            return bind_values(query.text, bindings_for(query, samples, self.onto))
        except (LookupError, ValueError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc).strip("'\"")) from None

    def _cell(self, cell: dict[str, str] | None) -> dict[str, str | None]:
        """A result cell: its text (IRIs shortened by the project prefixes) and a browser link."""
        if cell is None:
            return {"text": "", "href": None}
        text, href = short_form(cell), None
        if cell.get("type") == "uri":
            value = cell["value"]
            if value.startswith(_LESION_PREFIX):
                href = "/lesion?id=" + urllib.parse.quote(_lesion_id_of(value), safe="")
            elif value.startswith(vocab.PREFIXES["lesion"]) and (name := self._label_name(value)) is not None:
                href = "/label?name=" + urllib.parse.quote(name, safe="")
        return {"text": text, "href": href}

    # ------------------------------------------------------------------ images and files

    def patch(self, server: SparqlServer, request: Request) -> Response:
        lesion_id = self._param(request, "id")
        assert lesion_id is not None
        info = self._lesion_info(self._runner(server, request), lesion_id)
        wanted = PatchRequest(lesion_id, as_int(info.get("index")), info.get("file"), parse_box(info.get("boxPx")))
        try:
            data = self.config.patches.png(wanted)
        except PatchError as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, str(exc)) from None
        return Response(HTTPStatus.OK, data, "image/png", [("Cache-Control", "private, max-age=300")])

    def static(self, server: SparqlServer, request: Request) -> Response:
        data, kind = self._static[request.path]
        return Response(HTTPStatus.OK, data, kind, [("Cache-Control", "private, max-age=3600")])


def _uri(value: Any) -> Binding:
    return rdflib.URIRef(str(value))


def _lesion_id_of(value: str) -> str:
    """A lesion id from an id or a minted lesion IRI (``…/data/lesion/deeplesion/12``)."""
    if value.startswith(_LESION_PREFIX):
        return "/".join(urllib.parse.unquote(part) for part in value[len(_LESION_PREFIX) :].split("/"))
    return value
