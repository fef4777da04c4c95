"""Prediction records as an HL7 FHIR Bundle (``fhir.resources``, R4B models).

Why R4B: ``fhir.resources`` 8 (pydantic 2, which the rest of the environment uses) ships
R5 by default and R4B (4.3.0) as ``fhir.resources.R4B``; the R4-only releases (6.x)
need pydantic 1. The resources written here (Bundle, DiagnosticReport, Observation,
ImagingStudy, Patient, Device) have the same structure in R4 (4.0.1) and R4B, so the
JSON is valid R4 as well.

A ``collection`` Bundle; every reference is a ``urn:uuid:`` fullUrl of another entry
(checked before writing). Per study (DICOM) or source file:

* a DiagnosticReport (status preliminary: nobody verified it; category RAD), its
  ``result`` the Observations, ``imagingStudy`` the ImagingStudy;
* an ImagingStudy with the DICOM Study Instance UID (``urn:oid:`` identifier), the
  series and key-slice instances, when the input is DICOM;
* a Patient with what the DICOM header says (PatientID, name, sex, birth date), when
  there is a header; nothing is made up, so a non-DICOM input has no Patient;
* one Observation per decided label: category imaging, ``code`` the label (the lesion
  ontology's own code system, plus exactMatch standard codes), ``bodySite`` the same
  for body-part labels, ``valueQuantity`` the score (UCUM 1), ``interpretation`` POS
  (decided), a ``component`` with the threshold, ``derivedFrom`` the ImagingStudy,
  ``device`` the model; its identifier is the lesion id and the label.

One Device for the model (name, version, checkpoint SHA-256 as identifier).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from kg.clinical import (
    ClinicalExportError,
    Code,
    DecidedLabel,
    decided_labels,
    model_of,
    record_where,
)
from kg.dicom_source import dicom_source
from ontology.files import write_text_atomic
from ontology.protocol import OntologyLike

KG_SYSTEM = "https://w3id.org/lesanet/kg"  # the kg vocabulary (kg:score, kg:threshold)
LESION_SYSTEM = "https://w3id.org/lesanet/data/lesion"  # lesion ids, as kg mints lesion IRIs
CHECKPOINT_SYSTEM = "https://w3id.org/lesanet/kg#checkpointSha256"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
_NAMESPACE = uuid.UUID("9d5c7f4e-2b1a-5c3d-8e6f-7a8b9c0d1e2f")  # uuid5 namespace of this toolkit's resources
_SEX = {"M": "male", "F": "female", "O": "other"}


def _uuid(*parts: str) -> str:
    """A stable urn:uuid for the same inputs (so a re-export gives the same references)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def _coding(code: Code) -> dict[str, Any]:
    coding = {"system": code.system, "code": code.value, "display": code.meaning}
    if code.version:
        coding["version"] = code.version
    return coding


def _concept(label: DecidedLabel) -> dict[str, Any]:
    return {"coding": [_coding(c) for c in label.codes], "text": label.name}


def _quantity(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "1", "system": UCUM, "code": "1"}


def _patient(instance: Any) -> dict[str, Any] | None:
    """A Patient from a DICOM header's patient attributes; None when it has none."""
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if str(instance.get("PatientID", "") or ""):
        patient["identifier"] = [{"value": str(instance.PatientID)}]
        issuer = str(instance.get("IssuerOfPatientID", "") or "")
        if issuer:
            patient["identifier"][0]["assigner"] = {"display": issuer}
    name = instance.get("PatientName")
    if name is not None and str(name):
        human: dict[str, Any] = {"text": str(name).replace("^", " ").strip()}
        if name.family_name:
            human["family"] = name.family_name
        given = [g for g in (name.given_name, name.middle_name) if g]
        if given:
            human["given"] = given
        patient["name"] = [human]
    sex = _SEX.get(str(instance.get("PatientSex", "") or "").upper())
    if sex:
        patient["gender"] = sex
    birth = str(instance.get("PatientBirthDate", "") or "")
    if len(birth) == 8 and birth.isdigit():
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return patient if len(patient) > 1 else None


def _source(record: Mapping[str, Any]) -> Mapping[str, Any]:
    source = record.get("source")
    return source if isinstance(source, Mapping) else {}


def _group_key(record: Mapping[str, Any]) -> str:
    source = _source(record)
    if source.get("study_instance_uid"):
        return f"study:{source['study_instance_uid']}"
    return f"file:{source.get('dataset', '')}:{source.get('file') or record.get('lesion_id')}"


