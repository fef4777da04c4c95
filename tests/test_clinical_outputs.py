"""Issue 14: predictions as DICOM SR (TID 1500) and FHIR, from `predict` and from a store.

A tiny fresh model with a thresholds.json that decides chosen labels (threshold 0) and no
others (threshold 1) predicts on the orientation tests' synthetic DICOM series and on
pydicom's CT_small.dcm through the CLI. The SR is read back with highdicom and pydicom and
compared with the prediction record the same command wrote; dciodvfy (dicom3tools) must
report no error and dsrdump (dcmtk) must render it. The FHIR Bundle is parsed back by
fhir.resources, its references resolve inside it, one Observation per decided label.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("fhir.resources")

from test_volume_inputs import _file_lesion, _reference, _write_dicom  # noqa: E402  (issue 10's volume)

from cli import main as cli_main  # noqa: E402
from conftest import require_program  # noqa: E402
from kg.clinical import DESIGNATOR, local_name, short_version  # noqa: E402
from kg.dicom_source import read_source_instances  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "tests" / "data" / "example-mappings.sssom.tsv"
# Decided by the thresholds below: two body parts, four types (lung nodule is a closeMatch only), two attributes.
DECIDED = ("kidney", "upper abdomen", "kidney cyst", "cyst", "nodule", "lung nodule", "calcified", "lobular")
SERIES_UID = "1.2.826.0.1.3680043.8.498.140"


@pytest.fixture(scope="module")
def onto():
    from ontology import load_ontology

    return load_ontology(mappings=[MAPPINGS])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, onto) -> Path:
    """A fresh tiny run whose thresholds decide exactly DECIDED (wiring, not accuracy)."""
    import torch

    from vision.config import apply_overrides, load_config
    from vision.engines.checkpoint import save_checkpoint
    from vision.metrics.thresholds import THRESHOLDS_FILE, thresholds_document
    from vision.networks.model import LesaNet

    config = apply_overrides(
        load_config(ROOT / "configs" / "cpu-small.yaml"),
        ["model.widths=[4, 8, 8, 16, 16]", "model.roi_fc=16", "model.embed_dim=16"],
    )
    torch.manual_seed(0)
    terms = onto.label_set("lesanet171")
    run = tmp_path_factory.mktemp("clinical") / "run"
    save_checkpoint(run, LesaNet(config.model, len(terms)), config, terms, onto.version, epoch=0)
    sha = json.loads((run / "run.json").read_text())["checkpoint_sha256"]
    choices = [SimpleNamespace(threshold=0.0 if t in DECIDED else 1.0, f1=None, calibrated=True) for t in terms]
    (run / THRESHOLDS_FILE).write_text(json.dumps(thresholds_document(terms, choices, sha, "val", 10)))
    return run


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Path, list[str], int, tuple[float, ...]]:
    image = sitk.DICOMOrient(_reference(), "LPS")
    folder = tmp_path_factory.mktemp("series") / "ct"
    uids = _write_dicom(image, folder, SERIES_UID)
    k, box = _file_lesion(image)
    return folder, uids, k, box


def _predict(run: Path, out: Path, *image_args: str) -> dict:
    argv = [
        "predict",
        str(run),
        *image_args,
        "--json",
        "-o",
        str(out / "rec.json"),
        "--sr",
        str(out / "sr.dcm"),
        "--fhir",
        str(out / "bundle.json"),
        "--mappings",
        str(MAPPINGS),
    ]
    assert cli_main(argv) == 0
    return json.loads((out / "rec.json").read_text())


def _children(item, name: str) -> list[float]:
    return [
        float(c.MeasuredValueSequence[0].NumericValue)
        for c in item.ContentSequence
        if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeMeaning == name
    ]


def _check_sr(path: Path, record: dict, onto) -> None:
    """The SR's measurement group, codes, scores, ROI and UIDs equal the prediction record."""
    source = record["source"]
    decided = {item["label"]: item for item in record["labels"] if item["decision"]}
    assert set(DECIDED) <= set(decided) <= onto.expand(DECIDED)  # predict adds the decided labels' ancestors
    raw = pydicom.dcmread(path)
    assert raw.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage and raw.Modality == "SR"
    assert raw.StudyInstanceUID == source["study_instance_uid"]
    header = read_source_instances(source["file"], [source["sop_instance_uid"]])[source["sop_instance_uid"]]
    assert raw.PatientID == header.PatientID  # copied from the source, not made up
    evidence = raw.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == source["series_instance_uid"]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source["sop_instance_uid"]
    schemes = {item.CodingSchemeDesignator: item for item in raw.CodingSchemeIdentificationSequence}
    assert schemes[DESIGNATOR].CodingSchemeVersion == short_version(onto.version)
    assert onto.version_iri in [r.CodingSchemeURL for r in schemes[DESIGNATOR].CodingSchemeResourcesSequence]

    sr = hd.sr.srread(path)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.tracking_identifier == record["lesion_id"]
    roi = group.roi
    assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    x1, y1, x2, y2 = source["box_px"]
    expected = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]) + 0.5  # pixel centre -> SCOORD
    np.testing.assert_allclose(roi.value, expected, atol=1e-4)
    assert roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source["sop_instance_uid"]

    def check(item, name: str) -> None:
        concept = item.ConceptCodeSequence[0]
        assert (
            concept.CodingSchemeDesignator == DESIGNATOR and concept.CodeValue[:16] == local_name(onto.iri(name))[:16]
        )
        assert _children(item, "Label score") == pytest.approx([decided[name]["score"]], abs=1e-6)
        assert _children(item, "Threshold Value") == pytest.approx([decided[name]["threshold"]])
        equivalent = [c.CodeValue for c in getattr(concept, "EquivalentCodeSequence", [])]
        exact = [m.object_id.split(":")[1] for m in onto.mappings(name) if m.predicate == "exactMatch"]
        assert equivalent == exact  # exactMatch codes only; lung nodule's closeMatch is not one

    by_meaning = lambda items: {i.ConceptCodeSequence[0].CodeMeaning: i for i in items}  # noqa: E731
    types = [n for n in onto.sort_specific_first(list(decided)) if onto.category(n) == "type"]
    finding = next(
        i
        for i in group[0].ContentSequence
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    )
    assert finding.ConceptCodeSequence[0].CodeMeaning == types[0]
    check(finding, types[0])
    sites = by_meaning(group.finding_sites)
    assert set(sites) == {n for n in decided if onto.category(n) == "bodypart"}
    for name, item in sites.items():
        check(item, name)
    evaluations = {q.value.meaning: q.name.meaning for q in group.get_qualitative_evaluations()}
    assert set(evaluations) == set(types[1:]) | {n for n in decided if onto.category(n) == "attribute"}
    items = by_meaning(
        i
        for i in group[0].ContentSequence
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning in ("Lesion type", "Lesion attribute")
    )
    assert set(items) == set(evaluations)
    for name, evaluation_name in evaluations.items():
        assert evaluation_name == ("Lesion type" if onto.category(name) == "type" else "Lesion attribute")
        check(items[name], name)
    params = [
        i.TextValue
        for i in group[0].ContentSequence
        if i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"
    ]
    assert f"checkpoint_sha256={record['model']['checkpoint_sha256']}" in params
    library = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"][0]
    text = str(library)
    assert header.FrameOfReferenceUID in text and source["sop_instance_uid"] in text


