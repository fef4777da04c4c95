"""The ``Ontology`` object: the OWL file read once into a networkx graph, with reasoning.

What an OWL reasoner would conclude about subclasses and disjointness is computed here with
networkx (fast, no Java); ``check()`` cross-checks it against HermiT.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx
import numpy as np
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection

from ontology.errors import OntologyError, UnknownLabelError
from ontology.reasoning import (
    Pair,
    add_composite_exclusions,
    exclusive_pairs_within,
    infer_composite_edges,
    inherited_exclusions,
    ordered_pair,
    reduced_pairs_within,
    unsatisfiable_terms,
)
from ontology.safexml import UnsafeXMLError, check_xml
from ontology.sssom import Mapping, add_mappings_to_graph, mappings_in_graph, read_sssom
from ontology.vocab import (
    CATEGORIES,
    CATEGORY,
    LESANET_INDEX,
    LESION,
    LESION_ROOT,
    OCCURRENCES,
    OWL,
    RDF,
    RDFS,
    SKOS,
    version_iri,
)

SHIPPED_OWL = Path(__file__).with_name("lesion.owl")
OBO_EXACT_SYNONYM = URIRef("http://www.geneontology.org/formats/oboInOwl#hasExactSynonym")
IAO_DEFINITION = URIRef("http://purl.obolibrary.org/obo/IAO_0000115")  # OBO's "definition"
LABEL_SETS = {"lesanet171": "the 171 labels of the LesaNet paper, in the official term_list order"}


@dataclass(frozen=True)
class Term:
    """One ontology class: "a lesion with this label"."""

    name: str
    iri: str
    category: str
    synonyms: tuple[str, ...]
    count: int
    lesanet_index: int | None
    composite_of: tuple[str, ...] = ()
    definition: str = ""  # skos:definition (or IAO's definition), empty when none


@dataclass
class CheckReport:
    """Problems found by ``Ontology.check``; ``ok`` when there are none."""

    source: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        verdict = "consistent and coherent" if self.ok else f"{len(self.problems)} problem(s)"
        return [
            f"{self.source}: {verdict}",
            *(f"  problem: {p}" for p in self.problems),
            *(f"  {n}" for n in self.notes),
        ]


def _read_rdf(path: Path) -> Graph:
    """Parse what Protégé saves: RDF/XML, Turtle (also N-Triples) or OWL/XML.

    XML is checked first (ontology.safexml): a DTD with anything but plain namespace
    entities, which could expand ("billion laughs") or reach outside the file, is refused."""
    if not path.is_file():
        raise OntologyError(f"{path}: ontology file not found")
    data = path.read_bytes()
    head = data[:4096].decode("utf-8", errors="replace")
    syntax = _unread_syntax(head)
    if syntax:
        raise OntologyError(f"{path}: {syntax} is not read here; save as RDF/XML or OWL/XML (Protégé: File → Save as)")
    looks_xml = head.lstrip("\ufeff \t\r\n").startswith("<")
    if looks_xml:
        try:
            check_xml(data, path)
        except UnsafeXMLError as exc:
            raise OntologyError(str(exc)) from None
    graph = Graph()
    if "<Ontology" in head and "http://www.w3.org/2002/07/owl#" in head and "<rdf:RDF" not in head:
        return _read_owl_xml(path)
    formats = ["xml", "turtle"] if looks_xml else ["turtle", "xml"]
    errors = []
    for fmt in formats:
        try:
            with _quiet_literal_warnings():
                graph.parse(data=data, format=fmt, publicID=path.resolve().as_uri())
            return graph
        except Exception as exc:  # rdflib raises parser-specific types
            errors.append(f"{fmt}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            graph = Graph()
    raise OntologyError(f"{path}: not a readable ontology (RDF/XML, Turtle or OWL/XML) — {'; '.join(errors)}")


@contextmanager
def _quiet_literal_warnings():
    """rdflib logs a traceback for each ill-typed literal ("3x3"^^xsd:integer) while parsing;
    the terms reader names the file and class instead (``_integer``)."""
    logger = logging.getLogger("rdflib.term")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


_XSD_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def _integer(value: object, source: str, name: str, what: str) -> int | None:
    """An xsd:integer annotation of class ``name`` (None when absent); a bad one names file and class."""
    if value is None:
        return None
    lexical = str(value).strip()
    if not isinstance(value, Literal) or not _XSD_INTEGER.fullmatch(lexical):
        raise OntologyError(
            f"{source}: class {name!r}: {what} {lexical[:40]!r} is not an integer (xsd:integer); correct the annotation"
        )
    return int(lexical)


def _unread_syntax(head: str) -> str | None:
    """Name of a Protégé "Save as" syntax that rdflib and owlready2 cannot read, if ``head`` is one."""
    lines = (line.strip() for line in head.splitlines())
    first = next((line for line in lines if line and not line.startswith("#")), "")
    if first.startswith(("Prefix(", "Ontology(")):
        return "OWL Functional Syntax"
    if first.startswith(("Prefix:", "Ontology:")):
        return "Manchester OWL Syntax"
    return None


def _read_owl_xml(path: Path) -> Graph:
    """OWL/XML goes through owlready2, which reads it, into N-Triples for rdflib."""
    import owlready2  # local: owlready2 is needed only to read OWL/XML

    world = owlready2.World()
    try:
        onto = world.get_ontology(path.resolve().as_uri()).load()
    except Exception as exc:
        raise OntologyError(f"{path}: not a readable OWL/XML file ({exc})") from None
    with tempfile.TemporaryDirectory() as tmp:
        nt = Path(tmp) / "onto.nt"
        onto.save(file=str(nt), format="ntriples")
        graph = Graph()
        graph.parse(nt, format="nt")
    world.close()
    return graph


class Ontology:
    """The lesion ontology as a label hierarchy with exclusions and composite labels.

    Build it with :func:`load_ontology`. Names are the classes' ``rdfs:label``.
    """

    def __init__(self, rdf: Graph, source: str, *, strict: bool = True) -> None:
        self.rdf = rdf
        self.source = source
        self.problems: list[str] = []
        self.terms: dict[str, Term] = {}
        self._by_iri: dict[str, str] = {}
        self._read_terms()
        self.asserted = self._read_hierarchy()
        self.stated_exclusions: set[Pair] = self._read_exclusions()
        composites = {t.name: t.composite_of for t in self.terms.values() if t.composite_of}
        self.graph = self.asserted.copy()
        self.inferred_edges: list[Pair] = []
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = " ⊑ ".join(child for child, _ in nx.find_cycle(self.graph))
            message = f"{source}: subclass cycle {cycle} ⊑ {cycle.split(' ⊑ ')[0]}"
            if strict:
                raise OntologyError(message + " (remove one rdfs:subClassOf)")
            self.problems.append(message)
        else:
            self.inferred_edges = infer_composite_edges(self.graph, composites)
        self._ancestors = {n: frozenset(nx.descendants(self.graph, n)) for n in self.graph}
        self._descendants = {n: frozenset(nx.ancestors(self.graph, n)) for n in self.graph}
        exclusive = inherited_exclusions(self.graph, self.stated_exclusions)
        add_composite_exclusions(self.graph, composites, exclusive)
        self._exclusive = {n: frozenset(v - {n}) for n, v in exclusive.items()}
        self.unsatisfiable = unsatisfiable_terms(self.graph, self.stated_exclusions)
        self._lookup = self._build_lookup()
        self._mappings = mappings_in_graph(self.rdf, set(self._by_iri))

    # ------------------------------------------------------------------ reading

    def _name_of(self, node: object) -> str | None:
        return self._by_iri.get(str(node))

    def _read_terms(self) -> None:
        g = self.rdf
        for subject in sorted(set(g.subjects(CATEGORY, None)), key=str):
            if not isinstance(subject, URIRef):
                continue
            label = g.value(subject, RDFS.label)
            if label is None:
                raise OntologyError(f"{self.source}: class {subject} has a category but no rdfs:label")
            name = str(label)
            category = str(g.value(subject, CATEGORY))
            if category not in CATEGORIES:
                raise OntologyError(
                    f"{self.source}: class {name!r} has category {category!r}; expected one of {', '.join(CATEGORIES)}"
                )
            if name in self.terms:
                raise OntologyError(
                    f"{self.source}: two classes share the label {name!r} ({self.terms[name].iri}, {subject})"
                )
            synonyms = {str(s) for p in (SKOS.altLabel, OBO_EXACT_SYNONYM) for s in g.objects(subject, p)}
            index = _integer(g.value(subject, LESANET_INDEX), self.source, name, "lesion:lesanetIndex")
            count = _integer(g.value(subject, OCCURRENCES), self.source, name, "lesion:deeplesionOccurrences")
            definition = g.value(subject, SKOS.definition) or g.value(subject, IAO_DEFINITION)
            self.terms[name] = Term(
                name=name,
                iri=str(subject),
                category=category,
                synonyms=tuple(sorted(synonyms - {name})),
                count=count if count is not None else 0,
                lesanet_index=index,
                definition=str(definition) if definition is not None else "",
            )
            self._by_iri[str(subject)] = name
        if not self.terms:
            raise OntologyError(f"{self.source}: no lesion classes (classes annotated with {CATEGORY})")
        for name, term in list(self.terms.items()):
            parts = self._read_intersection(URIRef(term.iri))
            if parts:
                self.terms[name] = Term(**{**term.__dict__, "composite_of": parts})

    def _read_intersection(self, subject: URIRef) -> tuple[str, ...]:
        g = self.rdf
        for eq in g.objects(subject, OWL.equivalentClass):
            if not isinstance(eq, BNode):
                continue
            members = g.value(eq, OWL.intersectionOf)
            if members is None:
                continue
            names = [self._name_of(m) for m in Collection(g, members)]
            if any(n is None for n in names):
                self.problems.append(
                    f"{self.source}: {self._name_of(subject)!r} is defined from a class that is not a term"
                )
                continue
            return tuple(sorted(names))  # type: ignore[arg-type]
        return ()

    def _read_hierarchy(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.terms)
        for name, term in self.terms.items():
            for parent in self.rdf.objects(URIRef(term.iri), RDFS.subClassOf):
                if parent == LESION_ROOT or isinstance(parent, BNode):
                    continue
                parent_name = self._name_of(parent)
                if parent_name is None:
                    self.problems.append(
                        f"{self.source}: {name!r} is a subclass of {parent}, which is not a term (dangling reference)"
                    )
                else:
                    graph.add_edge(name, parent_name)
        return graph

    def _read_exclusions(self) -> set[Pair]:
        g = self.rdf
        pairs: set[Pair] = set()

        def add(a: object, b: object) -> None:
            na, nb = self._name_of(a), self._name_of(b)
            if na is None or nb is None:
                missing = a if na is None else b
                self.problems.append(
                    f"{self.source}: disjointness with {missing}, which is not a term (dangling reference)"
                )
            elif na != nb:
                pairs.add(ordered_pair(na, nb))

        for a, b in g.subject_objects(OWL.disjointWith):
            add(a, b)
        for axiom in g.subjects(RDF.type, OWL.AllDisjointClasses):
            head = g.value(axiom, OWL.members)
            members = list(Collection(g, head)) if head is not None else []
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    add(a, b)
        return pairs

    def _build_lookup(self) -> dict[str, str]:
        lookup: dict[str, str] = {}
        for name, term in self.terms.items():
            for synonym in term.synonyms:
                lookup.setdefault(synonym.lower(), name)
        for name, term in self.terms.items():  # names win over synonyms
            lookup[name.lower()] = name
            lookup[term.iri.lower()] = name
        return lookup

    # ------------------------------------------------------------------ lookup

    @cached_property
    def version_info(self) -> str:
        """``owl:versionInfo`` of the ontology header ("unversioned" when absent)."""
        return next((str(v) for v in self.rdf.objects(None, OWL.versionInfo)), "unversioned")

    @cached_property
    def content_digest(self) -> str:
        """First 12 hex digits of the SHA-256 of what the toolkit's results depend on.

        Terms (IRI, name, category, synonyms, count, LesaNet index), asserted parents,
        composite definitions and stated exclusions, as canonical JSON keyed by IRI. The
        header (versionIRI, title, licence), comments, definitions and mappings are left
        out: the header can carry this digest without a circle, the same content saved in
        another format (or by another tool) has the same digest, and a changed comment does
        not make patch caches or trained runs stale.
        """
        iri = {name: term.iri for name, term in self.terms.items()}
        partners: dict[str, list[str]] = {}
        for a, b in self.stated_exclusions:
            partners.setdefault(a, []).append(iri[b])
            partners.setdefault(b, []).append(iri[a])
        content = [
            [
                t.iri,
                t.name,
                t.category,
                list(t.synonyms),
                t.count,
                t.lesanet_index,
                sorted(iri[p] for p in self.asserted.successors(t.name)),
                [iri[p] for p in t.composite_of],
                sorted(partners.get(t.name, [])),
            ]
            for t in sorted(self.terms.values(), key=lambda t: t.iri)
        ]
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @cached_property
    def version(self) -> str:
        """``owl:versionInfo`` plus the content digest, so edits change the version."""
        return f"{self.version_info} sha256:{self.content_digest}"

    @property
    def version_iri(self) -> str:
        """The ``owl:versionIRI`` this content should carry (see ``vocab.version_iri``)."""
        return str(version_iri(self.version_info, self.content_digest))

    @cached_property
    def declared_version_iri(self) -> str | None:
        """The ``owl:versionIRI`` the file's header states, if any."""
        return next((str(v) for v in self.rdf.objects(None, OWL.versionIRI)), None)

    def term(self, query: str) -> Term:
        """A term by name, synonym (case-insensitive) or IRI."""
        name = self._lookup.get(str(query).strip().lower())
        if name is None:
            suggestions = difflib.get_close_matches(str(query).lower(), list(self._lookup), n=3, cutoff=0.7)
            raise UnknownLabelError(
                str(query), self.source, [self._lookup[s] if s in self._lookup else s for s in suggestions]
            )
        return self.terms[name]

    def _name(self, query: str) -> str:
        return query if query in self.terms else self.term(query).name

    def iri(self, name: str) -> str:
        return self.terms[self._name(name)].iri

    def category(self, name: str) -> str:
        return self.terms[self._name(name)].category

    def mappings(self, name: str) -> list[Mapping]:
        """The term's mappings to standard codes (skos:exactMatch / closeMatch), with provenance."""
        return list(self._mappings.get(self.iri(name), ()))

    def attach_mappings(self, sssom_path: str | Path) -> int:
        """Add the mappings of an SSSOM TSV file (to this object's graph); returns how many.

        The content digest (``version``) does not change: mappings name codes for terms,
        they do not change what any term means to training or mining.
        """
        _meta, found = read_sssom(sssom_path, set(self._by_iri))
        add_mappings_to_graph(self.rdf, found)
        self._mappings = mappings_in_graph(self.rdf, set(self._by_iri))
        return len(found)

    def label_set(self, name: str = "lesanet171") -> list[str]:
        """The named label set in its official order."""
        if name not in LABEL_SETS:
            raise UnknownLabelError(name, f"{self.source} label sets", sorted(LABEL_SETS))
        indexed = sorted((t.lesanet_index, t.name) for t in self.terms.values() if t.lesanet_index is not None)
        if [i for i, _ in indexed] != list(range(len(indexed))):
            raise OntologyError(
                f"{self.source}: lesanetIndex annotations are not 0..{len(indexed) - 1} without gaps or repeats"
            )
        return [n for _, n in indexed]

    # ------------------------------------------------------------------ hierarchy

    def parents(self, name: str) -> set[str]:
        return set(self.graph.successors(self._name(name)))

    def children(self, name: str) -> set[str]:
        return set(self.graph.predecessors(self._name(name)))

    def ancestors(self, name: str) -> set[str]:
        return set(self._ancestors[self._name(name)])

    def descendants(self, name: str) -> set[str]:
        return set(self._descendants[self._name(name)])

    @cached_property
    def _composite_parts(self) -> list[tuple[str, frozenset[str]]]:
        return sorted((t.name, frozenset(t.composite_of)) for t in self.terms.values() if t.composite_of)

    def expand(self, names: Iterable[str]) -> set[str]:
        """Label expansion: the names, all their ancestors and every composite whose parts
        are all present (repeated until nothing changes)."""
        result: set[str] = set()
        for query in names:
            name = self._name(query)
            result.add(name)
            result |= self._ancestors[name]
        changed = bool(self._composite_parts)
        while changed:
            changed = False
            for composite, parts in self._composite_parts:
                if composite not in result and parts <= result:
                    result.add(composite)
                    result |= self._ancestors[composite]
                    changed = True
        return result

    def exclusive(self, name: str) -> set[str]:
        """Terms mutually exclusive with ``name`` after inheritance."""
        return set(self._exclusive[self._name(name)])

    def exclusive_matrix(self, names: Sequence[str]) -> np.ndarray:
        """Boolean ``len(names) × len(names)`` matrix of inherited exclusions (symmetric)."""
        resolved = [self._name(n) for n in names]
        position = {n: i for i, n in enumerate(resolved)}
        matrix = np.zeros((len(resolved), len(resolved)), dtype=bool)
        for i, name in enumerate(resolved):
            for other in self._exclusive[name]:
                j = position.get(other)
                if j is not None:
                    matrix[i, j] = True
        return matrix

    def sort_specific_first(self, names: Iterable[str]) -> list[str]:
        """Most specific (most ancestors) first; ties in official label order, then by name."""

        def key(name: str) -> tuple[int, int, str]:
            index = self.terms[name].lesanet_index
            return (-len(self._ancestors[name]), index if index is not None else 10**6, name)

        return sorted({self._name(n) for n in names}, key=key)

    def reduced_pairs(self, label_set: str = "lesanet171") -> list[Pair]:
        """Parent-child pairs among a label set (ancestry through any term), transitively reduced."""
        return reduced_pairs_within(self.graph, self.label_set(label_set))

    def exclusive_pairs(self, label_set: str = "lesanet171") -> set[Pair]:
        return exclusive_pairs_within(self._exclusive, self.label_set(label_set))

    # ------------------------------------------------------------------ reports

    def stats(self) -> dict:
        labels = self.label_set("lesanet171")
        categories = {c: sum(1 for n in labels if self.terms[n].category == c) for c in CATEGORIES}
        return {
            "version": self.version,
            "terms": len(self.terms),
            "labels": len(labels),
            "categories": categories,
            "parent_child_pairs": len(self.reduced_pairs()),
            "exclusive_pairs": len(self.exclusive_pairs()),
            "stated_exclusions": len(self.stated_exclusions),
            "composites": sorted(t.name for t in self.terms.values() if t.composite_of),
            "mapped_terms": len(self._mappings),
            "mappings": sum(len(v) for v in self._mappings.values()),
            "unsatisfiable": sorted(self.unsatisfiable),
        }

    def check(self, reasoner: bool = True) -> CheckReport:
        """Cycles, dangling references, unsatisfiable classes; optionally HermiT agreement."""
        report = CheckReport(self.source, problems=list(self.problems))
        for name, (a, b) in sorted(self.unsatisfiable.items()):
            report.problems.append(f"{name!r} is unsatisfiable: it is below both {a!r} and {b!r}, which are disjoint")
        report.notes.append(
            f"networkx: {len(self.terms)} terms, {len(self.unsatisfiable)} unsatisfiable, "
            f"{len(self.inferred_edges)} subclass edges inferred from composites"
        )
        if reasoner:
            # local: HermiT needs owlready2 and Java, only for the reasoner cross-check
            from ontology.hermit import hermit_unsatisfiable

            found = hermit_unsatisfiable(self.rdf, self.source)
            names = {self._by_iri.get(iri, iri) for iri in found.unsatisfiable}
            report.notes.append(f"HermiT: consistent={found.consistent}, {len(names)} unsatisfiable")
            if not found.consistent:
                report.problems.append("HermiT: the ontology is inconsistent")
            if names != set(self.unsatisfiable):
                report.problems.append(
                    "HermiT and networkx disagree on unsatisfiable classes: "
                    f"only HermiT {sorted(names - set(self.unsatisfiable))}, only networkx {sorted(set(self.unsatisfiable) - names)}"
                )
        return report

    def serialize(self, fmt: str) -> str:
        """``owl`` (RDF/XML), ``ttl`` (Turtle, via rdflib) or ``json`` (terms and relations)."""
        if fmt == "owl":
            return self.rdf.serialize(format="pretty-xml")
        if fmt == "ttl":
            self.rdf.bind("lesion", LESION)
            return self.rdf.serialize(format="turtle")
        if fmt == "json":
            terms = []
            for name in sorted(self.terms):
                t = self.terms[name]
                terms.append(
                    {
                        "name": name,
                        "iri": t.iri,
                        "category": t.category,
                        "synonyms": list(t.synonyms),
                        "count": t.count,
                        "lesanet_index": t.lesanet_index,
                        "parents": sorted(self.asserted.successors(name)),
                        "composite_of": list(t.composite_of),
                        "definition": t.definition,
                        "mappings": [m.as_dict() for m in self.mappings(name)],
                        "stated_exclusive": sorted(
                            b if a == name else a for a, b in self.stated_exclusions if name in (a, b)
                        ),
                    }
                )
            return json.dumps({"version": self.version, "terms": terms, "lesanet171": self.label_set()}, indent=1)
        raise OntologyError(f"unknown export format {fmt!r}; use owl, ttl or json")


_CACHE: dict[tuple, Ontology] = {}


def _file_key(path: Path) -> tuple[str, float]:
    return (str(path.resolve()), path.stat().st_mtime)


def load_ontology(
    path: str | Path | None = None, *, strict: bool = True, mappings: Sequence[str | Path] = ()
) -> Ontology:
    """Load (once per file version) the ontology at ``path``, default the shipped one.

    ``strict=False`` records a subclass cycle as a problem for ``check()`` instead of raising.
    ``mappings``: SSSOM TSV files whose skos:exactMatch / closeMatch mappings are attached.
    """
    file = Path(path) if path is not None else SHIPPED_OWL
    if not file.is_file():
        raise OntologyError(f"{file}: ontology file not found")
    for mapping in mappings:
        if not Path(mapping).is_file():
            raise OntologyError(f"{mapping}: mapping file not found")
    key = (_file_key(file), *(_file_key(Path(m)) for m in mappings))
    if strict and key in _CACHE:
        return _CACHE[key]
    ontology = Ontology(_read_rdf(file), str(file), strict=strict)
    for mapping in mappings:
        ontology.attach_mappings(mapping)
    if strict:
        _CACHE[key] = ontology
    return ontology
