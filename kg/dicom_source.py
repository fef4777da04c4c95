"""A record's DICOM source: its references (study, series, key slice) and the key slices' headers.

What DICOM SR (:mod:`kg.dicom_sr`, which needs the references) and FHIR (:mod:`kg.fhir`,
which copies Patient and ImagingStudy from the headers) share. Headers are read with
pydicom, without pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from kg.clinical import ClinicalExportError, record_where


@dataclass(frozen=True)
class DicomSource:
    """Where a record's lesion sits in DICOM terms (from the record's ``source``)."""

    file: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    box_px: tuple[float, float, float, float]


def dicom_source(record: Mapping[str, Any], where: str) -> DicomSource:
    """The record's DICOM references, or a clear error saying that SR needs a DICOM source."""
    source = record.get("source") if isinstance(record, Mapping) else None
    if not isinstance(source, Mapping):
        raise ClinicalExportError(f"{where}: the record has no source; DICOM SR needs a DICOM source")
    dataset = str(source.get("dataset") or "")
    if dataset != "dicom" or not source.get("sop_instance_uid"):
        what = f"a {dataset} input" if dataset else "an input"
        raise ClinicalExportError(
            f"{where}: DICOM SR needs a DICOM source, and this lesion comes from {what} "
            f"({source.get('file') or 'no file'}) without DICOM UIDs; predict on the DICOM series "
            "(--image DIR) for an SR, or write FHIR (--fhir), which needs no DICOM"
        )
    missing = [k for k in ("study_instance_uid", "series_instance_uid", "box_px", "file") if not source.get(k)]
    if missing:
        raise ClinicalExportError(f"{where}: source lacks {', '.join(missing)}, which the SR references")
    box = source["box_px"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ClinicalExportError(f"{where}: source.box_px must be [x1, y1, x2, y2], got {box!r}")
    return DicomSource(
        str(source["file"]),
        str(source["sop_instance_uid"]),
        str(source["study_instance_uid"]),
        str(source["series_instance_uid"]),
        (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
    )


def read_source_instances(path: str | os.PathLike[str], sop_instance_uids: Sequence[str]) -> dict[str, Any]:
    """Headers (no pixels) of the DICOM files under ``path`` (a file or a folder, searched
    recursively) whose SOP Instance UID is one of ``sop_instance_uids``."""
    wanted, found = set(sop_instance_uids), {}
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        raise ClinicalExportError(
            f"{root}: no such DICOM file or folder (the record's source); "
            "give the folder of the source series (--dicom DIR)"
        )
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid in wanted:
            found[uid] = ds
            if len(found) == len(wanted):
                break
    missing = sorted(wanted - set(found))
    if missing:
        raise ClinicalExportError(
            f"{root}: no DICOM file with SOP Instance UID {missing[0]} (the record's key "
            "slice); give the folder of the series the lesion was predicted on"
        )
    return found


def records_by_study(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Mapping[str, Any]]], list[str]]:
    """DICOM records grouped by Study Instance UID, and one message per record that has no
    DICOM source (those get no SR)."""
    studies: dict[str, list[Mapping[str, Any]]] = {}
    skipped = []
    for i, record in enumerate(records):
        try:
            ref = dicom_source(record, record_where(records, i))
        except ClinicalExportError as exc:
            skipped.append(str(exc))
            continue
        studies.setdefault(ref.study_instance_uid, []).append(record)
    return studies, skipped


def source_instances(
    records: Sequence[Mapping[str, Any]], folder: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The key slices' headers of DICOM ``records``, read from each record's source file
    or folder (or from ``folder`` when given: the series moved since prediction)."""
    by_path: dict[str, list[str]] = {}
    for i, record in enumerate(records):
        ref = dicom_source(record, record_where(records, i))
        by_path.setdefault(str(folder) if folder else ref.file, []).append(ref.sop_instance_uid)
    found: dict[str, Any] = {}
    for path, uids in by_path.items():
        found.update(read_source_instances(path, uids))
    return found


def dicom_headers(
    records: Sequence[Mapping[str, Any]], folder: str | os.PathLike[str] | None = None, required: bool = True
) -> dict[str, Any]:
    """Key-slice headers of the DICOM records (for FHIR's Patient / ImagingStudy);
    with ``required=False`` an unreadable source gives none rather than an error."""
    dicom = [
        r
        for r in records
        if isinstance(r, Mapping) and isinstance(r.get("source"), Mapping) and r["source"].get("sop_instance_uid")
    ]
    if not dicom:
        return {}
    try:
        return source_instances(dicom, folder)
    except ClinicalExportError:
        if required:
            raise
        return {}
