"""Real-CT inputs (issue 10): every format and storage order gives the same patch.

One synthetic CT (air, a body, a bright sphere and a smaller, brighter one at known
world positions) is defined on the internal axial frame, then written through SimpleITK
in several storage orders (LPS, RAS, LAS, superior-first, decubitus; DICOM prone with
ImageOrientationPatient [-1,0,0,0,-1,0]) as NIfTI, NRRD, MetaImage, a DICOM series and a
single DICOM file. For every writing and every way of giving the lesion (file voxel box,
world box, mask) the patch must equal the patch cut from the reference volume directly,
with the sphere at its centre.
"""

from __future__ import annotations

import json
import locale
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import SimpleITK as sitk
else:
    sitk = pytest.importorskip("SimpleITK")

from cli import main as cli_main  # noqa: E402
from vision.data.deeplesion import DataError  # noqa: E402
from vision.data.inputs import PredictError, input_patches  # noqa: E402
from vision.data.locate import MaskLesions, VoxelBox, WorldBox, WorldPoint, image_inputs  # noqa: E402
from vision.data.preprocess import lesion_patch  # noqa: E402
from vision.data.volumes import read_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (60, 50, 16)  # internal x (to the patient's left), y (posterior), z (from superior down)
SPACING = (0.8, 0.9, 2.0)
ORIGIN = (-20.0, -30.0, 40.0)  # LPS mm of internal voxel (0, 0, 0): the most superior slice
BIG = ((30, 24, 8), 7.0, 300)  # internal voxel of the centre, radius mm, HU
SMALL = ((48, 12, 4), 3.5, 700)
WINDOW_300 = round((300 + 1024) * 255 / 4095)  # the sphere's grey level in the patch


def _reference() -> sitk.Image:
    image = sitk.Image(list(SIZE), sitk.sitkInt16)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # LPI: the internal frame
    z, y, x = np.mgrid[: SIZE[2], : SIZE[1], : SIZE[0]]
    world = [ORIGIN[0] + x * SPACING[0], ORIGIN[1] + y * SPACING[1], ORIGIN[2] - z * SPACING[2]]
    centre = [ORIGIN[0] + SIZE[0] * SPACING[0] / 2, ORIGIN[1] + SIZE[1] * SPACING[1] / 2]
    body = ((world[0] - centre[0]) / 22) ** 2 + ((world[1] - centre[1]) / 20) ** 2 < 1
    hu = np.where(body, 40, -1000).astype(np.int16)
    for voxel, radius, value in (BIG, SMALL):
        c = _world_of(voxel)
        hu[(world[0] - c[0]) ** 2 + (world[1] - c[1]) ** 2 + (world[2] - c[2]) ** 2 <= radius**2] = value
    out = sitk.GetImageFromArray(hu)
    out.CopyInformation(image)
    return out


def _world_of(voxel) -> np.ndarray:
    x, y, z = voxel
    return np.array([ORIGIN[0] + x * SPACING[0], ORIGIN[1] + y * SPACING[1], ORIGIN[2] - z * SPACING[2]])


def _labels(reference: sitk.Image) -> sitk.Image:
    hu = sitk.GetArrayFromImage(reference)
    labels = np.zeros(hu.shape, np.uint8)
    labels[hu == BIG[2]] = 1
    labels[hu == SMALL[2]] = 2
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(reference)
    return out


@pytest.fixture(scope="module")
def reference_patch() -> np.ndarray:
    hu = sitk.GetArrayFromImage(_reference()).astype(np.float32)
    (x, y, z), radius, _ = BIG
    box = (x - radius / SPACING[0], y - radius / SPACING[1], x + radius / SPACING[0], y + radius / SPACING[1])
    patch, _ = lesion_patch(lambda n: hu[n] if 0 <= n < len(hu) else None, z, box, SPACING[:2], SPACING[2])
    assert patch[1, 60, 60] == WINDOW_300 and patch[1, 5, 5] != WINDOW_300
    return patch


