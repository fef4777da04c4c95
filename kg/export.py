"""A stored lesion back as a prediction record, so the clinical outputs come from RDF.

``lesanet kg export --format sr|fhir --lesion ID`` reads the lesion's source (dataset,
file, key slice, box, spacing, DICOM UIDs, centre), every scored label of one inference
activity and that activity's model and ontology version, and rebuilds the record of
``docs/architecture.md``; :mod:`kg.dicom_sr` and :mod:`kg.fhir` then write it exactly as
``lesanet predict --sr / --fhir`` would. The lesion IRI is bound, never pasted.
"""

from __future__ import annotations

from typing import Any

import rdflib

from kg import vocab
from kg.clinical import ClinicalExportError
from ontology.protocol import OntologyLike

_SOURCE_QUERY = """
SELECT ?lesionId ?dataset ?lesionIndex ?file ?slice ?boxPx ?spacing ?sop ?series ?study ?centre
WHERE {
  ?lesion kg:lesionId ?lesionId ; kg:dataset ?dataset .
  OPTIONAL { ?lesion kg:lesionIndex ?lesionIndex }
  OPTIONAL { ?lesion kg:keyRegion/oa:hasSource ?image .
             OPTIONAL { ?image kg:file ?file }
             OPTIONAL { ?image kg:sliceIndex ?slice }
             OPTIONAL { ?image kg:sopInstanceUid ?sop } }
  OPTIONAL { ?lesion kg:boxPx ?boxPx }
  OPTIONAL { ?lesion kg:spacingMm ?spacing }
  OPTIONAL { ?lesion kg:seriesInstanceUid ?series }
  OPTIONAL { ?lesion kg:studyInstanceUid ?study }
  OPTIONAL { ?lesion kg:centerMm ?centre }
}
"""

_LABELS_QUERY = """
SELECT ?activity ?label ?score ?threshold ?decision ?modelName ?modelVersion ?sha ?config ?ontologyVersion
WHERE {
  ?lesion kg:keyRegion ?target .
  ?annotation oa:hasTarget ?target ; oa:hasBody ?label ; kg:score ?score ; kg:threshold ?threshold ;
              kg:decision ?decision ; prov:wasGeneratedBy ?activity .
  ?activity prov:used ?model , ?version .
  ?model a kg:Model ; kg:modelName ?modelName .
  OPTIONAL { ?model kg:modelVersion ?modelVersion }
  OPTIONAL { ?model kg:checkpointSha256 ?sha }
  OPTIONAL { ?model kg:config ?config }
  ?version a kg:OntologyVersion ; kg:versionString ?ontologyVersion .
}
"""


def _numbers(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in str(text).split()]


def stored_record(backend: Any, lesion_id: str, onto: OntologyLike, checkpoint: str | None = None) -> dict[str, Any]:
    """The prediction record of ``lesion_id`` as the store holds it.

    A lesion predicted by several models (inference activities) needs ``checkpoint``: a
    prefix of the model's checkpoint SHA-256 choosing one.
    """
    lesion = rdflib.URIRef(vocab.lesion_iri(lesion_id))
    rows = backend.query(_SOURCE_QUERY, {"lesion": lesion}).values()
    if not rows:
        raise ClinicalExportError(
            f"lesion {lesion_id!r} is not in the store (see `lesanet kg find --counts`, "
            "or load its predictions with `lesanet kg load`)"
        )
    row = rows[0]
    source: dict[str, Any] = {"dataset": row["dataset"]}
    for key, var in (
        ("lesion_idx", "lesionIndex"),
        ("file", "file"),
        ("slice", "slice"),
        ("sop_instance_uid", "sop"),
        ("series_instance_uid", "series"),
        ("study_instance_uid", "study"),
    ):
        if row.get(var) is not None:
            source[key] = row[var]
    for key, var in (("box_px", "boxPx"), ("spacing_mm", "spacing"), ("center_mm", "centre")):
        if row.get(var) is not None:
            source[key] = _numbers(row[var])
    labels = backend.query(_LABELS_QUERY, {"lesion": lesion}).values()
    by_activity: dict[str, list[dict[str, Any]]] = {}
    for label in labels:
        by_activity.setdefault(str(label["activity"]), []).append(label)
    if checkpoint:
        by_activity = {
            a: rows for a, rows in by_activity.items() if str(rows[0].get("sha") or "").startswith(checkpoint)
        }
    if not by_activity:
        raise ClinicalExportError(
            f"lesion {lesion_id!r} has no scored labels in the store"
            + (f" from a model with checkpoint {checkpoint}…" if checkpoint else "")
        )
    if len(by_activity) > 1:
        shas = sorted(str(rows[0].get("sha") or "?")[:12] for rows in by_activity.values())
        raise ClinicalExportError(
            f"lesion {lesion_id!r} was predicted by {len(by_activity)} models "
            f"(checkpoints {', '.join(shas)}); choose one with --checkpoint SHA"
        )
    chosen = next(iter(by_activity.values()))
    first = chosen[0]
    model = {"name": first["modelName"]}
    for key, var in (("version", "modelVersion"), ("checkpoint_sha256", "sha"), ("config", "config")):
        if first.get(var) is not None:
            model[key] = first[var]
    record_labels: list[dict[str, Any]] = []
    for item in chosen:
        term = onto.term(str(item["label"]))
        record_labels.append(
            {
                "label": term.name,
                "iri": str(term.iri),
                "score": float(item["score"]),
                "threshold": float(item["threshold"]),
                "decision": bool(item["decision"]),
            }
        )
    record_labels.sort(key=lambda item: -item["score"])
    return {
        "lesion_id": row["lesionId"],
        "source": source,
        "labels": record_labels,
        "model": model,
        "ontology_version": first["ontologyVersion"],
    }