def _imaging_study(records: Sequence[Mapping[str, Any]], instances: Mapping[str, Any], subject: str) -> dict[str, Any]:
    study_uid = str(_source(records[0])["study_instance_uid"])
    series: dict[str, dict[str, Any]] = {}
    for record in records:
        source = _source(record)
        uid = str(source.get("series_instance_uid") or "")
        if not uid:
            continue
        header = instances.get(str(source.get("sop_instance_uid")))
        modality = str(header.get("Modality", "CT")) if header is not None else "CT"  # vision reads CT only
        entry = series.setdefault(
            uid, {"uid": uid, "modality": {"system": DICOM_DCM, "code": modality}, "instance": []}
        )
        sop = str(source.get("sop_instance_uid") or "")
        if header is not None and sop and all(i["uid"] != sop for i in entry["instance"]):
            instance: dict[str, Any] = {
                "uid": sop,
                "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{header.SOPClassUID}"},
            }
            if header.get("InstanceNumber") not in (None, ""):
                instance["number"] = int(header.InstanceNumber)
            entry["instance"].append(instance)
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "subject": {"reference": subject},
    }
    listed = [{k: v for k, v in s.items() if v != []} for s in series.values()]
    if listed:
        study["series"] = listed
        study["numberOfSeries"] = len(listed)
    return study


def bundle_dict(
    records: Sequence[Mapping[str, Any]],
    onto: OntologyLike,
    instances: Mapping[str, Any] | None = None,
    issued: datetime | None = None,
) -> dict[str, Any]:
    """The Bundle as JSON-ready data, before validation (see :func:`fhir_bundle`)."""
    # local: kg.dicom_sr loads highdicom, needed only for DICOM sources
    if not records:
        raise ClinicalExportError("no prediction records to write as FHIR")
    instances = instances or {}
    when = (issued or datetime.now(UTC)).isoformat(timespec="seconds")
    model = model_of(records[0], record_where(records, 0))
    device_id = _uuid("device", model["name"], model["version"], model["checkpoint_sha256"])
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id,
        "deviceName": [{"name": model["name"], "type": "model-name"}],
        "manufacturer": "LesaNet toolkit",
    }
    if model["version"]:
        device["version"] = [{"value": model["version"]}]
    if model["checkpoint_sha256"]:
        device["identifier"] = [{"system": CHECKPOINT_SYSTEM, "value": model["checkpoint_sha256"]}]
    if model["config"]:
        device["note"] = [{"text": f"training config: {model['config']}"}]
    resources: list[dict[str, Any]] = [device]
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ClinicalExportError(f"{record_where(records, i)}: expected a JSON object")
        groups.setdefault(_group_key(record), []).append(i)
    for key, indices in groups.items():
        members = [records[i] for i in indices]
        header = None
        for i in indices:
            source = _source(records[i])
            if source.get("sop_instance_uid"):
                dicom_source(records[i], record_where(records, i))  # a DICOM record carries its UIDs and box
                header = header or instances.get(str(source["sop_instance_uid"]))
        subject = None
        patient = _patient(header) if header is not None else None
        if patient is not None:
            patient["id"] = _uuid("patient", key, str(patient.get("identifier", "")))
            resources.append(patient)
            subject = f"urn:uuid:{patient['id']}"
        study = None
        if key.startswith("study:"):
            if subject is None:  # ImagingStudy needs a subject: the (unnamed) patient of the study
                patient = {
                    "resourceType": "Patient",
                    "id": _uuid("patient", key),
                    "text": {
                        "status": "generated",
                        "div": '<div xmlns="http://www.w3.org/1999/xhtml">the patient of DICOM study '
                        f"{key[6:]} (its header names none)</div>",
                    },
                }
                resources.append(patient)
                subject = f"urn:uuid:{patient['id']}"
            study = _imaging_study(members, instances, subject)
            study["id"] = _uuid("imaging-study", key)
            resources.append(study)
        observations = []
        for i in indices:
            observations.extend(
                _observations(
                    records[i], record_where(records, i), onto, device_id, subject, study["id"] if study else None, when
                )
            )
        resources.extend(observations)
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": _uuid("report", key, model["checkpoint_sha256"]),
            "status": "preliminary",
            "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE, "code": "RAD", "display": "Radiology"}]}],
            "code": {"text": f"{model['name']} lesion annotation"},
            "issued": when,
            "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
            "conclusion": _conclusion(members, onto),
        }
        if subject:
            report["subject"] = {"reference": subject}
        if study:
            report["imagingStudy"] = [{"reference": f"urn:uuid:{study['id']}"}]
        resources.append(report)
    return {
        "resourceType": "Bundle",
        "id": _uuid("bundle", *sorted(groups), when),
        "type": "collection",
        "timestamp": when,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _observations(
    record: Mapping[str, Any],
    where: str,
    onto: OntologyLike,
    device_id: str,
    subject: str | None,
    study_id: str | None,
    when: str,
) -> list[dict[str, Any]]:
    lesion_id = str(record.get("lesion_id") or "")
    if not lesion_id:
        raise ClinicalExportError(f"{where}: lesion_id is missing")
    out = []
    for label in decided_labels(record, onto, where):
        concept = _concept(label)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": _uuid("observation", lesion_id, label.iri, record.get("ontology_version", "")),
            "identifier": [{"system": LESION_SYSTEM, "value": f"{lesion_id}#{label.own.value}"}],
            "status": "preliminary",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
            "code": concept,
            "issued": when,
            "valueQuantity": _quantity(label.score),
            "interpretation": [
                {
                    "coding": [{"system": INTERPRETATION, "code": "POS", "display": "Positive"}],
                    "text": f"decided (score {label.score:g}, threshold {label.threshold:g})",
                }
            ],
            "component": [
                {
                    "code": {"coding": [{"system": KG_SYSTEM, "code": "threshold", "display": "decision threshold"}]},
                    "valueQuantity": _quantity(label.threshold),
                }
            ],
            "device": {"reference": f"urn:uuid:{device_id}"},
            "note": [{"text": f"lesion {lesion_id}{_where_text(_source(record))}; {label.category} label"}],
        }
        if label.category == "bodypart":
            obs["bodySite"] = concept
        if subject:
            obs["subject"] = {"reference": subject}
        if study_id:
            obs["derivedFrom"] = [{"reference": f"urn:uuid:{study_id}"}]
        out.append(obs)
    return out


