"""Namespaces, named graphs and the IRI minting rules of the lesion knowledge graph.

Every IRI the toolkit writes for data (lesions, annotations, activities…) is minted here,
deterministically from the record's identifiers, so loading the same predictions twice
adds no duplicate nodes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote

from rdflib import Namespace
from rdflib.namespace import DCTERMS, OWL, PROV, RDF, RDFS, XSD

#: Project properties and classes for predictions (score, threshold, decision, box…).
KG = Namespace("https://w3id.org/lesanet/kg#")
#: W3C Web Annotation vocabulary.
OA = Namespace("http://www.w3.org/ns/oa#")
#: Media Fragments URI spec, which the ``xywh=`` fragment selector conforms to.
MEDIA_FRAGMENTS = "http://www.w3.org/TR/media-frags/"
#: Base of the minted data IRIs.
DATA = "https://w3id.org/lesanet/data/"

#: Named graphs of the store; queries see their union as the default graph.
GRAPH_ONTOLOGY = "https://w3id.org/lesanet/graph/ontology"
GRAPH_ONTOLOGY_INFERRED = "https://w3id.org/lesanet/graph/ontology-inferred"
GRAPH_PREDICTIONS = "https://w3id.org/lesanet/graph/predictions"
GRAPH_TRAINING_LABELS = "https://w3id.org/lesanet/graph/training-labels"
QUERY_GRAPHS = (GRAPH_ONTOLOGY, GRAPH_ONTOLOGY_INFERRED, GRAPH_PREDICTIONS, GRAPH_TRAINING_LABELS)

#: Prefixes bound in serialised output and offered to queries.
PREFIXES: dict[str, str] = {
    "kg": str(KG),
    "lesion": "https://w3id.org/lesanet/lesion#",
    "oa": str(OA),
    "prov": str(PROV),
    "rdf": str(RDF),
    "rdfs": str(RDFS),
    "owl": str(OWL),
    "xsd": str(XSD),
    "dcterms": str(DCTERMS),
    "data": DATA,
}

# Characters kept verbatim in minted IRI path segments; everything else is %-encoded,
# which keeps user identifiers from ever forming IRI syntax.
_SAFE_SEGMENT = "-._~"


def path_segment(text: str) -> str:
    """One %-encoded IRI path segment (``/`` encoded too)."""
    return quote(text, safe=_SAFE_SEGMENT)


def id_path(identifier: str) -> str:
    """An identifier such as ``deeplesion/12`` as IRI path segments (``/`` kept)."""
    return "/".join(path_segment(part) for part in identifier.split("/"))


def short_hash(value: Any) -> str:
    """16 hex digits of SHA-256 over canonical JSON: stable ids for activities and models."""
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# The layouts of the IRIs minted per lesion; {id} is the id's path (id_path), {activity} an
# activity id, {label} a label's path segment. kg.rdf fills them with a placeholder id to
# build its per-model templates, so each layout is written here only.
LESION_LAYOUT = DATA + "lesion/{id}"
REGION_LAYOUT = DATA + "region/{id}"
ANNOTATION_LAYOUT = DATA + "annotation/{activity}/{id}/{label}"
#: what every minted lesion IRI starts with
LESION_PREFIX = LESION_LAYOUT.format(id="")


def lesion_iri(lesion_id: str) -> str:
    return LESION_LAYOUT.format(id=id_path(lesion_id))


def region_iri(lesion_id: str) -> str:
    return REGION_LAYOUT.format(id=id_path(lesion_id))


def selector_iri(lesion_id: str) -> str:
    return f"{DATA}selector/{id_path(lesion_id)}"


def image_iri(dataset: str, file_or_lesion: str, slice_index: int | None) -> str:
    tail = id_path(file_or_lesion)
    if slice_index is not None:
        tail += f"/slice/{slice_index}"
    return f"{DATA}image/{path_segment(dataset)}/{tail}"


def activity_iri(activity_id: str) -> str:
    return f"{DATA}activity/{activity_id}"


def model_iri(model_id: str) -> str:
    return f"{DATA}model/{model_id}"


def ontology_version_iri(version: str) -> str:
    return f"{DATA}ontology-version/{short_hash(version)}"


def annotation_iri(activity_id: str, lesion_id: str, label_local: str) -> str:
    return ANNOTATION_LAYOUT.format(activity=activity_id, id=id_path(lesion_id), label=path_segment(label_local))


def neighbor_iri(activity_id: str, lesion_id: str, rank: int) -> str:
    return f"{DATA}neighbor/{activity_id}/{id_path(lesion_id)}/{rank}"


def sentence_iri(sentence_id: str) -> str:
    return f"{DATA}sentence/{id_path(sentence_id)}"


def training_label_iri(activity_id: str, sentence_id: str, label_local: str) -> str:
    return f"{DATA}training-label/{activity_id}/{id_path(sentence_id)}/{path_segment(label_local)}"


def mention_iri(activity_id: str, sentence_id: str, start: int, end: int) -> str:
    return f"{DATA}mention/{activity_id}/{id_path(sentence_id)}/{start}-{end}"


def local_name(class_iri: str) -> str:
    """The fragment (or last path segment) of a class IRI, used inside minted IRIs."""
    for sep in ("#", "/"):
        if sep in class_iri:
            return class_iri.rsplit(sep, 1)[1]
    return class_iri
