"""Quality report on the ontology file, in the spirit of ROBOT's ``report``.

Each check is a rule with a level: ERROR (the toolkit would read the file wrongly or
refuse it, or OWL would find it incoherent), WARN (legal, but likely an editing slip or
an ambiguity the text miner must resolve), INFO (counts worth knowing). The checks run on
the raw RDF first, so that problems the loader refuses (two classes with one label) are
reported as rows rather than as one error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from rdflib import Graph, URIRef
from rdflib.namespace import DCTERMS
from rdflib.term import Node

from ontology.errors import OntologyError
from ontology.model import OBO_EXACT_SYNONYM, Ontology
from ontology.vocab import (
    CATEGORIES,
    CATEGORY,
    LESANET_INDEX,
    LESION,
    LESION_ROOT,
    ONTOLOGY_IRI,
    OWL,
    RDF,
    RDFS,
    SKOS,
)

LEVELS = ("ERROR", "WARN", "INFO")
# Annotation properties OWL 2 knows without a declaration.
BUILTIN_ANNOTATIONS = {
    RDFS.label,
    RDFS.comment,
    RDFS.seeAlso,
    RDFS.isDefinedBy,
    OWL.versionInfo,
    OWL.deprecated,
    OWL.priorVersion,
    OWL.backwardCompatibleWith,
    OWL.incompatibleWith,
}
# Predicates of the OWL/RDF structure itself (not annotations).
STRUCTURAL = {
    RDF.type,
    RDFS.subClassOf,
    OWL.equivalentClass,
    OWL.disjointWith,
    OWL.intersectionOf,
    OWL.unionOf,
    OWL.members,
    OWL.versionIRI,
    OWL.imports,
    RDF.first,
    RDF.rest,
    OWL.annotatedSource,
    OWL.annotatedProperty,
    OWL.annotatedTarget,
    OWL.complementOf,
    OWL.onProperty,
    OWL.someValuesFrom,
    OWL.allValuesFrom,
    RDFS.domain,
    RDFS.range,
    RDFS.subPropertyOf,
    OWL.inverseOf,
}
# How many subjects an INFO row names before "and N more".
INFO_EXAMPLES = 5


@dataclass(frozen=True)
class Problem:
    level: str  # ERROR | WARN | INFO
    rule: str  # e.g. duplicate_label
    subject: str  # a term name or IRI, or "" for the whole file
    message: str


@dataclass
class QualityReport:
    source: str
    version: str
    problems: list[Problem]

    def count(self, level: str) -> int:
        return sum(1 for p in self.problems if p.level == level)

    def failed(self, fail_on: str = "ERROR") -> bool:
        if fail_on == "none":
            return False
        worst = LEVELS.index(fail_on)
        return any(LEVELS.index(p.level) <= worst for p in self.problems)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "version": self.version,
            "counts": {level: self.count(level) for level in LEVELS},
            "problems": [asdict(p) for p in self.problems],
        }

    def table(self) -> str:
        rows = [("level", "rule", "subject", "message")]
        rows += [(p.level, p.rule, p.subject, p.message) for p in self.problems]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        counts = ", ".join(f"{self.count(level)} {level}" for level in LEVELS)
        return "\n".join([f"{self.source} ({self.version}): {counts}", *lines]) + "\n"


def _terms_in_graph(g: Graph) -> list[URIRef]:
    """Classes that are, or are meant to be, lesion terms: those with a category, and
    named classes in the project namespace or below the root."""
    found = {s for s in g.subjects(CATEGORY, None) if isinstance(s, URIRef)}
    for cls in g.subjects(RDF.type, OWL.Class):
        if (
            isinstance(cls, URIRef)
            and cls != LESION_ROOT
            and (str(cls).startswith(str(LESION)) or (cls, RDFS.subClassOf, LESION_ROOT) in g)
        ):
            found.add(cls)
    return sorted(found, key=str)


def _name(g: Graph, cls: Node) -> str:
    label = g.value(cls, RDFS.label)
    return str(label) if label is not None else str(cls)


def _label_checks(g: Graph, terms: list[URIRef]) -> list[Problem]:
    out: list[Problem] = []
    by_label: dict[str, list[URIRef]] = defaultdict(list)
    for cls in terms:
        labels = [str(v) for v in g.objects(cls, RDFS.label)]
        name = labels[0] if labels else str(cls)
        if not labels:
            out.append(Problem("ERROR", "missing_label", str(cls), "class has no rdfs:label, so it has no name"))
        if len(labels) > 1:
            out.append(
                Problem(
                    "ERROR",
                    "multiple_labels",
                    name,
                    f"{len(labels)} rdfs:label values ({', '.join(sorted(labels))}); the toolkit needs one",
                )
            )
        category = g.value(cls, CATEGORY)
        if category is None:
            out.append(
                Problem(
                    "ERROR",
                    "missing_category",
                    name,
                    f"no lesion:category ({', '.join(CATEGORIES)}): the toolkit does not see it as a term",
                )
            )
        elif str(category) not in CATEGORIES:
            out.append(
                Problem(
                    "ERROR",
                    "invalid_category",
                    name,
                    f"category {str(category)!r} is not one of {', '.join(CATEGORIES)}",
                )
            )
        for label in labels:
            by_label[label.lower()].append(cls)
            if label != label.strip() or "  " in label:
                out.append(
                    Problem("WARN", "label_whitespace", name, f"label {label!r} has leading, trailing or double spaces")
                )
            if label != label.lower():
                out.append(
                    Problem(
                        "WARN",
                        "label_case",
                        name,
                        f"label {label!r} has capitals (labels are lower case; matching ignores case)",
                    )
                )
        for synonym in _synonyms(g, cls):
            if synonym != synonym.strip() or "  " in synonym or not synonym.strip():
                out.append(
                    Problem(
                        "WARN",
                        "synonym_whitespace",
                        name,
                        f"synonym {synonym!r} has leading, trailing or double spaces",
                    )
                )
    for label, owners in sorted(by_label.items()):
        if len(owners) > 1:
            out.append(
                Problem(
                    "ERROR",
                    "duplicate_label",
                    label,
                    f"label shared by {len(owners)} classes ({', '.join(map(str, owners))})",
                )
            )
    return out


def _synonyms(g: Graph, cls: URIRef) -> list[str]:
    return sorted(str(s) for p in (SKOS.altLabel, OBO_EXACT_SYNONYM) for s in g.objects(cls, p))


def _synonym_checks(g: Graph, terms: list[URIRef]) -> list[Problem]:
    out: list[Problem] = []
    owners: dict[str, set[str]] = defaultdict(set)
    labels = {str(g.value(c, RDFS.label)).lower(): _name(g, c) for c in terms if g.value(c, RDFS.label) is not None}
    for cls in terms:
        for synonym in _synonyms(g, cls):
            owners[synonym.strip().lower()].add(_name(g, cls))
    for synonym, names in sorted(owners.items()):
        other = labels.get(synonym)
        if other is not None and names - {other}:
            out.append(
                Problem(
                    "WARN",
                    "synonym_is_other_label",
                    synonym,
                    f"synonym of {', '.join(sorted(names - {other}))} but the label of {other!r} (the label wins)",
                )
            )
        elif len(names) > 1:
            out.append(
                Problem(
                    "WARN",
                    "shared_synonym",
                    synonym,
                    f"synonym of {len(names)} classes ({', '.join(sorted(names))}): the miner must pick one",
                )
            )
    return out


def _declaration_checks(g: Graph) -> list[Problem]:
    declared = set(g.subjects(RDF.type, OWL.AnnotationProperty))
    declared |= set(g.subjects(RDF.type, OWL.ObjectProperty)) | set(g.subjects(RDF.type, OWL.DatatypeProperty))
    used = {p for s, p, _ in g if p not in STRUCTURAL and p not in BUILTIN_ANNOTATIONS}
    return [
        Problem(
            "ERROR",
            "undeclared_property",
            str(p),
            "used but not declared (owl:AnnotationProperty): the file is not OWL 2 DL",
        )
        for p in sorted(used - declared, key=str)
    ]


def _deprecated_checks(g: Graph) -> list[Problem]:
    out: list[Problem] = []
    deprecated = {s for s in g.subjects(OWL.deprecated, None) if str(g.value(s, OWL.deprecated)).lower() == "true"}
    for cls in sorted(deprecated, key=str):
        uses = []
        if any(True for _ in g.subjects(RDFS.subClassOf, cls)):
            uses.append("a parent of other classes")
        if (cls, OWL.disjointWith, None) in g or (None, OWL.disjointWith, cls) in g:
            uses.append("in a disjointness")
        if any(True for _ in g.subjects(RDF.first, cls)):
            uses.append("in a composite definition or list")
        if g.value(cls, LESANET_INDEX) is not None:
            uses.append("in the LesaNet label set")
        if uses:
            out.append(Problem("WARN", "deprecated_in_use", _name(g, cls), "deprecated but still " + ", ".join(uses)))
    return out


def _model_checks(onto: Ontology) -> list[Problem]:
    out: list[Problem] = []
    for problem in onto.problems:
        rule = "cycle" if "cycle" in problem else "dangling_reference"
        out.append(Problem("ERROR", rule, "", problem.removeprefix(f"{onto.source}: ")))
    for a, b in sorted(onto.stated_exclusions):
        victims = sorted(n for n, pair in onto.unsatisfiable.items() if pair == (a, b))
        if victims:
            relation = (
                "its own ancestor" if a in onto.ancestors(b) or b in onto.ancestors(a) else "an overlapping class"
            )
            out.append(
                Problem(
                    "ERROR",
                    "exclusion_contradicts_hierarchy",
                    f"{a} ⊥ {b}",
                    f"a term disjoint with {relation}: makes {', '.join(victims)} unsatisfiable",
                )
            )
    try:
        onto.label_set("lesanet171")
    except OntologyError as exc:
        out.append(Problem("ERROR", "label_set_index", "lesanet171", str(exc).removeprefix(f"{onto.source}: ")))
    for term in sorted(onto.terms.values(), key=lambda t: t.name):
        if term.lesanet_index is not None and term.count <= 0:
            out.append(
                Problem(
                    "WARN",
                    "label_without_count",
                    term.name,
                    "a LesaNet label without lesion:deeplesionOccurrences (the frequency tables need it)",
                )
            )
    declared = onto.declared_version_iri
    if declared is None:
        out.append(
            Problem(
                "WARN",
                "missing_version_iri",
                str(ONTOLOGY_IRI),
                f"no owl:versionIRI; this content is {onto.version_iri}",
            )
        )
    elif declared != onto.version_iri:
        out.append(
            Problem(
                "WARN",
                "stale_version_iri",
                str(ONTOLOGY_IRI),
                f"owl:versionIRI {declared} does not match the content; set it to {onto.version_iri}",
            )
        )
    return out


def _header_checks(g: Graph) -> list[Problem]:
    header = next(iter(g.subjects(RDF.type, OWL.Ontology)), None)
    if header is None:
        return [Problem("WARN", "missing_header", "", "no owl:Ontology header")]
    return [
        Problem("WARN", "missing_header_annotation", str(header), f"no {prop.n3(g.namespace_manager)}")
        for prop in (DCTERMS.title, DCTERMS.license, DCTERMS.source)
        if g.value(header, prop) is None
    ]


def _info(rule: str, what: str, names: list[str]) -> list[Problem]:
    if not names:
        return []
    shown = ", ".join(names[:INFO_EXAMPLES]) + (
        f" and {len(names) - INFO_EXAMPLES} more" if len(names) > INFO_EXAMPLES else ""
    )
    return [Problem("INFO", rule, f"{len(names)} terms", f"{what}: {shown}")]


def _info_rows(onto: Ontology) -> list[Problem]:
    names = sorted(onto.terms)
    return [
        *_info("missing_definition", "no skos:definition", [n for n in names if not onto.terms[n].definition]),
        *_info("no_synonyms", "no skos:altLabel", [n for n in names if not onto.terms[n].synonyms]),
        *_info(
            "unmapped_label",
            "LesaNet labels without a mapping to a standard code",
            [n for n in onto.label_set("lesanet171") if not onto.mappings(n)],
        ),
    ]


def quality_report(rdf: Graph, source: str, attach: Callable[[Ontology], None] | None = None) -> QualityReport:
    """Run every check on an ontology graph (as read from ``source``)."""
    terms = _terms_in_graph(rdf)
    problems = _label_checks(rdf, terms) + _synonym_checks(rdf, terms) + _declaration_checks(rdf)
    problems += _deprecated_checks(rdf) + _header_checks(rdf)
    version = "unloadable"
    try:
        onto = Ontology(rdf, source, strict=False)
    except OntologyError as exc:
        if not any(p.level == "ERROR" for p in problems):
            problems.append(Problem("ERROR", "unloadable", "", str(exc)))
    else:
        if attach is not None:
            attach(onto)
        version = onto.version
        problems += _model_checks(onto)
        if not any(p.rule == "label_set_index" for p in problems):
            problems += _info_rows(onto)
    order = {level: i for i, level in enumerate(LEVELS)}
    problems.sort(key=lambda p: (order[p.level], p.rule, p.subject))
    return QualityReport(source, version, problems)


__all__ = ["LEVELS", "Problem", "QualityReport", "quality_report"]
