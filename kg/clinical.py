"""What the clinical outputs (DICOM SR, FHIR) share: a prediction record's decided labels as codes.

Each decided label becomes a concept of the project's own coding scheme (the lesion
ontology: code = the class IRI's local name, meaning = the label name, version = the
ontology's content digest) and, only where the ontology maps the term with
``skos:exactMatch`` (SSSOM files, :mod:`ontology.sssom`), the mapped standard code in
addition. A ``closeMatch`` is not the same finding, so it is never written as a code.

:mod:`kg.dicom_sr` and :mod:`kg.fhir` turn these into SR content items and FHIR
Codings; neither reads the record itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ontology.batch import RecordError
from ontology.protocol import OntologyLike

#: The ontology's IRI (what the version IRI specialises); also the FHIR code system.
ONTOLOGY_IRI = "https://w3id.org/lesanet/lesion"
#: The private DICOM coding scheme designator of the lesion ontology ("99" = private, PS3.16 8.2).
DESIGNATOR = "99LESANET"
SCHEME_NAME = "LesaNet lesion ontology"
#: The project's vocabulary for predictions (kg:score, label categories): a second private scheme.
KG_IRI = "https://w3id.org/lesanet/kg"
KG_DESIGNATOR = "99LESANETKG"
KG_SCHEME_NAME = "LesaNet prediction vocabulary"

#: Known standard terminologies, as data: IRI bases of their codes (as SSSOM files and
#: BioPortal write them), CURIE prefixes, the DICOM designator (PS3.16 Table 8-1) and
#: the FHIR code system URI (HL7 terminology). Anything else an exactMatch points to is
#: written under its own declared scheme, never under one of these.
STANDARD_SCHEMES: tuple[dict[str, Any], ...] = (
    {
        "name": "SNOMED CT",
        "designator": "SCT",
        "fhir_system": "http://snomed.info/sct",
        "iri_bases": ("http://snomed.info/id/", "http://purl.bioontology.org/ontology/SNOMEDCT/"),
        "prefixes": ("SCT", "SCTID", "SNOMEDCT", "SNOMED", "SNOMEDCT_US"),
    },
    {
        "name": "RadLex",
        "designator": "RADLEX",
        "fhir_system": "http://radlex.org",
        "iri_bases": (
            "http://radlex.org/RID/",
            "http://www.radlex.org/RID/#",
            "http://www.radlex.org/RID/",
            "https://radlex.org/RID/",
        ),
        "prefixes": ("RADLEX", "RADLEXID"),
    },
)

CATEGORIES = ("type", "bodypart", "attribute")


class ClinicalExportError(RecordError):
    """A record that cannot become DICOM SR / FHIR (names the record and what to do)."""


@dataclass(frozen=True)
class Code:
    """One code of one scheme: what an SR concept or a FHIR Coding needs."""

    value: str
    meaning: str
    designator: str  # DICOM coding scheme designator
    system: str  # FHIR code system URI (for the private scheme: the ontology IRI)
    version: str | None = None
    scheme_name: str = ""


@dataclass(frozen=True)
class DecidedLabel:
    """A decided label of a record with its codes (own scheme first) and its figures."""

    name: str
    iri: str
    category: str  # "type" | "bodypart" | "attribute"
    score: float
    threshold: float
    codes: tuple[Code, ...]  # [0] the ontology's own code; then exactMatch standard codes

    @property
    def own(self) -> Code:
        return self.codes[0]

    @property
    def standard(self) -> tuple[Code, ...]:
        return self.codes[1:]


def short_version(version: str) -> str:
    """The ontology version in 16 characters (DICOM SH): the content digest it carries,
    else 16 hex digits of SHA-256 over the version text."""
    match = re.search(r"sha256:([0-9a-f]{6,16})", version)
    if match:
        return match.group(1)
    return version if len(version) <= 16 else hashlib.sha256(version.encode("utf-8")).hexdigest()[:16]


def local_name(iri: str) -> str:
    return re.split(r"[#/]", iri)[-1]


def own_code(name: str, iri: str, ontology_version: str) -> Code:
    return Code(local_name(iri), name, DESIGNATOR, ONTOLOGY_IRI, short_version(ontology_version), SCHEME_NAME)


def standard_code(mapping: Any, fallback_meaning: str) -> Code:
    """An exactMatch mapping (:class:`ontology.sssom.Mapping`) as a code of its scheme."""
    object_id, object_iri = str(mapping.object_id), str(mapping.object_iri)
    prefix, sep, local = object_id.partition(":")
    if not sep or object_id.startswith(("http://", "https://", "urn:")):
        prefix, local = "", re.split(r"[#/]", object_iri)[-1]
    base = object_iri[: len(object_iri) - len(local)] if object_iri.endswith(local) else object_iri
    meaning = (mapping.object_label or fallback_meaning)[:64]
    for scheme in STANDARD_SCHEMES:
        if base in scheme["iri_bases"] or prefix.upper() in scheme["prefixes"]:
            return Code(local, meaning, scheme["designator"], scheme["fhir_system"], None, scheme["name"])
    # Another scheme: written under its own name (declared in the SR), never as a standard one.
    designator = re.sub(r"[^A-Z0-9_]", "_", (prefix or "EXT").upper())[:16]
    return Code(local, meaning, designator, base, None, prefix or base)


def decided_labels(record: Mapping[str, Any], onto: OntologyLike, where: str) -> list[DecidedLabel]:
    """The record's decided labels, most specific first within each category, with codes."""
    version = str(record.get("ontology_version") or "")
    if not version:
        raise ClinicalExportError(f"{where}: ontology_version is missing; the codes need the ontology version")
    labels = record.get("labels")
    if not isinstance(labels, list):
        raise ClinicalExportError(f"{where}: labels must be a list")
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(labels):
        if not isinstance(item, Mapping):
            raise ClinicalExportError(f"{where}: labels[{i}] must be an object")
        if item.get("decision") is not True:
            continue
        try:
            term = onto.term(str(item.get("iri") or item.get("label")))
        except LookupError as exc:
            raise ClinicalExportError(f"{where}: labels[{i}]: {exc}") from None
        found[term.name] = {"item": item, "term": term, "at": f"{where}: labels[{i}]"}
    out: list[DecidedLabel] = []
    for name in onto.sort_specific_first(list(found)):
        term, item, at = found[name]["term"], found[name]["item"], found[name]["at"]
        score, threshold = _unit(item.get("score"), f"{at}.score"), _unit(item.get("threshold"), f"{at}.threshold")
        codes = [own_code(term.name, str(term.iri), version)]
        mappings = getattr(onto, "mappings", None)
        for mapping in mappings(term.name) if mappings else ():
            if mapping.predicate == "exactMatch":
                codes.append(standard_code(mapping, term.name))
        out.append(DecidedLabel(term.name, str(term.iri), onto.category(term.name), score, threshold, tuple(codes)))
    return out


