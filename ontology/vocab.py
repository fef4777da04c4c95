"""IRIs of the lesion ontology: its namespace, annotation properties and naming rule."""

from __future__ import annotations

import re

from rdflib import Namespace, URIRef
from rdflib.namespace import OWL, RDF, RDFS, SKOS

#: Project namespace. Classes are "a lesion with this label", e.g. ``LESION.kidney_cyst``.
LESION = Namespace("https://w3id.org/lesanet/lesion#")
ONTOLOGY_IRI = URIRef("https://w3id.org/lesanet/lesion")

#: Root class: every term is (transitively) a subclass of it.
LESION_ROOT = LESION.Lesion

#: Annotation properties (owl:AnnotationProperty).
CATEGORY = LESION.category  # "bodypart" | "type" | "attribute"
OCCURRENCES = LESION.deeplesionOccurrences  # xsd:integer, num_detected of the spreadsheet
LESANET_INDEX = LESION.lesanetIndex  # xsd:integer, position in the official 171-label term_list
SOURCE_ID = LESION.spreadsheetId  # obsolete id column, kept for provenance

CATEGORIES = ("bodypart", "type", "attribute")

__all__ = [
    "CATEGORIES",
    "CATEGORY",
    "LESANET_INDEX",
    "LESION",
    "LESION_ROOT",
    "OCCURRENCES",
    "ONTOLOGY_IRI",
    "OWL",
    "RDF",
    "RDFS",
    "SKOS",
    "SOURCE_ID",
    "iri_for_name",
]


def iri_for_name(name: str) -> URIRef:
    """Stable readable IRI for a term name: lower case, runs of other characters → ``_``.

    ``"kidney cyst"`` → ``…#kidney_cyst``; ``"porta Hepatis"`` → ``…#porta_hepatis``;
    ``"wedge-shaped"`` keeps its hyphen.
    """
    local = re.sub(r"[^a-z0-9\-]+", "_", name.strip().lower()).strip("_")
    if not local:
        raise ValueError(f"cannot make an IRI from the empty term name {name!r}")
    return LESION[local]
