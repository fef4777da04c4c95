"""A tiny trained run on a phantom: calibration, evaluation, prediction, retrieval, figures, CLI.

One session-scoped fixture synthesises a small phantom, builds its patch cache and trains
the cpu-small config for two short epochs; every test here reuses it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli import main as cli_main
from vision.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TinyRun:
    phantom: Path
    cache: Path
    run: Path


def _tiny_config():
    """cpu-small shrunk further: these tests check wiring and formats, not accuracy."""
    from vision.config import apply_overrides

    return apply_overrides(
        load_config(ROOT / "configs" / "cpu-small.yaml"),
        [
            "model.widths=[4, 8, 8, 16, 16]",
            "model.roi_fc=16",
            "model.embed_dim=16",
            "loss.rhem_samples=300",
            "loss.triplet_count=200",
            "train.batch_size=16",
        ],
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shipped_ontology) -> TinyRun:
    from vision.data.cache import build_cache
    from vision.data.phantom import synthesize
    from vision.engines.train import train

    root = tmp_path_factory.mktemp("tiny-run")
    phantom = synthesize(root / "phantom", 48, seed=5, workers=1, onto=shipped_ontology)
    build_cache(
        phantom,
        phantom / "labels.json",
        root / "cache",
        workers=1,
        progress=False,
        known_labels=set(shipped_ontology.terms),
        ontology_version=shipped_ontology.version,
    )
    train(_tiny_config(), root / "cache", root / "run", epochs=1, progress=False, onto=shipped_ontology)
    return TinyRun(phantom, root / "cache", root / "run")


@pytest.fixture(scope="session")
def predictor(tiny_run: TinyRun, shipped_ontology):
    from vision.engines.infer import load_predictor
    from vision.evaluation.evaluate import calibrate_thresholds

    loaded = load_predictor(tiny_run.run, device="cpu", onto=shipped_ontology)
    calibrate_thresholds(loaded, tiny_run.cache)
    return loaded


def _cache_index(tiny_run: TinyRun) -> dict:
    return json.loads((tiny_run.cache / "index.json").read_text())


# --------------------------------------------------------------------------- evaluation


def test_calibrated_thresholds_beat_fixed_half_on_validation(tiny_run: TinyRun, predictor) -> None:
    from vision.evaluation.evaluate import evaluate_run
    from vision.metrics.thresholds import read_thresholds

    stored = read_thresholds(tiny_run.run, predictor.term_list, predictor.info.checkpoint_sha256)
    assert stored is not None and np.allclose(stored, predictor.thresholds)
    calibrated = evaluate_run(predictor, tiny_run.cache, "val")
    fixed = evaluate_run(predictor, tiny_run.cache, "val", decision="fixed")
    both = calibrated.metrics.evaluable
    assert both.any()
    # exact search: on its own calibration set no label can do worse than at 0.5
    assert np.all(calibrated.metrics.f1[both] >= fixed.metrics.f1[both] - 1e-12)
    assert calibrated.averages.f1 > fixed.averages.f1


def test_test_and_hand_sets_make_table1(tiny_run: TinyRun, predictor) -> None:
    from vision.evaluation.evaluate import evaluate_run, table1_markdown

    test = evaluate_run(predictor, tiny_run.cache, "test", exclusive_filter=True)
    hand = evaluate_run(predictor, tiny_run.cache, "hand")
    truth_file = evaluate_run(predictor, tiny_run.cache, "hand", truth=tiny_run.phantom / "truth.json")
    n_test = sum(1 for r in _cache_index(tiny_run)["lesions"] if r["split"] == "test")
    assert test.n_lesions == hand.n_lesions == n_test
    # the truth file covers every split; the cache's own truth only the test lesions
    assert truth_file.n_lesions == len(_cache_index(tiny_run)["lesions"])
    assert hand.truth_kind == "complete" and test.truth_kind == "text-mined"
    assert test.exclusive_filtered is not None
    table = table1_markdown({"LesaNet": [test, hand]})
    assert "test (text-mined) AUC" in table and "hand (complete truth) F1" in table
    payload = json.loads(hand.to_json())
    assert payload["averages"]["n_labels"] == hand.averages.n_labels > 0


# --------------------------------------------------------------------------- prediction


def test_prediction_records_follow_the_contract(tiny_run: TinyRun, predictor, shipped_ontology) -> None:
    from vision.engines.infer import predict_cache

    records = predict_cache(predictor, tiny_run.cache, "test")
    assert records
    for record in records:
        assert set(record) == {"lesion_id", "source", "labels", "model", "ontology_version", "neighbors"}
        assert record["model"]["checkpoint_sha256"] == predictor.info.checkpoint_sha256
        labels = record["labels"]
        assert sorted(e["label"] for e in labels) == sorted(predictor.term_list)
        assert all(set(e) == {"label", "iri", "score", "threshold", "decision"} for e in labels)
        decided = [e["label"] for e in labels if e["decision"]]
        assert [e["decision"] for e in labels] == [True] * len(decided) + [False] * (len(labels) - len(decided))
        position = {name: i for i, name in enumerate(decided)}
        for name in decided:
            for ancestor in shipped_ontology.ancestors(name) & set(predictor.term_list):
                assert ancestor in position, f"{name} decided without its ancestor {ancestor}"
                assert position[ancestor] > position[name], "most specific labels come first"
        assert labels[0]["iri"] == str(shipped_ontology.iri(labels[0]["label"]))


def test_deeplesion_files_score_like_the_cache(tiny_run: TinyRun, predictor) -> None:
    from vision.data.inputs import deeplesion_inputs
    from vision.engines.infer import predict_cache_full, predict_inputs

    cached = predict_cache_full(predictor, tiny_run.cache, "test")
    assert cached.cache_records is not None
    idxs = [r["lesion_idx"] for r in cached.cache_records[:3]]
    from_files = predict_inputs(predictor, deeplesion_inputs(tiny_run.phantom, idxs))
    assert np.array_equal(np.asarray(from_files.patches), cached.patches[:3])
    assert np.allclose(from_files.scored.probs, cached.scored.probs[:3], atol=1e-6)
    assert from_files.records[0]["source"]["file"].startswith("Images_png/")


def test_png_path_and_bad_boxes(tiny_run: TinyRun, predictor) -> None:
    from vision.data.deeplesion import read_dl_info
    from vision.data.inputs import PredictError, deeplesion_inputs, png_inputs
    from vision.engines.infer import predict_inputs

    lesion = read_dl_info(tiny_run.phantom / "DL_info.csv").lesions[0]
    png = lesion.slice_path(tiny_run.phantom / "Images_png", lesion.key_slice)
    spacing = ",".join(str(v) for v in lesion.spacing_mm)
    by_png = predict_inputs(predictor, png_inputs(png, spacing, [lesion.box]))
    by_row = predict_inputs(predictor, deeplesion_inputs(tiny_run.phantom, [0]))
    assert np.allclose(by_png.scored.probs, by_row.scored.probs, atol=1e-6)
    with pytest.raises(PredictError, match="outside the 256×256 image"):
        png_inputs(png, spacing, [(250.0, 10.0, 300.0, 40.0)])
    with pytest.raises(PredictError, match="slice interval"):
        png_inputs(png, "0.8", [lesion.box])
    with pytest.raises(PredictError, match="not a row"):
        deeplesion_inputs(tiny_run.phantom, [100_000])


def test_run_from_another_version_is_refused(tiny_run: TinyRun, tmp_path: Path) -> None:
    from vision.engines.checkpoint import CheckpointError
    from vision.engines.infer import load_predictor

    other = tmp_path / "run"
    shutil.copytree(tiny_run.run, other)
    run = json.loads((other / "run.json").read_text())
    run["model"]["version"] = "9.9.9"
    (other / "run.json").write_text(json.dumps(run))
    with pytest.raises(CheckpointError, match="LesaNet 9.9.9"):
        load_predictor(other, device="cpu")


# --------------------------------------------------------------------------- retrieval and figures


def test_retrieval_puts_the_lesions_own_copy_first(tiny_run: TinyRun, predictor, tmp_path: Path) -> None:
    from vision.data.inputs import deeplesion_inputs
    from vision.engines.retrieval import embed_cache, image_query, mark_shared, neighbours, retrieval_report

    emb = embed_cache(predictor, tiny_run.cache, tmp_path / "emb")
    assert len(emb.lesions) == len(_cache_index(tiny_run)["lesions"])
    target = next(lesion for lesion in emb.lesions if lesion["split"] == "test")
    query = image_query(predictor, deeplesion_inputs(tiny_run.phantom, [target["lesion_idx"]])[0], emb)
    hits = neighbours(emb, query.vector, 3)
    assert hits[0]["lesion_id"] == target["lesion_id"] and hits[0]["distance"] < 1e-3
    assert query.row == hits[0]["row"]
    marked = mark_shared(query, hits)
    assert marked["hits"][0]["is_query"]
    report = retrieval_report(emb, k=3)
    assert set(report) == {"embedding", "score vector"}
    assert all(0.0 <= q.precision_at_k <= 1.0 for q in report.values())


def test_run_figures_are_pictures(tiny_run: TinyRun, predictor, tmp_path: Path) -> None:
    from PIL import Image

    from vision.reporting.figures import run_figures

    paths = run_figures(predictor, tiny_run.cache, tmp_path / "figs", n_panels=3)
    assert {p.name for p in paths} == {"roc.png", "spl_weights.png", "predictions.png", "retrieval.png"}
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 100 and pixels.std() > 5


# --------------------------------------------------------------------------- CLI


def test_cli_evaluate_predict_embed_retrieve(tiny_run: TinyRun, predictor, tmp_path: Path, capsys) -> None:
    run, cache = str(tiny_run.run), str(tiny_run.cache)
    out = tmp_path / "eval.json"
    assert cli_main(["evaluate", run, "--data", cache, "--format", "json", "-o", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [s["name"] for s in payload["sets"]] == ["test (text-mined)", "hand (complete truth)"]
    capsys.readouterr()
    assert cli_main(["predict", run, "--deeplesion", str(tiny_run.phantom), "--lesion", "0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["lesion_id"] == "deeplesion/0" and len(record["labels"]) == len(predictor.term_list)
    emb = tmp_path / "emb"
    assert cli_main(["embed", run, "--data", cache, "-o", str(emb)]) == 0
    capsys.readouterr()
    assert (
        cli_main(
            [
                "retrieve",
                run,
                "--embeddings",
                str(emb),
                "--deeplesion",
                str(tiny_run.phantom),
                "--lesion",
                "0",
                "-k",
                "2",
                "--panel",
                str(tmp_path / "hits.png"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "deeplesion/0" in text and "(the query itself)" in text and (tmp_path / "hits.png").is_file()
    assert cli_main(["retrieve", run, "--embeddings", str(emb), "--quality", "-k", "2"]) == 0
    assert "score vector" in capsys.readouterr().out
    first = json.loads((emb / "index.json").read_text())["lesions"][0]["lesion_idx"]
    assert (
        cli_main(
            [
                "retrieve",
                run,
                "--embeddings",
                str(emb),
                "--query-idx",
                str(first),
                "--exclude-self",
                "-k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 3 and f"deeplesion/{first}" not in [h["lesion_id"] for h in result["hits"]]


def test_cli_bad_input_is_one_line(tiny_run: TinyRun, capsys) -> None:
    png = next((tiny_run.phantom / "Images_png").glob("*/*.png"))
    code = cli_main(
        ["predict", str(tiny_run.run), "--png", str(png), "--spacing", "1,1,2.5", "--box", "500,500,520,530"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "outside" in err
    code = cli_main(["predict", str(tiny_run.run), "--png", str(png), "--spacing", "1,1,2.5", "--box", "3,4"])
    assert code == 1 and "x1,y1,x2,y2" in capsys.readouterr().err


def test_ablation_reuses_finished_runs(tiny_run: TinyRun, predictor, tmp_path: Path, shipped_ontology) -> None:
    from vision.experiments.ablate import VARIANTS, run_ablation

    assert [v.name for v in VARIANTS][:2] == ["baseline", "LesaNet"]
    shutil.copytree(tiny_run.run, tmp_path / "lesanet")
    (tmp_path / "lesanet" / "thresholds.json").unlink(missing_ok=True)
    outcome = run_ablation(
        _tiny_config(),
        tiny_run.cache,
        tmp_path,
        variants=["LesaNet"],
        epochs=1,
        onto=shipped_ontology,
        progress=False,
        resume=True,
    )
    assert "| LesaNet |" in outcome.markdown
    assert (tmp_path / "table1.csv").is_file() and (tmp_path / "lesanet" / "thresholds.json").is_file()


# --------------------------------------------------------------------------- volumes (NIfTI, DICOM)


def _phantom_series(tiny_run: TinyRun, lesion_idx: int):
    """The HU slices of a lesion's series (file order), the key slice's position in them, the lesion."""
    from vision.data.deeplesion import read_dl_info, read_slice_hu

    lesion = read_dl_info(tiny_run.phantom / "DL_info.csv").lesions[lesion_idx]
    folder = tiny_run.phantom / "Images_png" / lesion.series_dir
    numbers = sorted(int(p.stem) for p in folder.glob("*.png"))
    slices = np.stack([read_slice_hu(folder / f"{n:03d}.png") for n in numbers])
    return slices, numbers.index(lesion.key_slice), lesion


def _spacing(lesion) -> tuple[float, float, float]:
    """A lesion's voxel spacing (x, y, z mm) as plain floats."""
    x, y, z = (float(v) for v in lesion.spacing_mm)
    return x, y, z