def _unit(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ClinicalExportError(f"{where} must be a number in [0, 1], got {value!r}")
    return float(value)


def by_category(labels: Iterable[DecidedLabel]) -> dict[str, list[DecidedLabel]]:
    groups: dict[str, list[DecidedLabel]] = {c: [] for c in CATEGORIES}
    for label in labels:
        groups.setdefault(label.category, []).append(label)
    return groups


def other_schemes(labels: Iterable[DecidedLabel]) -> dict[str, Code]:
    """Schemes of the standard codes that are not in :data:`STANDARD_SCHEMES` (by designator)."""
    known = {s["designator"] for s in STANDARD_SCHEMES}
    return {c.designator: c for label in labels for c in label.standard if c.designator not in known}


def model_of(record: Mapping[str, Any], where: str) -> dict[str, str]:
    model = record.get("model")
    if not isinstance(model, Mapping) or not model.get("name"):
        raise ClinicalExportError(f"{where}: model must be an object with at least a name")
    return {
        "name": str(model["name"]),
        "version": str(model.get("version") or ""),
        "checkpoint_sha256": str(model.get("checkpoint_sha256") or ""),
        "config": model["config"] if isinstance(model.get("config"), str) else "",
    }


def record_where(records: Sequence[Mapping[str, Any]], i: int) -> str:
    record = records[i]
    lesion = record.get("lesion_id") if isinstance(record, Mapping) else None
    return f"record {i + 1}" + (f" ({lesion})" if lesion else "")