def _where_text(source: Mapping[str, Any]) -> str:
    parts = []
    if source.get("slice") is not None:
        parts.append(f"key slice {source['slice']}")
    if source.get("box_px"):
        parts.append("box " + ",".join(f"{float(v):g}" for v in source["box_px"]) + " px")
    if source.get("sop_instance_uid"):
        parts.append(f"SOP Instance {source['sop_instance_uid']}")
    return (", " + ", ".join(parts)) if parts else ""


def _conclusion(records: Iterable[Mapping[str, Any]], onto: OntologyLike) -> str:
    lines = []
    for i, record in enumerate(records):
        names = [label.name for label in decided_labels(record, onto, f"record {i + 1}")]
        lines.append(f"{record.get('lesion_id')}: {', '.join(names) if names else 'no label decided'}")
    return "; ".join(lines)


def check_references(bundle: Mapping[str, Any]) -> None:
    """Every ``reference`` in the Bundle names the fullUrl of one of its entries."""
    urls = {entry["fullUrl"] for entry in bundle.get("entry", [])}

    def walk(node: Any, at: str) -> None:
        if isinstance(node, Mapping):
            ref = node.get("reference")
            if isinstance(ref, str) and ref not in urls:
                raise ClinicalExportError(f"FHIR Bundle: {at}.reference {ref} resolves to no entry of the Bundle")
            for key, value in node.items():
                walk(value, f"{at}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{at}[{i}]")

    for entry in bundle.get("entry", []):
        walk(entry["resource"], f"{entry['resource']['resourceType']}/{entry['resource'].get('id')}")


def fhir_bundle(
    records: Sequence[Mapping[str, Any]],
    onto: OntologyLike,
    instances: Mapping[str, Any] | None = None,
    issued: datetime | None = None,
) -> Any:
    """The Bundle as a validated ``fhir.resources.R4B`` model (pydantic: a bad field raises)."""
    data = bundle_dict(records, onto, instances, issued)
    check_references(data)
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        raise ClinicalExportError(f"FHIR Bundle does not validate: {str(exc).splitlines()[0]}") from None


def write_fhir(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    onto: OntologyLike,
    instances: Mapping[str, Any] | None = None,
) -> int:
    """Write the Bundle as JSON atomically; parsed back by the models before the rename.
    Returns the number of Observations."""
    bundle = fhir_bundle(records, onto, instances)
    text = json.dumps(json.loads(bundle.model_dump_json(exclude_none=True)), indent=2, ensure_ascii=False) + "\n"
    Bundle.model_validate_json(text)  # what is written reads back
    write_text_atomic(path, text)
    return sum(1 for e in bundle.entry or [] if e.resource.get_resource_type() == "Observation")
