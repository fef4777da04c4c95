"""Mappings from lesion terms to standard codes (RadLex RIDs, SNOMED CT), read from SSSOM TSV.

SSSOM (the OBO community's Simple Standard for Sharing Ontological Mappings) is a TSV
table preceded by a YAML header whose lines start with ``#``. The header carries the
mapping set's metadata (``mapping_set_id``, ``license``, ``curie_map``, ...); each row one
mapping (``subject_id``, ``predicate_id``, ``object_id``, ``mapping_justification``, ...).
The format is small and fixed, so it is parsed here with ``csv`` and PyYAML rather than
the ``sssom`` package (which pulls in pandas and a network-using CURIE registry).

Mappings attach to the ontology as ``skos:exactMatch`` / ``skos:closeMatch`` annotations;
each carries its provenance as an OWL axiom annotation (``owl:Axiom`` on the assertion,
with the mapping set, justification, author and confidence), which Protégé shows and
keeps on save.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import yaml
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, OWL, RDF, SKOS, XSD

from ontology.errors import OntologyError

SSSOM = Namespace("https://w3id.org/sssom/")
SEMAPV = Namespace("https://w3id.org/semapv/vocab/")

#: The mapping predicates the toolkit attaches (the two that say "the same finding").
PREDICATES = {"exactMatch": SKOS.exactMatch, "closeMatch": SKOS.closeMatch}
#: Annotation properties that provenance uses; OWL 2 DL needs them declared.
PROVENANCE_PROPERTIES = (
    SSSOM.mapping_justification,
    SSSOM.confidence,
    SSSOM.mapping_set_id,
    SSSOM.object_id,
    SKOS.prefLabel,
    DCTERMS.creator,
)
REQUIRED_COLUMNS = ("subject_id", "predicate_id", "object_id", "mapping_justification")
BUILTIN_PREFIXES = {
    "skos": str(SKOS),
    "semapv": str(SEMAPV),
    "lesion": "https://w3id.org/lesanet/lesion#",
    "owl": str(OWL),
}


@dataclass(frozen=True)
class Mapping:
    """One mapping of a lesion term to an external code, with its provenance."""

    subject: str  # the term's IRI
    predicate: str  # "exactMatch" | "closeMatch"
    object_iri: str
    object_id: str  # as written (a CURIE such as RADLEX:RID28474, or the IRI)
    object_label: str = ""
    justification: str = ""  # e.g. semapv:ManualMappingCuration
    mapping_set: str = ""  # mapping_set_id of the file it came from
    author: str = ""
    confidence: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


def _expand(curie_or_iri: str, prefixes: dict[str, str], where: str, column: str) -> str:
    value = curie_or_iri.strip()
    if value.startswith(("http://", "https://", "urn:")):
        return value
    prefix, sep, local = value.partition(":")
    if not sep or prefix not in prefixes:
        raise OntologyError(
            f"{where}: {column} {value!r} is neither an IRI nor a CURIE with a prefix of the curie_map "
            f"(known: {', '.join(sorted(prefixes))}); add the prefix to the header's curie_map"
        )
    return prefixes[prefix] + local


def read_sssom(path: str | Path, subjects: set[str] | None = None) -> tuple[dict, list[Mapping]]:
    """The header metadata and the mappings of an SSSOM TSV file.

    ``subjects``: the class IRIs a subject must be one of (the ontology's terms). Errors
    name the file and line. Predicates other than skos:exactMatch / closeMatch are refused
    rather than dropped, so that a mapping file is never half-read silently.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OntologyError(f"{file}: mapping file not found") from None
    except UnicodeDecodeError as exc:
        raise OntologyError(f"{file}: not UTF-8 text ({exc})") from None
    lines = text.splitlines(keepends=True)
    n_header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    try:
        meta = yaml.safe_load("".join(line[1:] for line in lines[:n_header])) or {}
    except yaml.YAMLError as exc:
        raise OntologyError(f"{file}: the '#' YAML header is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise OntologyError(
            f"{file}: the '#' YAML header must be a mapping of keys (mapping_set_id, license, curie_map)"
        )
    for key in ("mapping_set_id", "license"):
        if not meta.get(key):
            raise OntologyError(f"{file}: header lacks {key!r}, which SSSOM requires of every mapping set")
    prefixes = {**BUILTIN_PREFIXES, **{str(k): str(v) for k, v in (meta.get("curie_map") or {}).items()}}
    reader = csv.DictReader(io.StringIO("".join(lines[n_header:])), delimiter="\t")
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise OntologyError(f"{file}: line {n_header + 1}: table lacks column(s) {', '.join(missing)}")
    mappings: list[Mapping] = []
    for offset, row in enumerate(reader, start=n_header + 2):
        where = f"{file}: line {offset}"
        if not any((v or "").strip() for v in row.values()):
            continue
        empty = [c for c in REQUIRED_COLUMNS if not (row.get(c) or "").strip()]
        if empty:
            raise OntologyError(f"{where}: empty {', '.join(empty)}")
        predicate = _expand(row["predicate_id"], prefixes, where, "predicate_id")
        name = next((k for k, v in PREDICATES.items() if str(v) == predicate), None)
        if name is None:
            raise OntologyError(
                f"{where}: predicate {row['predicate_id']!r} is not attached; use skos:exactMatch or skos:closeMatch"
            )
        confidence = None
        if (row.get("confidence") or "").strip():
            try:
                confidence = float(row["confidence"])
            except ValueError:
                raise OntologyError(f"{where}: confidence {row['confidence']!r} is not a number") from None
            if not 0.0 <= confidence <= 1.0:
                raise OntologyError(f"{where}: confidence {confidence} is outside [0, 1]")
        subject = _expand(row["subject_id"], prefixes, where, "subject_id")
        if subjects is not None and subject not in subjects:
            raise OntologyError(f"{where}: subject {row['subject_id']!r} ({subject}) is not a term of the ontology")
        mappings.append(
            Mapping(
                subject=subject,
                predicate=name,
                object_iri=_expand(row["object_id"], prefixes, where, "object_id"),
                object_id=row["object_id"].strip(),
                object_label=(row.get("object_label") or "").strip(),
                justification=row["mapping_justification"].strip(),
                mapping_set=str(meta["mapping_set_id"]),
                author=(row.get("author_id") or str(meta.get("creator_id") or "")).strip(),
                confidence=confidence,
            )
        )
    return meta, mappings


def add_mappings_to_graph(graph: Graph, mappings: list[Mapping]) -> None:
    """Assert each mapping on its subject, with an ``owl:Axiom`` annotation for provenance."""
    for prop in PROVENANCE_PROPERTIES + tuple(PREDICATES.values()):
        graph.add((prop, RDF.type, OWL.AnnotationProperty))
    for m in mappings:
        subject, prop, target = URIRef(m.subject), PREDICATES[m.predicate], URIRef(m.object_iri)
        graph.add((subject, prop, target))
        axiom = BNode()
        graph.add((axiom, RDF.type, OWL.Axiom))
        graph.add((axiom, OWL.annotatedSource, subject))
        graph.add((axiom, OWL.annotatedProperty, prop))
        graph.add((axiom, OWL.annotatedTarget, target))
        graph.add((axiom, SSSOM.mapping_set_id, Literal(m.mapping_set)))
        graph.add((axiom, SSSOM.mapping_justification, Literal(m.justification)))
        graph.add((axiom, SSSOM.object_id, Literal(m.object_id)))
        if m.object_label:
            graph.add((axiom, SKOS.prefLabel, Literal(m.object_label)))
        if m.author:
            graph.add((axiom, DCTERMS.creator, Literal(m.author)))
        if m.confidence is not None:
            graph.add((axiom, SSSOM.confidence, Literal(m.confidence, datatype=XSD.double)))


def mappings_in_graph(graph: Graph, subjects: set[str]) -> dict[str, list[Mapping]]:
    """Mappings asserted on the given class IRIs, with provenance where an axiom annotation has it."""
    provenance: dict[tuple[str, str, str], dict] = {}
    for axiom in graph.subjects(RDF.type, OWL.Axiom):
        key = tuple(
            str(graph.value(axiom, p)) for p in (OWL.annotatedSource, OWL.annotatedProperty, OWL.annotatedTarget)
        )
        provenance[key] = {  # type: ignore[index]
            "mapping_set": graph.value(axiom, SSSOM.mapping_set_id),
            "object_id": graph.value(axiom, SSSOM.object_id),
            "justification": graph.value(axiom, SSSOM.mapping_justification),
            "object_label": graph.value(axiom, SKOS.prefLabel),
            "author": graph.value(axiom, DCTERMS.creator),
            "confidence": graph.value(axiom, SSSOM.confidence),
        }
    found: dict[str, list[Mapping]] = {}
    for name, prop in PREDICATES.items():
        for subject, target in graph.subject_objects(prop):
            if str(subject) not in subjects or not isinstance(target, URIRef):
                continue
            extra = provenance.get((str(subject), str(prop), str(target)), {})
            confidence = extra.get("confidence")
            found.setdefault(str(subject), []).append(
                Mapping(
                    subject=str(subject),
                    predicate=name,
                    object_iri=str(target),
                    object_id=str(extra.get("object_id") or target),
                    object_label=str(extra.get("object_label") or ""),
                    justification=str(extra.get("justification") or ""),
                    mapping_set=str(extra.get("mapping_set") or ""),
                    author=str(extra.get("author") or ""),
                    confidence=float(confidence) if confidence is not None else None,
                )
            )
    return {s: sorted(v, key=lambda m: (m.predicate, m.object_iri)) for s, v in found.items()}
