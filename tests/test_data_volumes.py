"""NIfTI and DICOM volumes: HU, orientation and spacing read from the files (vision.data.volumes)."""

from __future__ import annotations

import numpy as np
import pytest

from vision.data.deeplesion import DataError
from vision.data.preprocess import lesion_patch
from vision.data.volumes import read_volume

Z, ROWS, COLS = 5, 40, 50
SPACING = (0.7, 0.8, 2.5)


@pytest.fixture()
def displayed() -> np.ndarray:
    """HU slices as displayed: superior first, anterior up, patient's right on the left."""
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 2000, size=(Z, ROWS, COLS)).astype(np.float32)


@pytest.mark.parametrize("lps", [False, True])
def test_nifti_orientation_hu_and_spacing(tmp_path, displayed, lps):
    import nibabel as nib

    ras = np.transpose(displayed[::-1, ::-1, ::-1], (2, 1, 0))  # (i: to right, j: to anterior, k: up)
    affine = np.diag([*SPACING, 1.0])
    data = ras
    if lps:  # the same image stored with i, j reversed (common from DICOM converters)
        data = ras[::-1, ::-1, :]
        affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    image = nib.Nifti1Image(data.astype(np.int16), affine)
    path = tmp_path / "ct.nii.gz"
    nib.save(image, path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.hu, displayed)
    assert volume.spacing_mm == pytest.approx(SPACING)


def _write_dicom(folder, displayed, uid="1.2.3.4"):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    folder.mkdir()
    for k in reversed(range(Z)):  # written in scrambled order on purpose
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{uid}.{k + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.Modality = "CT"
        ds.ImagePositionPatient = [0.0, 0.0, 100.0 - k * SPACING[2]]  # k = 0 is superior
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing, column spacing
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (displayed[k] + 1024).astype(np.int16).tobytes()
        pydicom.dcmwrite(folder / f"img{(k * 7) % Z}.dcm", ds, enforce_file_format=True)
    (folder / "notes.txt").write_text("not dicom")


def test_dicom_series_orientation_hu_and_spacing(tmp_path, displayed):
    _write_dicom(tmp_path / "series", displayed)
    volume = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(volume.hu, displayed)
    assert volume.spacing_mm == pytest.approx(SPACING)
    # a lesion given as slice index + box goes through the same preprocessing
    patch, box = lesion_patch(volume.provider(), 2, [20, 15, 30, 25], volume.spacing_mm[:2], volume.spacing_mm[2])
    direct, _ = lesion_patch({k: displayed[k] for k in range(Z)}.get, 2, [20, 15, 30, 25], SPACING[:2], SPACING[2])
    np.testing.assert_array_equal(patch, direct)


def test_bad_volume_inputs_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM image series"):
        read_volume(tmp_path / "empty")
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match="unreadable NIfTI"):
        read_volume(bad)
    # MetaImage is read now (vision.data.volumes reads every ITK CT format); a missing one is named
    with pytest.raises(DataError, match="scan.mha: no such file"):
        read_volume(tmp_path / "scan.mha")
