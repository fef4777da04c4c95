"""Prediction records as a DICOM Structured Report: TID 1500 "Measurement Report" (highdicom).

One Comprehensive 3D SR document per study. Its content, as viewers (OHIF, 3D Slicer's
QuantitativeReporting / dcmqi) read it:

* the observer is a device: the model (name, version; its UID derived from the checkpoint);
* the image library lists each key slice (TID 1601/1602: its frame of reference UID,
  position, orientation, pixel spacing), and the evidence sequence its study / series /
  instance;
* one Measurement Group (TID 1410, planar ROI) per lesion: tracking identifier (the
  lesion id) and tracking UID (derived from the lesion id and key slice, so the same
  lesion keeps its UID across reports), the box on the key slice as a closed POLYLINE
  referencing the slice's SOP Instance UID, the algorithm identification (name, version,
  ``checkpoint_sha256=...`` and ``ontology_version=...`` parameters), and
  - finding type: the most specific decided *type* label; other decided type labels as
    qualitative evaluations named (99LESANETKG type "Lesion type");
  - finding sites: the decided *body part* labels;
  - qualitative evaluations: the decided *attributes*, named (99LESANETKG attribute);
  each of these coded items has two HAS PROPERTIES children: the label score
  (99LESANETKG score, UCUM "1") and its decision threshold (DCM 122411 "Threshold Value").

Codes: the lesion ontology's own scheme (:data:`kg.clinical.DESIGNATOR`, declared in the
Coding Scheme Identification Sequence with the ontology's IRI, version IRI and version),
plus, in the concept's Equivalent Code Sequence, the standard code of an exactMatch
mapping. Patient and study attributes are copied from the source slice; absent Type 2
attributes stay empty (DICOM's "unknown"), none is made up.

SCOORD coordinates are DICOM image coordinates: (0, 0) is the top-left corner of the
top-left pixel, so a record's ``box_px`` (file voxel indices, integer = voxel centre,
column then row) maps to ``box_px + 0.5``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    MeasurementReport,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from kg.clinical import (
    DESIGNATOR,
    KG_DESIGNATOR,
    KG_IRI,
    KG_SCHEME_NAME,
    ONTOLOGY_IRI,
    SCHEME_NAME,
    ClinicalExportError,
    Code,
    DecidedLabel,
    by_category,
    decided_labels,
    model_of,
    other_schemes,
    record_where,
    short_version,
)
from kg.dicom_source import dicom_source, records_by_study, source_instances
from ontology.files import atomic_path
from ontology.protocol import OntologyLike

MANUFACTURER = "LesaNet toolkit"
SR_SERIES_NUMBER = 990  # the SR's own series; images rarely number theirs this high
# Type 2 patient / study attributes highdicom copies: left empty when the source lacks them.
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_CT_PROCEDURE = ("25045-6", "LN", "CT unspecified body region")


def _concept(code: Code) -> Any:
    return CodedConcept(code.value, code.designator, code.meaning[:64], code.version)


def _label_concept(label: DecidedLabel) -> Any:
    """The label's own-scheme concept, with its exactMatch codes as Equivalent Code Sequence."""

    concept = _concept(label.own)
    if label.standard:
        items = []
        for code in label.standard:
            item = Dataset()
            for key, value in _concept(code).items():
                item[key] = value
            items.append(item)
        concept.EquivalentCodeSequence = items
    return concept


def _private(value: str, meaning: str) -> Any:
    """A concept of the prediction vocabulary (score, label categories), not of the ontology."""
    return _concept(Code(value, meaning, KG_DESIGNATOR, KG_IRI))


def _score_items(label: DecidedLabel) -> list[Any]:
    unit = CodedConcept.from_code(codes.UCUM.NoUnits)
    return [
        NumContentItem(
            _private("score", "Label score"), label.score, unit, relationship_type=RelationshipTypeValues.HAS_PROPERTIES
        ),
        NumContentItem(
            CodedConcept.from_code(codes.DCM.ThresholdValue),
            label.threshold,
            unit,
            relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
        ),
    ]


def _with_scores(item: Any, label: DecidedLabel) -> Any:
    children = list(getattr(item, "ContentSequence", []) or [])
    item.ContentSequence = ContentSequence(children + _score_items(label))
    return item


