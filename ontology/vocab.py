"""IRIs of the lesion ontology: its namespace, annotation properties and naming rule."""

from __future__ import annotations

import re
from urllib.parse import quote

from rdflib import Namespace, URIRef
from rdflib.namespace import DCTERMS, OWL, RDF, RDFS, SKOS

from ontology.errors import OntologyError

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

#: Standard annotation properties the file uses; OWL 2 DL needs each declared.
#: (rdfs:label, rdfs:comment and owl:versionInfo are built in and need no declaration.)
STANDARD_ANNOTATION_PROPERTIES = (
    SKOS.altLabel,
    SKOS.definition,
    SKOS.exactMatch,
    SKOS.closeMatch,
    DCTERMS.title,
    DCTERMS.description,
    DCTERMS.license,
    DCTERMS.rights,
    DCTERMS.creator,
    DCTERMS.source,
)
PROJECT_ANNOTATION_PROPERTIES = (CATEGORY, OCCURRENCES, LESANET_INDEX, SOURCE_ID)

CATEGORIES = ("bodypart", "type", "attribute")

__all__ = [
    "CATEGORIES",
    "CATEGORY",
    "DCTERMS",
    "LESANET_INDEX",
    "LESION",
    "LESION_ROOT",
    "OCCURRENCES",
    "ONTOLOGY_IRI",
    "OWL",
    "PROJECT_ANNOTATION_PROPERTIES",
    "RDF",
    "RDFS",
    "SKOS",
    "SOURCE_ID",
    "STANDARD_ANNOTATION_PROPERTIES",
    "iri_for_name",
    "version_iri",
]


def iri_for_name(name: str) -> URIRef:
    """Stable readable IRI for a term name: lower case, runs of other characters → ``_``.

    ``"kidney cyst"`` → ``…#kidney_cyst``; ``"porta Hepatis"`` → ``…#porta_hepatis``;
    ``"wedge-shaped"`` keeps its hyphen.
    """
    local = re.sub(r"[^a-z0-9\-]+", "_", name.strip().lower()).strip("_")
    if not local:
        raise OntologyError(f"cannot make an IRI from the empty term name {name!r}")
    return LESION[local]


def version_iri(version_info: str, digest: str) -> URIRef:
    """``owl:versionIRI`` for a release: ``…/lesion/<versionInfo>/<content digest>``.

    The digest is the content digest of ``Ontology.version`` (terms, hierarchy, exclusions,
    composites; never the header), so writing it into the header does not change it.
    """
    return URIRef(f"{ONTOLOGY_IRI}/{quote(version_info, safe='+-._~')}/{digest}")
