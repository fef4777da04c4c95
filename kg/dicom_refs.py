"""The DICOM identifiers of a prediction's source, as RDF next to the lesion.

A record predicted on a DICOM input carries in ``source`` the key slice's SOP Instance
UID and the series / study UIDs (``vision`` puts them there), and every volume input its
box centre in mm (``center_mm``, LPS). They go into the graph so that the clinical
outputs (``lesanet kg export --format sr|fhir``) can be made from a store alone:

* the key slice (``kg:Slice``): ``kg:sopInstanceUid``;
* the lesion: ``kg:seriesInstanceUid``, ``kg:studyInstanceUid``, ``kg:centerMm`` ("x y z").

UIDs are checked against DICOM's syntax (PS3.5 9.1: digits and dots, at most 64
characters, no leading zero in a component); a bad one is a record error, never a
triple. Terms are serialised by pyoxigraph, so no value can form N-Triples syntax.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pyoxigraph as ox

from kg import vocab
from kg.vocab import KG
from ontology.batch import RecordError

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: source key -> (kg property, on the slice node?)
UID_PROPERTIES = {
    "sop_instance_uid": (KG.sopInstanceUid, True),
    "series_instance_uid": (KG.seriesInstanceUid, False),
    "study_instance_uid": (KG.studyInstanceUid, False),
}


def check_uid(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, str) else ""
    if not text or len(text) > 64 or not _UID.match(text):
        raise RecordError(f"{where} is not a DICOM UID (digits and dots, at most 64 characters): {value!r}")
    return text


def dicom_ntriples(
    record: Mapping[str, Any], lesion_id: str, dataset: str, file: str | None, slice_index: int | None, where: str
) -> Iterator[str]:
    """N-Triples lines for the record's DICOM UIDs and box centre (none for other inputs)."""
    source = record.get("source") if isinstance(record, Mapping) else None
    if not isinstance(source, Mapping):
        return
    lesion = ox.NamedNode(vocab.lesion_iri(lesion_id))
    image = ox.NamedNode(vocab.image_iri(dataset, file or lesion_id, slice_index))
    for key, (prop, on_slice) in UID_PROPERTIES.items():
        if source.get(key) in (None, ""):
            continue
        uid = check_uid(source[key], f"{where}: source.{key}")
        yield f"{image if on_slice else lesion} {ox.NamedNode(str(prop))} {ox.Literal(uid)} .\n"
    centre = source.get("center_mm")
    if centre is not None:
        if (
            not isinstance(centre, (list, tuple))
            or len(centre) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in centre)
        ):
            raise RecordError(f"{where}: source.center_mm must be [x, y, z] in mm, got {centre!r}")
        text = " ".join(f"{float(v):g}" for v in centre)
        yield f"{lesion} {ox.NamedNode(str(KG.centerMm))} {ox.Literal(text)} .\n"