def uid_from(*parts: str) -> str:
    """A UID derived from ``parts`` (pydicom's root, SHA-512 of the parts): stable for the same inputs."""

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _measurement_group(record: Mapping[str, Any], where: str, onto: OntologyLike, instance: Any) -> Any:
    ref = dicom_source(record, where)
    version = str(record["ontology_version"])
    model = model_of(record, where)
    groups = by_category(decided_labels(record, onto, where))
    x1, y1, x2, y2 = (v + 0.5 for v in ref.box_px)  # voxel index -> DICOM image coordinates
    rows, columns = int(instance.Rows), int(instance.Columns)
    if not (0 <= x1 <= x2 <= columns and 0 <= y1 <= y2 <= rows):
        raise ClinicalExportError(f"{where}: box_px {list(ref.box_px)} lies outside the {columns}×{rows} key slice")
    region = ImageRegion(
        graphic_type=GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=float),
        source_image=hd.sr.SourceImageForRegion(instance.SOPClassUID, instance.SOPInstanceUID),
    )
    parameters = [f"ontology_version={version}"]
    if model["checkpoint_sha256"]:
        parameters.insert(0, f"checkpoint_sha256={model['checkpoint_sha256']}")
    if model["config"]:
        parameters.append(f"config={model['config']}")
    algorithm = AlgorithmIdentification(model["name"], model["version"] or "unversioned", parameters=parameters)
    types = groups["type"]
    finding_type = _label_concept(types[0]) if types else None
    # A group has one "Finding" (121071); further type labels and the attributes are
    # qualitative evaluations under the ontology's own category names.
    type_name = _private("type", "Lesion type")
    attribute_name = _private("attribute", "Lesion attribute")
    evaluations = [(QualitativeEvaluation(type_name, _label_concept(label)), label) for label in types[1:]]
    evaluations += [
        (QualitativeEvaluation(attribute_name, _label_concept(label)), label) for label in groups["attribute"]
    ]
    for evaluation, label in evaluations:
        _with_scores(evaluation[0], label)
    sites = [_with_scores(FindingSite(_label_concept(label)), label) for label in groups["bodypart"]]
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=uid_from("lesanet-lesion", str(record["lesion_id"]), ref.sop_instance_uid),
            identifier=str(record["lesion_id"])[:64],
        ),
        referenced_region=region,
        finding_type=finding_type,
        algorithm_id=algorithm,
        finding_sites=sites or None,
        qualitative_evaluations=[e for e, _ in evaluations] or None,
    )
    if types:  # the finding type item: the only CODE of the group named "Finding" (121071)
        for item in group[0].ContentSequence:
            if (
                item.ValueType == "CODE"
                and item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.Finding.value
                and item.ConceptCodeSequence[0].CodeValue == types[0].own.value
            ):
                _with_scores(item, types[0])
                break
    return group


def _coding_schemes(labels: Sequence[DecidedLabel], version: str, version_iri: str | None) -> list[Any]:
    own = Dataset()
    own.CodingSchemeDesignator = DESIGNATOR
    own.CodingSchemeName = f"{SCHEME_NAME} {version}"
    own.CodingSchemeVersion = short_version(version)
    own.CodingSchemeResponsibleOrganization = MANUFACTURER
    own.CodingSchemeExternalID = ONTOLOGY_IRI
    resources = []
    for url in (version_iri, ONTOLOGY_IRI):
        if url:
            resource = Dataset()
            resource.CodingSchemeURLType = "OWL"
            resource.CodingSchemeURL = url
            resources.append(resource)
    own.CodingSchemeResourcesSequence = resources
    vocabulary = Dataset()
    vocabulary.CodingSchemeDesignator = KG_DESIGNATOR
    vocabulary.CodingSchemeName = KG_SCHEME_NAME
    vocabulary.CodingSchemeResponsibleOrganization = MANUFACTURER
    vocabulary.CodingSchemeExternalID = KG_IRI
    items = [own, vocabulary]
    for code in other_schemes(labels).values():
        item = Dataset()
        item.CodingSchemeDesignator = code.designator
        item.CodingSchemeName = code.scheme_name
        item.CodingSchemeExternalID = code.system  # the IRI base its codes are under
        items.append(item)
    return items


def _evidence(instance: Any) -> Any:
    """A copy of the source header with absent Type 2 patient / study attributes empty."""

    copy = deepcopy(instance)
    for keyword in _TYPE2:
        if keyword not in copy:
            setattr(copy, keyword, "")
    if "StudyInstanceUID" not in copy or "SOPClassUID" not in copy:
        raise ClinicalExportError(
            f"SOP Instance {instance.get('SOPInstanceUID')}: the source header lacks "
            "StudyInstanceUID or SOPClassUID; not a complete DICOM image"
        )
    return copy


def _thickness(instance: Any) -> float | None:
    value = instance.get("SliceThickness")
    return float(value) if value not in (None, "") else None


def _library_header(instance: Any) -> Any:
    """The header highdicom's image library reads. It always writes a slice thickness
    (TID 1604 makes it optional): a source without one gets a stand-in here whose row
    :func:`_drop_unknown_thickness` removes again, so no made-up value is written."""
    if _thickness(instance) is not None:
        return instance

    copy = deepcopy(instance)
    copy.SliceThickness = 0
    return copy


def _drop_unknown_thickness(report: Any, sop_uids: set[str]) -> None:
    def walk(items: Any) -> None:
        for item in items:
            children = getattr(item, "ContentSequence", None)
            if not children:
                continue
            if item.ValueType == "IMAGE" and str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) in sop_uids:
                keep = [
                    c
                    for c in children
                    if not (
                        c.ValueType == "NUM"
                        and c.ConceptNameCodeSequence[0].CodeValue == codes.DCM.SliceThickness.value
                    )
                ]
                children.clear()
                children.extend(keep)
            else:
                walk(children)

    if sop_uids:
        walk(report)