def _write_dicom(image: sitk.Image, folder: Path, uid: str, slices=None, modality: str = "CT") -> list[str]:
    """A DICOM CT series through SimpleITK's GDCM writer, one file a slice (HU = stored - 1024)."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    iop = "\\".join(f"{v:g}" for v in [*direction[:, 0], *direction[:, 1]])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uids: list[str] = []
    # GDCM's writer leaves the process in the "C" locale (ASCII file encoding for the rest of
    # the test session); put the caller's locale back.
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(image, folder, uid, slices, modality, iop, writer, uids)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    return uids


def _write_dicom_slices(image, folder, uid, slices, modality, iop, writer, uids) -> None:
    for k in slices if slices is not None else range(image.GetDepth()):
        plane = image[:, :, k]
        sop = f"{uid}.{k + 1}"
        for tag, value in (
            ("0008|0060", modality),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
            ("0008|0018", sop),
            ("0020|000d", f"{uid}.0"),
            ("0020|000e", uid),
            ("0020|0052", f"{uid}.9"),
            ("0010|0020", "PHANTOM-1"),
            ("0020|0037", iop),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0028|1052", "-1024"),
            ("0028|1053", "1"),
        ):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{(k * 7) % 100:03d}-{k}.dcm"))  # names not in slice order
        writer.Execute(plane)
        uids.append(sop)


@dataclass(frozen=True)
class Writing:
    path: Path
    image: sitk.Image  # the written geometry (file index = this image's index)
    mask: Path | None
    uids: list[str] | None = None


# ITK orientation codes: the direction each file axis runs to (i, j, k)
FILE_ORDERS = {"LPS": "LPS", "RAS": "RAS", "LAS": "LAS", "superior-first": "LPI", "decubitus": "ALS"}
DICOM_ORDERS = {"LPS": "LPS", "prone": "RAS", "decubitus": "ALS"}  # prone: IOP [-1,0,0,0,-1,0]
WRITINGS = (
    [(fmt, order) for fmt in ("nii.gz", "nrrd", "mha") for order in FILE_ORDERS]
    + [("dicom", order) for order in DICOM_ORDERS]
    + [("dcm", "LPS"), ("dcm", "prone")]
)


def _write(tmp: Path, fmt: str, order: str) -> Writing:
    code = (DICOM_ORDERS if fmt in ("dicom", "dcm") else FILE_ORDERS)[order]
    image = sitk.DICOMOrient(_reference(), code)
    mask = sitk.DICOMOrient(_labels(_reference()), code)
    if fmt == "dicom":
        uids = _write_dicom(image, tmp / "series", "1.2.826.0.1.3680043.8.498.77")
        sitk.WriteImage(mask, str(tmp / "mask.nrrd"))
        if order == "prone":
            assert "-1\\0\\0\\0\\-1\\0" in Path(next((tmp / "series").iterdir())).read_bytes().decode("latin-1")
        return Writing(tmp / "series", image, tmp / "mask.nrrd", uids)
    if fmt == "dcm":  # one DICOM file: the key slice only
        k = int(round(image.TransformPhysicalPointToContinuousIndex(tuple(_world_of(BIG[0])))[2]))
        uids = _write_dicom(image, tmp / "one", "1.2.826.0.1.3680043.8.498.78", slices=[k])
        return Writing(next((tmp / "one").iterdir()), image[:, :, k : k + 1], None, uids)
    path = tmp / f"ct.{fmt}"
    sitk.WriteImage(image, str(path))
    sitk.WriteImage(mask, str(tmp / f"mask.{fmt}"))
    return Writing(path, image, tmp / f"mask.{fmt}")


def _file_lesion(image: sitk.Image) -> tuple[int, tuple[float, float, float, float]]:
    """The big sphere's key slice and box in the written file's own voxel indices."""
    i, j, k = image.TransformPhysicalPointToContinuousIndex(tuple(_world_of(BIG[0])))
    ri, rj = BIG[1] / image.GetSpacing()[0], BIG[1] / image.GetSpacing()[1]
    return int(round(k)), (i - ri, j - rj, i + ri, j + rj)


@pytest.mark.parametrize("fmt, order", WRITINGS, ids=[f"{f}-{o}" for f, o in WRITINGS])
def test_every_writing_and_lesion_form_gives_the_reference_patch(tmp_path, reference_patch, fmt, order):
    writing = _write(tmp_path, fmt, order)
    centre = _world_of(BIG[0])
    radius = BIG[1]
    file_slice, file_box = _file_lesion(writing.image)
    forms = {
        "voxel": VoxelBox(file_slice, file_box),
        "world box": WorldBox(tuple(centre - radius), tuple(centre + radius)),
        "world box RAS": WorldBox(tuple(centre * [-1, -1, 1] - radius), tuple(centre * [-1, -1, 1] + radius), "RAS"),
        "world point": WorldPoint(tuple(centre), 2 * radius),
    }
    if writing.mask is not None:
        forms["mask"] = MaskLesions(str(writing.mask))
    single = fmt == "dcm"
    for name, location in forms.items():
        warnings: list[str] = []
        inputs = image_inputs(writing.path, [location], warn=warnings.append)
        assert len(inputs) == (2 if name == "mask" else 1), name
        patches, _ = input_patches(inputs, warnings.append)
        patch = patches[0]
        if single:  # no neighbours: every channel is the key slice
            assert np.array_equal(patch[1], reference_patch[1]), name
            assert np.array_equal(patch[0], patch[1]) and np.array_equal(patch[2], patch[1])
        else:
            assert np.abs(patch.astype(int) - reference_patch).max() <= 1, name
        assert patch[1, 60, 60] == WINDOW_300, f"{name}: sphere not at the patch centre"
        source = inputs[0].source
        assert source["slice"] == file_slice, name
        box = source["box_px"]  # file voxel indices, centred on the sphere whatever the form
        assert (box[0] + box[2]) / 2 == pytest.approx((file_box[0] + file_box[2]) / 2, abs=1e-3), name
        assert (box[1] + box[3]) / 2 == pytest.approx((file_box[1] + file_box[3]) / 2, abs=1e-3), name
        assert source["center_mm"] == pytest.approx(list(centre), abs=1e-2), name
        if writing.uids:
            assert source["sop_instance_uid"] == writing.uids[file_slice if not single else 0]
        if name == "mask":
            small = inputs[1]
            assert small.source["center_mm"] == pytest.approx(list(_world_of(SMALL[0])), abs=1e-2)
            assert inputs[0].source["location"]["voxels"] > small.source["location"]["voxels"] > 0


def test_dicom_series_keeps_its_metadata(tmp_path):
    image = sitk.DICOMOrient(_reference(), "RAS")
    uids = _write_dicom(image, tmp_path / "series", "1.2.826.0.1.3680043.8.498.79")
    volume = read_volume(tmp_path / "series")
    assert volume.format == "dicom" and volume.modality == "CT"
    assert volume.dicom.get("SeriesInstanceUID") == "1.2.826.0.1.3680043.8.498.79"
    assert volume.dicom.get("StudyInstanceUID") == "1.2.826.0.1.3680043.8.498.79.0"
    assert volume.dicom.get("FrameOfReferenceUID") == "1.2.826.0.1.3680043.8.498.79.9"
    assert volume.dicom.get("PatientID") == "PHANTOM-1"
    assert list(volume.dicom.sop_instance_uids) == uids  # file slice k -> its SOP Instance UID
    # prone storage is shown the radiological way: the reference array exactly
    assert np.array_equal(volume.hu, sitk.GetArrayFromImage(_reference()))


def test_oblique_volume_is_resampled_to_axial(tmp_path, reference_patch):
    reference = _reference()
    tilt = np.radians(12.0)  # about the left-right axis, like a gantry tilt
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    direction = rotation @ np.diag([1.0, 1.0, -1.0])
    oblique = sitk.Image(reference.GetSize(), sitk.sitkInt16)
    oblique.SetSpacing(SPACING)
    oblique.SetDirection(tuple(direction.flatten()))
    centre_index = np.array(reference.GetSize()) / 2
    world_centre = np.array(reference.TransformContinuousIndexToPhysicalPoint(tuple(centre_index)))
    oblique.SetOrigin(tuple(world_centre - direction @ (centre_index * SPACING)))
    oblique = sitk.Resample(reference, oblique, sitk.Transform(), sitk.sitkLinear, -1000, sitk.sitkInt16)
    sitk.WriteImage(oblique, str(tmp_path / "oblique.nii.gz"))
    warnings: list[str] = []
    centre = _world_of(BIG[0])
    inputs = image_inputs(
        tmp_path / "oblique.nii.gz", [WorldBox(tuple(centre - 7), tuple(centre + 7))], warn=warnings.append
    )
    assert any("oblique (12.0°" in w and "resampled to axial" in w for w in warnings)
    assert inputs[0].source["resampled_axial"]["oblique_degrees"] == pytest.approx(12.0, abs=0.01)
    patches, _ = input_patches(inputs, warnings.append)
    # two linear resamplings: the sphere is still centred and the patch close to the reference
    assert patches[0][1, 60, 60] == WINDOW_300
    assert np.abs(patches[0].astype(int) - reference_patch).mean() < 2.0


def test_ct_small_from_pydicom_reads_as_its_header_says():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    volume = read_volume(path)
    assert volume.num_slices == 1 and volume.hu.shape[1:] == hu.shape
    assert volume.hu.min() == hu.min() and volume.hu.max() == hu.max()
    assert volume.spacing_mm[:2] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert volume.dicom.get("SeriesInstanceUID") == ds.SeriesInstanceUID
    assert volume.sop_instance_uid(0) == ds.SOPInstanceUID
    inputs = image_inputs(path, [VoxelBox(0, (50.0, 60.0, 70.0, 80.0))])
    patches, boxes = input_patches(inputs, lambda message: None)
    assert patches.shape == (1, 3, 120, 120) and patches.std() > 1
    assert inputs[0].source["sop_instance_uid"] == ds.SOPInstanceUID


def _save(array: np.ndarray, path: Path, spacing=SPACING) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_values_that_are_not_hu_are_refused(tmp_path):
    ct = sitk.GetArrayFromImage(_reference()).astype(np.float32)
    with pytest.raises(DataError, match=r"mr.nii.gz: values 0..1500 do not look like HU: no air"):
        read_volume(_save(np.linspace(0, 1500, ct.size, dtype=np.float32).reshape(ct.shape), tmp_path / "mr.nii.gz"))
    with pytest.raises(DataError, match=r"raw.nrrd: values 24..1724 do not look like HU.*rescale not applied"):
        read_volume(_save((ct + 1024).astype(np.int16), tmp_path / "raw.nrrd"))
    with pytest.raises(DataError, match="every voxel is -1000"):
        read_volume(_save(np.full(ct.shape, -1000, np.int16), tmp_path / "flat.mha"))
    nan = ct.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(DataError, match="1 voxels are NaN"):
        read_volume(_save(nan, tmp_path / "nan.mha"))  # (ITK reads NaN in NIfTI as 0)
    assert read_volume(_save((ct + 1024).astype(np.int16), tmp_path / "raw.nrrd"), force=True).hu.min() == 24


def test_missing_spacing_and_bad_dicom_series_are_refused(tmp_path):
    ct = sitk.GetArrayFromImage(_reference()).astype(np.int16)
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nsizes: {SIZE[0]} {SIZE[1]} {SIZE[2]}\nendian: little\nencoding: raw\n\n"
    )
    (tmp_path / "nospacing.nrrd").write_bytes(header.encode() + ct.tobytes())
    with pytest.raises(DataError, match="nospacing.nrrd: the header has no voxel spacing"):
        read_volume(tmp_path / "nospacing.nrrd")
    image = sitk.DICOMOrient(_reference(), "LPS")
    _write_dicom(image, tmp_path / "gap", "1.2.3.40", slices=[k for k in range(SIZE[2]) if k != 7])
    with pytest.raises(DataError, match="not evenly spaced .*missing slices"):
        read_volume(tmp_path / "gap")
    folder = tmp_path / "tilt"
    _write_dicom(image, folder, "1.2.3.41")
    import pydicom  # shift each slice's position in y: a gantry-tilted acquisition

    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [
            ds.ImagePositionPatient[0],
            ds.ImagePositionPatient[1] + 0.4 * ds.InstanceNumber,
            ds.ImagePositionPatient[2],
        ]
        ds.save_as(path)
    with pytest.raises(DataError, match="gantry tilt"):
        read_volume(folder)
    ct_mr = tmp_path / "mr.dcm"
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "MR"
    ds.save_as(ct_mr)
    with pytest.raises(DataError, match="mr.dcm: DICOM Modality is MR, not CT"):
        read_volume(ct_mr)
    assert read_volume(ct_mr, force=True).modality == "MR"


def test_lesions_outside_the_volume_are_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(_reference(), "RAS"), str(path))
    with pytest.raises(PredictError, match=r"slice 16 is out of range \(the volume has slices 0..15\)"):
        image_inputs(path, [VoxelBox(16, (1, 1, 5, 5))])
    with pytest.raises(PredictError, match="lies outside the 50×60 slice"):
        image_inputs(path, [VoxelBox(3, (50, 10, 61, 20))])
    with pytest.raises(PredictError, match=r"world point \(0, 0, 500\) mm LPS lies outside the volume \(x "):
        image_inputs(path, [WorldPoint((0.0, 0.0, 500.0), 10.0)])
    empty = tmp_path / "empty.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(sitk.Cast(_labels(_reference()) * 0, sitk.sitkUInt8), "RAS"), str(empty))
    with pytest.raises(PredictError, match="the mask is empty"):
        image_inputs(path, [MaskLesions(str(empty))])
    sitk.WriteImage(sitk.DICOMOrient(_labels(_reference()), "RAS"), str(tmp_path / "m.nii.gz"))
    with pytest.raises(PredictError, match=r"no voxel has label 3 \(labels present: \[1, 2\]\)"):
        image_inputs(path, [MaskLesions(str(tmp_path / "m.nii.gz"), 3)])
    other = tmp_path / "other.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(_labels(_reference()), "LPS")[:, :, :8], str(other))
    with pytest.raises(PredictError, match="mask size .* differs from the image"):
        image_inputs(path, [MaskLesions(str(other))])


def test_mask_by_label_and_one_label(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.DICOMOrient(_reference(), "LAS"), str(path))
    labels = sitk.GetArrayFromImage(_labels(_reference()))
    labels[labels == 2] = 1  # both spheres one label value: two components, one label
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(_reference())
    sitk.WriteImage(sitk.DICOMOrient(mask, "LAS"), str(tmp_path / "m.nrrd"))
    assert len(image_inputs(path, [MaskLesions(str(tmp_path / "m.nrrd"))])) == 2
    by_label = image_inputs(path, [MaskLesions(str(tmp_path / "m.nrrd"), by="label")])
    assert len(by_label) == 1 and by_label[0].source["location"]["label"] == 1
    assert len(image_inputs(path, [MaskLesions(str(tmp_path / "m.nrrd"), label=1)])) == 2


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory) -> Path:
    """A run of the tiny config with fresh weights and no thresholds (wiring, not accuracy)."""
    import torch

    from ontology import load_ontology
    from vision.config import apply_overrides, load_config
    from vision.engines.checkpoint import save_checkpoint
    from vision.networks.model import LesaNet

    onto = load_ontology()
    config = apply_overrides(
        load_config(ROOT / "configs" / "cpu-small.yaml"),
        ["model.widths=[4, 8, 8, 16, 16]", "model.roi_fc=16", "model.embed_dim=16"],
    )
    torch.manual_seed(0)
    terms = onto.label_set("lesanet171")
    run = tmp_path_factory.mktemp("fresh") / "run"
    save_checkpoint(run, LesaNet(config.model, len(terms)), config, terms, onto.version, epoch=0)
    return run


@pytest.fixture(scope="module")
def volume_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("volumes")
    sitk.WriteImage(sitk.DICOMOrient(_reference(), "RAS"), str(folder / "ct.nii.gz"))
    sitk.WriteImage(sitk.DICOMOrient(_labels(_reference()), "RAS"), str(folder / "mask.nii.gz"))
    ct = sitk.GetArrayFromImage(_reference())
    _save(np.clip(ct + 1000, 0, None).astype(np.int16), folder / "mr.nii.gz")
    _write_dicom(sitk.DICOMOrient(_reference(), "RAS"), folder / "mr-dicom", "1.2.3.50", modality="MR")
    return folder


def test_cli_predict_volume_forms_and_top(fresh_run, volume_files, capsys):
    run, ct = str(fresh_run), str(volume_files / "ct.nii.gz")
    k, box = _file_lesion(sitk.DICOMOrient(_reference(), "RAS"))
    box_text = ",".join(f"{v:.4f}" for v in box)
    assert cli_main(["predict", run, "--image", ct, "--slice", str(k), "--box", box_text, "--json"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["source"]["slice"] == k and record["source"]["location"]["form"] == "voxel"
    assert "deciding at 0.5" in captured.err  # a run without thresholds says so
    c = _world_of(BIG[0]) * [-1, -1, 1]  # RAS
    assert (
        cli_main(
            ["predict", run, "--nifti", ct, "--world-point", *(f"{v:g}" for v in c), "--size", "14", "--ras", "--json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["source"]["center_mm"] == pytest.approx(
        list(_world_of(BIG[0])), abs=1e-2
    )
    assert cli_main(["predict", run, "--image", ct, "--mask", str(volume_files / "mask.nii.gz"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    blocks = [b for b in out.strip().split("\n\n") if b.strip()]
    assert len(blocks) == 2  # two spheres, two lesions
    for block in blocks:  # header, column names, at most 3 labels (+ a "... more decided" line)
        label_lines = [line for line in block.splitlines()[2:] if not line.strip().startswith("...")]
        assert len(label_lines) == 3


def test_cli_refuses_non_ct_before_loading_the_model(fresh_run, volume_files, capsys):
    run = str(fresh_run)
    assert (
        cli_main(["predict", run, "--image", str(volume_files / "mr.nii.gz"), "--slice", "3", "--box", "10,10,20,20"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mr.nii.gz: values 0..1700 do not look like HU" in err
    assert (
        cli_main(
            ["predict", run, "--image", str(volume_files / "mr-dicom"), "--world-point", "0", "0", "0", "--size", "5"]
        )
        == 1
    )
    assert "DICOM Modality is MR, not CT" in capsys.readouterr().err
    # argument and input errors never import torch (instant): checked in a fresh interpreter
    code = (
        "import sys, cli; rc = cli.main(['predict', 'RUN', '--image', sys.argv[1], '--slice', '3', "
        "'--box', '10,10,20,20']); print(rc, 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(volume_files / "mr.nii.gz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["1", "False"], result.stderr


def test_cli_manifest_predicts_good_rows_and_reports_bad_ones(fresh_run, volume_files, tmp_path, capsys):
    k, box = _file_lesion(sitk.DICOMOrient(_reference(), "RAS"))
    c = _world_of(BIG[0])
    manifest = tmp_path / "lesions.csv"
    ct = volume_files / "ct.nii.gz"
    manifest.write_text(
        "image,lesion_id,slice,box,world_box,world_point,size_mm,mask\n"
        f'{ct},big,{k},"{",".join(f"{v:.3f}" for v in box)}",,,,\n'
        f"{ct},,,,{' '.join(f'{v:g}' for v in [*(c - 7), *(c + 7)])},,,\n"
        f'{ct},outside,3,"500,10,520,20",,,,\n'
        f'{volume_files / "missing.nii.gz"},,3,"1,1,5,5",,,,\n'
        f"{ct},spheres,,,,,,{volume_files / 'mask.nii.gz'}\n"
        f"{ct},,,,,{' '.join(f'{v:g}' for v in c)},14,\n"
    )
    code = cli_main(["predict", str(fresh_run), "--manifest", str(manifest), "--jsonl"])
    captured = capsys.readouterr()
    assert code == 3  # some rows failed, the others predicted
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["lesion_id"] for r in records] == ["big", "nifti/ct/row3", "spheres/1", "spheres/2", "nifti/ct/row7"]
    assert [r["source"]["row"] for r in records] == [2, 3, 6, 6, 7]
    assert all(r["source"]["manifest"] == str(manifest) for r in records)
    errors = [line for line in captured.err.splitlines() if line.startswith("lesanet: error:")]
    assert len(errors) == 2
    assert "lesions.csv, row 4:" in errors[0] and "outside" in errors[0]
    assert "lesions.csv, row 5:" in errors[1] and "missing.nii.gz: no such file" in errors[1]
    # the same lesion given three ways scores the same
    by_row = {r["source"]["row"]: r for r in records}
    scores = [[e["score"] for e in sorted(by_row[n]["labels"], key=lambda e: e["label"])] for n in (2, 3, 7)]
    assert np.allclose(scores[0], scores[1], atol=1e-5) and np.allclose(scores[0], scores[2], atol=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text(f'image,slice,box\n{ct},99,"1,1,5,5"\n')
    assert cli_main(["predict", str(fresh_run), "--manifest", str(bad)]) == 1
    assert "none of its 1 rows could be predicted" in capsys.readouterr().err
    bad.write_text('image,slcie,box\nct.nii.gz,3,"1,1,5,5"\n')
    assert cli_main(["predict", str(fresh_run), "--manifest", str(bad)]) == 1
    assert "unknown column 'slcie'" in capsys.readouterr().err