def _write_nifti(path: Path, slices: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    """The displayed slices stored the RAS+ way (i to the patient's right, j anterior, k up)."""
    import nibabel as nib

    data = np.transpose(slices[::-1][:, ::-1, ::-1], (2, 1, 0)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


def _write_dicom_series(folder: Path, slices: np.ndarray, spacing: tuple[float, float, float], uid: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(f"{uid}.{i + 1}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = uid, "CT"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 100.0 - i * spacing[2]]  # superior first, like the files
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.Rows, ds.Columns = image.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = image.astype(np.int16).tobytes()
        ds.save_as(str(folder / f"{uid}-{i:03d}.dcm"), enforce_file_format=True)


def _ras_file_lesion(slices: np.ndarray, key: int, box) -> tuple[int, tuple[float, float, float, float]]:
    """A displayed key slice and box in the file voxel indices of _write_nifti's RAS+ storage
    (lesions are given in the file's own indices, issue 10)."""
    z, rows, cols = slices.shape
    x1, y1, x2, y2 = box
    return z - 1 - key, (cols - 1 - x2, rows - 1 - y2, cols - 1 - x1, rows - 1 - y1)


def test_nifti_and_dicom_score_like_the_png_path(tiny_run: TinyRun, predictor, tmp_path: Path) -> None:
    from vision.data.inputs import png_inputs
    from vision.data.locate import VoxelBox, image_inputs
    from vision.engines.infer import predict_inputs

    slices, key, lesion = _phantom_series(tiny_run, 0)
    spacing = _spacing(lesion)
    png = lesion.slice_path(tiny_run.phantom / "Images_png", lesion.key_slice)
    by_png = predict_inputs(predictor, png_inputs(png, ",".join(map(str, spacing)), [lesion.box]))
    nifti = _write_nifti(tmp_path / "ct.nii.gz", slices, spacing)
    file_slice, file_box = _ras_file_lesion(slices, key, lesion.box)
    by_nifti = predict_inputs(predictor, image_inputs(nifti, [VoxelBox(file_slice, file_box)]))
    assert np.array_equal(np.asarray(by_nifti.patches), np.asarray(by_png.patches))
    assert np.allclose(by_nifti.scored.probs, by_png.scored.probs, atol=1e-6)
    assert by_nifti.records[0]["source"]["spacing_mm"] == pytest.approx(list(spacing), abs=1e-5)
    _write_dicom_series(tmp_path / "dicom", slices, spacing, "1.2.826.0.1.3680043.8.498.1")
    # ITK's series order runs along the slice normal (feet to head here): file slice = Z - 1 - display
    by_dicom = predict_inputs(
        predictor, image_inputs(tmp_path / "dicom", [VoxelBox(len(slices) - 1 - key, lesion.box)])
    )
    assert np.allclose(by_dicom.scored.probs, by_png.scored.probs, atol=1e-6)
    assert by_dicom.records[0]["source"]["sop_instance_uid"] == f"1.2.826.0.1.3680043.8.498.1.{key + 1}"


def test_volume_inputs_refuse_bad_input(tiny_run: TinyRun, tmp_path: Path) -> None:
    from vision.data.inputs import PredictError
    from vision.data.locate import VoxelBox, image_inputs

    def nifti_inputs(path, boxes):
        return image_inputs(path, [VoxelBox(k, box) for k, box in boxes])

    def dicom_inputs(path, boxes, series=None):
        return image_inputs(path, [VoxelBox(k, box) for k, box in boxes], series=series)

    slices, key, lesion = _phantom_series(tiny_run, 0)
    spacing = _spacing(lesion)
    nifti = _write_nifti(tmp_path / "ct.nii", slices, spacing)
    z = len(slices)
    with pytest.raises(PredictError, match=rf"slice {z} is out of range \(the volume has slices 0..{z - 1}\)"):
        nifti_inputs(nifti, [(z, lesion.box)])
    with pytest.raises(PredictError, match="outside"):
        nifti_inputs(nifti, [(key, (10.0, 10.0, 400.0, 30.0))])
    import nibabel as nib

    flat = nib.Nifti1Image(slices.astype(np.int16), None)
    flat.header["pixdim"][1:4] = 0  # no spacing: nibabel alone would read 1 mm
    nib.save(flat, str(tmp_path / "flat.nii"))
    with pytest.raises(PredictError, match="flat.nii: the header has no voxel spacing"):
        nifti_inputs(tmp_path / "flat.nii", [(key, lesion.box)])
    _write_dicom_series(tmp_path / "two", slices, spacing, "1.2.3.1")
    _write_dicom_series(tmp_path / "two", slices, spacing, "1.2.3.2")
    with pytest.raises(PredictError, match=r"2 series \(1\.2\.3\.1, 1\.2\.3\.2.*--series UID"):
        dicom_inputs(tmp_path / "two", [(key, lesion.box)])
    assert len(dicom_inputs(tmp_path / "two", [(key, lesion.box)], series="1.2.3.2")) == 1


def test_cli_predict_volume_with_boxes_file_and_patch_png(tiny_run: TinyRun, predictor, tmp_path: Path, capsys) -> None:
    slices, key, lesion = _phantom_series(tiny_run, 0)
    nifti = _write_nifti(tmp_path / "ct.nii.gz", slices, _spacing(lesion))
    file_slice, file_box = _ras_file_lesion(slices, key, lesion.box)
    boxes = tmp_path / "boxes.txt"
    boxes.write_text(
        "# slice, x1, y1, x2, y2\n"
        + f"{file_slice}, "
        + ", ".join(f"{v:g}" for v in file_box)
        + "\n"
        + f"{file_slice}, 100, 100, 120, 118\n"
    )
    code = cli_main(
        [
            "predict",
            str(tiny_run.run),
            "--nifti",
            str(nifti),
            "--boxes",
            str(boxes),
            "--jsonl",
            "--patch-png",
            str(tmp_path / "patches.png"),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 2 and (tmp_path / "patches.png").is_file()
    assert json.loads(lines[1])["source"]["box_px"] == [100.0, 100.0, 120.0, 118.0]
    assert cli_main(["predict", str(tiny_run.run), "--nifti", str(nifti), "--slice", str(key)]) == 1
    assert "--box" in capsys.readouterr().err
    boxes.write_text(f"{key}, 1, 2, 3\n")
    assert cli_main(["predict", str(tiny_run.run), "--nifti", str(nifti), "--boxes", str(boxes)]) == 1
    assert "boxes.txt:1:" in capsys.readouterr().err
    assert cli_main(["ablate", "--config", "x", "--data", "y", "-o", str(tmp_path / "a"), "--list"]) == 0
    assert "w/o RHEM" in capsys.readouterr().out


def test_stale_thresholds_are_refused_until_recalibrated(tiny_run: TinyRun, predictor, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    doc = json.loads((run / "thresholds.json").read_text())
    doc["checkpoint_sha256"] = "0" * 64  # as after retraining the run
    (run / "thresholds.json").write_text(json.dumps(doc))
    args = ["evaluate", str(run), "--data", str(tiny_run.cache), "--split", "val", "--format", "csv"]
    assert cli_main(args) == 1
    assert "another checkpoint" in capsys.readouterr().err
    assert cli_main([*args, "--calibrate"]) == 0
    assert capsys.readouterr().out.startswith("set,index,label,")
    assert json.loads((run / "thresholds.json").read_text())["checkpoint_sha256"] == predictor.info.checkpoint_sha256


# --------------------------------------------------------------------------- one bad lesion never sinks the others


def test_cli_predict_several_lesions_one_bad_the_others_predicted(
    tiny_run: TinyRun, predictor, tmp_path: Path, capsys
) -> None:
    run, phantom = str(tiny_run.run), str(tiny_run.phantom)
    code = cli_main(["predict", run, "--deeplesion", phantom, "--lesion", "0", "1", "100000", "2", "3", "--jsonl"])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 3 and [r["lesion_id"] for r in records] == [f"deeplesion/{i}" for i in (0, 1, 2, 3)]
    assert "lesion 100000 is not a row" in captured.err and "1 of 5 lesions failed" in captured.err
    code = cli_main(["predict", run, "--deeplesion", phantom, "--lesion", "100000", "100001", "--jsonl"])
    assert code == 1 and "none of the 2 lesions could be predicted" in capsys.readouterr().err


def test_cli_predict_boxes_file_with_bad_lines(tiny_run: TinyRun, predictor, tmp_path: Path, capsys) -> None:
    slices, key, lesion = _phantom_series(tiny_run, 0)
    nifti = _write_nifti(tmp_path / "ct.nii.gz", slices, _spacing(lesion))
    file_slice, file_box = _ras_file_lesion(slices, key, lesion.box)
    good = f"{file_slice}, " + ", ".join(f"{v:g}" for v in file_box)
    bad_lines = [
        f"{file_slice}, 1, 2, 3",
        "x, 1, 2, 3, 4",
        f"{file_slice}, nan, 1, 5, 5",
        f"{file_slice}, -5, 1, 5, 5",
        f"{file_slice}, 9000, 9000, 9010, 9010",
        "100000, 1, 1, 5, 5",
        "1" * 5000 + ", 1, 1, 5, 5",
    ]
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("\n".join([good, *bad_lines, good]) + "\n")
    code = cli_main(["predict", str(tiny_run.run), "--nifti", str(nifti), "--boxes", str(boxes), "--jsonl"])
    captured = capsys.readouterr()
    assert code == 3 and len(captured.out.splitlines()) == 2
    for number in range(2, 2 + len(bad_lines)):
        assert f"boxes.txt:{number}:" in captured.err
    assert (
        "Traceback" not in captured.err and f"{len(bad_lines)} of {len(bad_lines) + 2} lesions failed" in captured.err
    )
    code = cli_main(
        ["predict", str(tiny_run.run), "--nifti", str(nifti), "--boxes", str(boxes), "--jsonl", "--max-messages", "2"]
    )
    captured = capsys.readouterr()
    assert code == 3 and captured.err.count("boxes.txt:") == 2
    assert f"and {len(bad_lines) - 2} more failed lesions or rows" in captured.err
    png = next((tiny_run.phantom / "Images_png").glob("*/*.png"))
    boxes.write_text("3, 10, 10, 30, 30\n3, 500, 500, 520, 530\n")
    code = cli_main(
        ["predict", str(tiny_run.run), "--png", str(png), "--spacing", "1,1,2.5", "--boxes", str(boxes), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 3 and len(json.loads(captured.out)) == 1 and "box 2" in captured.err and "outside" in captured.err


def test_cli_negative_box_is_read_as_a_value_and_refused(tiny_run: TinyRun, capsys) -> None:
    png = next((tiny_run.phantom / "Images_png").glob("*/*.png"))
    code = cli_main(["predict", str(tiny_run.run), "--png", str(png), "--spacing", "1,1,2.5", "--box", "-5,10,20,30"])
    err = capsys.readouterr().err
    assert code == 1 and "negative coordinate" in err and err.count("\n") == 1