def measurement_report(records: Sequence[Mapping[str, Any]], onto: OntologyLike, instances: Mapping[str, Any]) -> Any:
    """A Comprehensive 3D SR (TID 1500) for ``records`` (all of one study) given the key
    slices' headers (``instances``: SOP Instance UID -> pydicom Dataset)."""

    if not records:
        raise ClinicalExportError("no prediction records to write as DICOM SR")
    refs = [dicom_source(r, record_where(records, i)) for i, r in enumerate(records)]
    studies = sorted({ref.study_instance_uid for ref in refs})
    if len(studies) > 1:
        raise ClinicalExportError(
            f"the lesions come from {len(studies)} studies ({', '.join(studies[:3])}); "
            "one SR covers one study: write one SR per study"
        )
    evidence: list[Any] = []
    groups: list[Any] = []
    labels: list[Any] = []
    for i, (record, ref) in enumerate(zip(records, refs)):
        where = record_where(records, i)
        instance = instances.get(ref.sop_instance_uid)
        if instance is None:
            raise ClinicalExportError(f"{where}: the header of key slice {ref.sop_instance_uid} was not given")
        if str(instance.get("StudyInstanceUID")) != ref.study_instance_uid:
            raise ClinicalExportError(
                f"{where}: the source file's StudyInstanceUID {instance.get('StudyInstanceUID')} "
                f"is not the record's {ref.study_instance_uid}; wrong source folder?"
            )
        groups.append(_measurement_group(record, where, onto, instance))
        labels.extend(decided_labels(record, onto, where))
        if all(e.SOPInstanceUID != instance.SOPInstanceUID for e in evidence):
            evidence.append(_evidence(instance))
    versions = sorted({str(r.get("ontology_version")) for r in records})
    if len(versions) > 1:
        raise ClinicalExportError(
            f"the records name {len(versions)} ontology versions ({', '.join(versions)}); "
            "one SR declares one version of the coding scheme: predict them with one ontology"
        )
    patients = {str(e.get("PatientID", "")) for e in evidence}
    if len(patients) > 1:
        raise ClinicalExportError(
            f"the key slices name {len(patients)} patients ({', '.join(sorted(patients))}) "
            "in one study; refusing to mix them in one report"
        )
    model = model_of(records[0], record_where(records, 0))
    device = DeviceObserverIdentifyingAttributes(
        uid=uid_from("lesanet-model", model["name"], model["version"], model["checkpoint_sha256"]),
        name=model["name"][:64],
        manufacturer_name=MANUFACTURER,
        model_name=model["name"][:64],
    )
    observation = ObservationContext(
        observer_device_context=ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )
    report = MeasurementReport(
        observation_context=observation,
        procedure_reported=CodedConcept(*_CT_PROCEDURE),
        imaging_measurements=groups,
        referenced_images=[_library_header(e) for e in evidence],
    )
    _drop_unknown_thickness(report, {str(e.SOPInstanceUID) for e in evidence if not _thickness(e)})
    version = str(records[0]["ontology_version"])
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=uid_from("lesanet-sr-series", studies[0], model["checkpoint_sha256"]),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"{model['name']} lesion annotation"[:64],
        is_complete=True,
    )
    version_iri = getattr(onto, "version_iri", None)
    sr.CodingSchemeIdentificationSequence = _coding_schemes(labels, version, str(version_iri) if version_iri else None)
    return sr


def write_sr(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], onto: OntologyLike, instances: Mapping[str, Any]
) -> Path:
    """Write the SR of ``records`` to ``path`` atomically (temp file, then rename)."""
    sr = measurement_report(records, onto, instances)
    target = Path(path)
    with atomic_path(target) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return target


def write_sr_outputs(
    records: Sequence[Mapping[str, Any]],
    target: str | os.PathLike[str],
    onto: OntologyLike,
    per_study: bool = False,
    folder: str | os.PathLike[str] | None = None,
) -> tuple[list[tuple[Path, int]], list[str]]:
    """SR files for the DICOM lesions of ``records``: ``target`` is the file (all lesions
    of one study), or with ``per_study`` a folder receiving ``<StudyInstanceUID>.dcm`` each.

    Returns (path, lesions) per file written and one message per record without a DICOM
    source. Without ``per_study`` such a record is an error: the user asked for its SR.
    """
    studies, skipped = records_by_study(records)
    if not per_study:
        if skipped:
            raise ClinicalExportError(skipped[0])
        if len(studies) > 1:
            raise ClinicalExportError(f"the lesions come from {len(studies)} studies; one SR covers one study")
    if not studies:
        raise ClinicalExportError(skipped[0] if skipped else "no lesions to write as DICOM SR")
    written = []
    for study_uid, members in studies.items():
        path = Path(target) / f"{study_uid}.dcm" if per_study else Path(target)
        written.append((write_sr(members, path, onto, source_instances(members, folder)), len(members)))
    return written, skipped