def _check_validators(path: Path) -> None:
    dciodvfy = require_program("dciodvfy", "dicom3tools")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
    dsrdump = require_program("dsrdump", "dcmtk")
    result = subprocess.run([dsrdump, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Imaging Measurement Report" in result.stdout and "Finding Site" in result.stdout


def _check_fhir(path: Path, records: list[dict], study_uid: str | None) -> dict:
    from fhir.resources.R4B.bundle import Bundle

    text = path.read_text(encoding="utf-8")
    bundle = Bundle.model_validate_json(text)  # the library's models parse it back
    data = json.loads(text)
    urls = {entry["fullUrl"] for entry in data["entry"]}
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                refs.append(node["reference"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert refs and set(refs) <= urls  # every reference resolves inside the Bundle
    assert bundle.entry is not None
    kinds = []
    for e in bundle.entry:
        assert e.resource is not None
        kinds.append(e.resource.get_resource_type())
    decided = sum(item["decision"] for record in records for item in record["labels"])
    assert kinds.count("Observation") == decided and kinds.count("Device") == 1
    resources = {e["fullUrl"]: e["resource"] for e in data["entry"]}
    observations = [r for r in resources.values() if r["resourceType"] == "Observation"]
    for obs in observations:
        assert obs["category"][0]["coding"][0]["code"] == "imaging"
        assert resources[obs["device"]["reference"]]["resourceType"] == "Device"
        assert 0 <= obs["valueQuantity"]["value"] <= 1 and obs["interpretation"][0]["coding"][0]["code"] == "POS"
    if study_uid:
        studies = [r for r in resources.values() if r["resourceType"] == "ImagingStudy"]
        assert [s["identifier"][0]["value"] for s in studies] == [f"urn:oid:{study_uid}"]
        assert all(resources[o["derivedFrom"][0]["reference"]] is studies[0] for o in observations)
    return data


def test_sr_and_fhir_for_a_synthetic_dicom_series(run_dir, series, onto, tmp_path):
    folder, uids, k, box = series
    record = _predict(
        run_dir, tmp_path, "--image", str(folder), "--slice", str(k), "--box", ",".join(f"{v:.3f}" for v in box)
    )
    assert record["source"]["sop_instance_uid"] == uids[k]
    _check_sr(tmp_path / "sr.dcm", record, onto)
    _check_validators(tmp_path / "sr.dcm")
    data = _check_fhir(tmp_path / "bundle.json", [record], record["source"]["study_instance_uid"])
    observations = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Observation"]
    kidney = next(o for o in observations if o["code"]["text"] == "kidney")
    assert kidney["bodySite"] == kidney["code"]
    assert [c["code"] for c in kidney["code"]["coding"]] == ["kidney", "kidney-0001"]  # own code + exactMatch
    nodule = next(o for o in observations if o["code"]["text"] == "lung nodule")
    assert len(nodule["code"]["coding"]) == 1 and "bodySite" not in nodule  # a closeMatch is no code


def test_sr_for_pydicom_ct_small(run_dir, onto, tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    record = _predict(run_dir, tmp_path, "--image", path, "--slice", "0", "--box", "40,50.5,70,80")
    assert record["source"]["sop_instance_uid"] == pydicom.dcmread(path).SOPInstanceUID
    _check_sr(tmp_path / "sr.dcm", record, onto)
    _check_validators(tmp_path / "sr.dcm")
    assert pydicom.dcmread(tmp_path / "sr.dcm").PatientName == pydicom.dcmread(path).PatientName


def test_sr_for_a_nifti_input_says_it_needs_dicom(run_dir, tmp_path, capsys):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_reference(), str(path))
    assert (
        cli_main(
            [
                "predict",
                str(run_dir),
                "--image",
                str(path),
                "--slice",
                "8",
                "--box",
                "20,15,40,35",
                "--sr",
                str(tmp_path / "sr.dcm"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DICOM SR needs a DICOM source" in err and "nifti" in err
    assert not (tmp_path / "sr.dcm").exists()
    # FHIR needs no DICOM: no ImagingStudy, no Patient (nothing to copy them from)
    assert (
        cli_main(
            [
                "predict",
                str(run_dir),
                "--image",
                str(path),
                "--slice",
                "8",
                "--box",
                "20,15,40,35",
                "--json",
                "-o",
                str(tmp_path / "rec.json"),
                "--fhir",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    data = _check_fhir(tmp_path / "b.json", [json.loads((tmp_path / "rec.json").read_text())], None)
    assert not {"ImagingStudy", "Patient"} & {e["resource"]["resourceType"] for e in data["entry"]}


def test_kg_export_from_a_store_equals_predict(run_dir, series, onto, tmp_path, capsys):
    folder, uids, k, box = series
    record = _predict(
        run_dir, tmp_path, "--image", str(folder), "--slice", str(k), "--box", ",".join(f"{v:.3f}" for v in box)
    )
    store = tmp_path / "store"
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert (
        cli_main(["kg", "load", str(tmp_path / "records.jsonl"), "--store", str(store), "--mappings", str(MAPPINGS)])
        == 0
    )
    out = tmp_path / "export"
    assert (
        cli_main(
            [
                "kg",
                "export",
                "--format",
                "sr",
                "--lesion",
                record["lesion_id"],
                "--store",
                str(store),
                "-o",
                str(out / "sr.dcm"),
                "--mappings",
                str(MAPPINGS),
            ]
        )
        == 0
    )
    _check_sr(out / "sr.dcm", record, onto)  # the store holds what the SR needs, UIDs included
    moved = tmp_path / "moved"
    folder.rename(moved)
    try:
        assert (
            cli_main(
                [
                    "kg",
                    "export",
                    "--format",
                    "sr",
                    "--lesion",
                    record["lesion_id"],
                    "--store",
                    str(store),
                    "-o",
                    str(out / "sr2.dcm"),
                ]
            )
            == 1
        )
        assert "no such DICOM file or folder" in capsys.readouterr().err
        assert (
            cli_main(
                [
                    "kg",
                    "export",
                    "--format",
                    "sr",
                    "--lesion",
                    record["lesion_id"],
                    "--store",
                    str(store),
                    "-o",
                    str(out / "sr2.dcm"),
                    "--dicom",
                    str(moved),
                ]
            )
            == 0
        )
    finally:
        moved.rename(folder)
    assert (
        cli_main(
            [
                "kg",
                "export",
                "--format",
                "fhir",
                "--lesion",
                record["lesion_id"],
                "--store",
                str(store),
                "-o",
                str(out / "b.json"),
                "--mappings",
                str(MAPPINGS),
            ]
        )
        == 0
    )
    _check_fhir(out / "b.json", [record], record["source"]["study_instance_uid"])
    assert (
        cli_main(
            [
                "kg",
                "export",
                "--format",
                "fhir",
                "--lesion",
                "dicom/none/0/0",
                "--store",
                str(store),
                "-o",
                str(out / "none.json"),
            ]
        )
        == 1
    )
    assert "is not in the store" in capsys.readouterr().err


def test_bad_dicom_uid_in_a_record_is_a_record_error(run_dir, series, onto, tmp_path):
    from kg.rdf import prediction_ntriples

    folder, uids, k, box = series
    record = _predict(
        run_dir, tmp_path, "--image", str(folder), "--slice", str(k), "--box", ",".join(f"{v:.3f}" for v in box)
    )
    bad = json.loads(json.dumps(record))
    bad["source"]["sop_instance_uid"] = '1.2.3> <x> "'
    errors: list[str] = []
    text = "".join(prediction_ntriples([record, bad], onto, errors))
    assert len(errors) == 1 and "source.sop_instance_uid is not a DICOM UID" in errors[0] and "record 2" in errors[0]
    assert f'"{uids[k]}"' in text and "kg#sopInstanceUid" in text


def test_manifest_writes_one_sr_per_study_and_notes_non_dicom_rows(run_dir, series, onto, tmp_path, capsys):
    folder, uids, k, box = series
    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_reference(), str(nifti))
    box_text = ",".join(f"{v:.3f}" for v in box)
    manifest = tmp_path / "lesions.csv"
    manifest.write_text(
        "image,lesion_id,slice,box\n"
        f'{folder},big,{k},"{box_text}"\n'
        f'{folder},big-again,{k},"{box_text}"\n'
        f'{nifti},nifti-one,8,"20,15,40,35"\n',
        encoding="utf-8",
    )
    out = tmp_path / "sr"
    assert (
        cli_main(
            [
                "predict",
                str(run_dir),
                "--manifest",
                str(manifest),
                "--jsonl",
                "-o",
                str(tmp_path / "p.jsonl"),
                "--sr",
                str(out),
                "--fhir",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "no SR for" in err and "nifti-one" in err and "DICOM SR needs a DICOM source" in err
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    study = records[0]["source"]["study_instance_uid"]
    assert [p.name for p in out.iterdir()] == [f"{study}.dcm"]
    groups = hd.sr.srread(out / f"{study}.dcm").content.get_planar_roi_measurement_groups()
    assert sorted(g.tracking_identifier for g in groups) == ["big", "big-again"]
    assert len({str(g.tracking_uid) for g in groups}) == 2  # one tracking UID per lesion
    data = _check_fhir(tmp_path / "b.json", records, None)
    reports = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert len(reports) == 2 and sum(len(r["result"]) for r in reports) == sum(
        item["decision"] for record in records for item in record["labels"]
    )
