"""CT volumes for inference, read with ITK (SimpleITK): NIfTI, NRRD, MetaImage, DICOM.

One reader for every format a PACS, 3D Slicer, ITK or a NIfTI converter writes:
``.nii`` / ``.nii.gz``, ``.nrrd`` / ``.nhdr``, ``.mha`` / ``.mhd``, a DICOM series folder
(several series: choose one by SeriesInstanceUID) or a single DICOM file. ITK applies
RescaleSlope/Intercept (DICOM) and scl_slope/scl_inter (NIfTI), sorts a DICOM series by
position along the slice normal and turns every header into one geometry: origin,
spacing and direction cosines in DICOM's patient frame (LPS: x to the patient's left,
y to posterior, z to superior).

**The internal frame.** Whatever the storage order (LPS, RAS, LAS, flipped axes, prone
or decubitus), :class:`Volume` holds the HU slices ``hu[z, y, x]`` the way DeepLesion's
PNGs show them and LesaNet was trained: x (columns) runs to the patient's left (the
patient's right on the image left), y (rows) to posterior (anterior up), z from the
most superior slice down (ITK orientation code ``LPI``). A volume whose axes lie along
the patient axes is only transposed and flipped (no interpolation); an oblique one
(gantry tilt, angled reformat) whose misalignment would move some voxel by more than
half a voxel is resampled onto an axial grid of the same spacing (linear, air outside),
with a warning. ``Volume.file_from_index`` maps internal indices back to the file's own
voxel indices, ``Volume.world_from_index`` to millimetres (LPS).

Input checks (each a :class:`DataError` naming the file and what to do): a format
that is not a CT volume, missing or non-positive spacing (ITK would silently assume
1 mm), a DICOM Modality other than CT, values that do not look like HU (NaN, one value,
no air: an MR or raw stored values), a DICOM series with uneven or tilted slice steps.
``force=True`` skips the Modality and HU checks, for a crop without air or a CT stored
under another Modality.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.data.deeplesion import DataError

WarningSink = Callable[[str], None]

# the internal frame: x to the patient's left, y to posterior, z to inferior (LPS signs)
INTERNAL_AXES = ((0, 1.0), (1, 1.0), (2, -1.0))  # (LPS world axis, sign) of internal x, y, z
INTERNAL_DIRECTION = np.diag([1.0, 1.0, -1.0])
AIR_HU = -1024.0  # fill value when resampling an oblique volume
# A CT in HU contains air (about -1000 HU: outside the body, lungs, bowel gas); a volume
# whose lowest value is above this holds raw stored values, an MR, or a crop without air.
NO_AIR_ABOVE_HU = -500.0
# the ITK image readers that hold CT volumes, and the name each format goes by
VOLUME_FORMATS = {"NiftiImageIO": "nifti", "NrrdImageIO": "nrrd", "MetaImageIO": "metaimage", "GDCMImageIO": "dicom"}
SUFFIXES = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, .dcm, or a DICOM series folder"
_FORMAT_OF_SUFFIX = (
    (".nii", "NIfTI"),
    (".nii.gz", "NIfTI"),
    (".nrrd", "NRRD"),
    (".nhdr", "NRRD"),
    (".mha", "MetaImage"),
    (".mhd", "MetaImage"),
    (".dcm", "DICOM"),
)

# DICOM attributes kept on the volume (a later step writes DICOM SR from them); ITK tag keys
DICOM_ATTRIBUTES = {
    "StudyInstanceUID": "0020|000d",
    "SeriesInstanceUID": "0020|000e",
    "FrameOfReferenceUID": "0020|0052",
    "SOPClassUID": "0008|0016",
    "Modality": "0008|0060",
    "PatientID": "0010|0020",
    "PatientName": "0010|0010",
    "PatientBirthDate": "0010|0030",
    "PatientSex": "0010|0040",
    "PatientAge": "0010|1010",
    "StudyID": "0020|0010",
    "StudyDate": "0008|0020",
    "StudyTime": "0008|0030",
    "AccessionNumber": "0008|0050",
    "ReferringPhysicianName": "0008|0090",
    "StudyDescription": "0008|1030",
    "SeriesDescription": "0008|103e",
    "SeriesNumber": "0020|0011",
    "Manufacturer": "0008|0070",
    "InstitutionName": "0008|0080",
    "BodyPartExamined": "0018|0015",
    "PatientPosition": "0018|5100",
}
_SOP_INSTANCE_UID, _POSITION, _PIXEL_SPACING = "0008|0018", "0020|0032", "0028|0030"
_ORIENTATION = "0020|0037"  # ImageOrientationPatient: without it ITK silently assumes axial


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM input says about itself: study / series / patient attributes
    (keyword -> value, empty ones left out) and, per file slice k (ITK's series order),
    the SOP Instance UID and the file it came from."""

    attributes: Mapping[str, str]
    sop_instance_uids: tuple[str, ...]
    files: tuple[str, ...]

    def get(self, keyword: str) -> str | None:
        return self.attributes.get(keyword)


@dataclass(frozen=True)
class Grid:
    """An image geometry as ITK has it: size and spacing per index axis, origin (mm, LPS)
    and the direction matrix (columns = world direction of each index axis)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # 3 × 3

    def world_from_index(self) -> np.ndarray:
        """4 × 4: continuous index (i, j, k, 1) -> LPS mm (ITK's index-to-physical map)."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine


@dataclass(frozen=True)
class Reorientation:
    """Internal axis b (x, y, z) is file axis ``file_axis[b]``, reversed where ``flip[b]``."""

    file_axis: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    def apply(self, array_kji: np.ndarray) -> np.ndarray:
        """A file array (numpy order k, j, i) -> the internal array (z, y, x); views only."""
        numpy_axis = [2 - a for a in self.file_axis]  # numpy axis of each internal axis x, y, z
        out = np.transpose(array_kji, (numpy_axis[2], numpy_axis[1], numpy_axis[0]))
        flips = tuple(slice(None, None, -1) if f else slice(None) for f in (self.flip[2], self.flip[1], self.flip[0]))
        return out[flips]

    def file_from_index(self, file_size: Sequence[int]) -> np.ndarray:
        """4 × 4: internal continuous index (x, y, z, 1) -> file continuous index (i, j, k, 1)."""
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for b, (a, f) in enumerate(zip(self.file_axis, self.flip)):
            m[a, b] = -1.0 if f else 1.0
            m[a, 3] = file_size[a] - 1 if f else 0.0
        return m


@dataclass(frozen=True)
class Volume:
    """A CT volume in HU in the internal frame (module docstring) with its geometry."""

    hu: np.ndarray  # float32 (Z, rows, cols): z from superior, y to posterior, x to the patient's left
    spacing_mm: tuple[float, float, float]  # internal x (cols), y (rows), z (slice interval)
    source: str
    format: str  # nifti | nrrd | metaimage | dicom
    world_from_index: np.ndarray  # 4 × 4: internal (x, y, z) -> LPS mm
    file_from_index: np.ndarray  # 4 × 4: internal -> the file's own continuous index (i, j, k)
    file_grid: Grid  # the file's geometry as ITK read it
    reorientation: Reorientation | None  # None when resampled (oblique)
    oblique_degrees: float = 0.0
    modality: str | None = None
    dicom: DicomInfo | None = None

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def resampled(self) -> bool:
        return self.reorientation is None

    @property
    def axial_file_slices(self) -> bool:
        """The file's third axis is the internal z axis: file slice K is one internal slice."""
        return self.reorientation is not None and self.reorientation.file_axis[2] == 2

    def grid(self) -> Grid:
        """The internal grid (for resampling a mask onto it)."""
        z, y, x = self.hu.shape
        linear = self.world_from_index[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        return Grid((x, y, z), _floats3(spacing), _floats3(self.world_from_index[:3, 3]), linear / spacing)

    def provider(self):  # -> vision.data.preprocess.SliceProvider
        """Slice index (0-based, internal z) -> HU image, None outside the volume."""

        def slice_at(n: int) -> np.ndarray | None:
            return self.hu[n] if 0 <= n < self.hu.shape[0] else None

        return slice_at

    # -- coordinates: each takes and returns points as an N × 3 array
    def to_world(self, internal: np.ndarray) -> np.ndarray:
        return _apply(self.world_from_index, internal)

    def from_world(self, world: np.ndarray) -> np.ndarray:
        return _apply(np.linalg.inv(self.world_from_index), world)

    def to_file(self, internal: np.ndarray) -> np.ndarray:
        return _apply(self.file_from_index, internal)

    def from_file(self, file_index: np.ndarray) -> np.ndarray:
        return _apply(np.linalg.inv(self.file_from_index), file_index)

    def sop_instance_uid(self, file_slice: int) -> str | None:
        """The SOP Instance UID of file slice k (DICOM inputs)."""
        if self.dicom is None or not 0 <= file_slice < len(self.dicom.sop_instance_uids):
            return None
        return self.dicom.sop_instance_uids[file_slice] or None


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    return points @ affine[:3, :3].T + affine[:3, 3]


# --------------------------------------------------------------------------- reading


def read_volume(
    path: str | os.PathLike[str],
    series_uid: str | None = None,
    force: bool = False,
    on_warning: WarningSink | None = None,
) -> Volume:
    """A CT volume from a file or a DICOM series folder, in HU, in the internal frame."""
    p = Path(path)
    warn = on_warning or (lambda message: None)
    if p.is_dir():
        image, dicom = _read_dicom_series(p, series_uid, warn)
        fmt = "dicom"
    elif p.is_file():
        image, fmt, dicom = _read_file(p)
    else:
        raise DataError(f"{p}: no such file or folder (give a CT volume: {SUFFIXES})")
    modality = dicom.get("Modality") if dicom else None
    if modality and modality.upper() != "CT" and not force:
        raise DataError(
            f"{p}: DICOM Modality is {modality}, not CT; LesaNet reads CT in HU "
            "(--force if this is a CT stored under another Modality)"
        )
    return _to_volume(image, p, fmt, modality, dicom, force, warn)


def read_label_image(path: str | os.PathLike[str], volume: Volume) -> np.ndarray:
    """A mask / label image (NIfTI, NRRD, MetaImage) on the grid of ``volume``, as integer
    labels in the internal frame (same shape as ``volume.hu``)."""
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such mask file")
    image, _, _ = _read_file(p)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{p}: the mask has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "give a label image (one integer per voxel)"
        )
    grid = _grid(image)
    ref = volume.file_grid
    if grid.size != ref.size:
        raise DataError(
            f"{p}: mask size {list(grid.size)} differs from the image {list(ref.size)} "
            f"({volume.source}); the mask must be on the image's grid"
        )
    tolerance = 0.5 * min(ref.spacing)
    corners = np.array([[0, 0, 0], [s - 1 for s in ref.size]], dtype=float)
    moved = np.abs(_apply(grid.world_from_index(), corners) - _apply(ref.world_from_index(), corners)).max()
    if moved > tolerance:
        raise DataError(
            f"{p}: the mask's geometry (origin, spacing or direction) differs from the image "
            f"{volume.source} by up to {moved:.2f} mm; resample the mask onto the image first"
        )
    values = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise DataError(
                f"{p}: the mask holds non-integer values (a probability map?); "
                "give a label image (0 background, 1..N lesions), e.g. thresholded"
            )
    if volume.reorientation is not None:
        labels = volume.reorientation.apply(values)
    else:  # the image was resampled to axial: resample the labels the same way (nearest label)
        image.CopyInformation(_sitk_reference(ref))
        labels = sitk.GetArrayFromImage(_resample(sitk.Cast(image, sitk.sitkInt32), volume.grid(), 0, nearest=True))
    return np.asarray(labels).astype(np.int64)


def _read_file(path: Path):
    """(ITK image, format name, DicomInfo or None) of one file, with the header checks."""
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's warnings would leak to stderr
    io_name = sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    if not io_name:
        named = next((name for suffix, name in _FORMAT_OF_SUFFIX if path.name.lower().endswith(suffix)), None)
        what = f"unreadable {named} file (its header is broken)" if named else "not a readable CT volume"
        raise DataError(f"{path}: {what}; formats read: {SUFFIXES}")
    fmt = VOLUME_FORMATS.get(io_name)
    if fmt is None:
        raise DataError(
            f"{path}: a {io_name.replace('ImageIO', '')} image, not a CT volume ({SUFFIXES}); "
            "a DeepLesion 16-bit PNG slice goes with --png"
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(io_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: unreadable {fmt} file ({_itk_reason(exc)})") from None
    _check_header_spacing(path, fmt, reader)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read the voxels ({_itk_reason(exc)})") from None
    dicom = None
    if fmt == "dicom":
        dicom = DicomInfo(
            _dicom_attributes(lambda key: reader.GetMetaData(key) if reader.HasMetaDataKey(key) else ""),
            (_clean(reader.GetMetaData(_SOP_INSTANCE_UID)) if reader.HasMetaDataKey(_SOP_INSTANCE_UID) else "",)
            * max(1, image.GetDepth()),
            (str(path),),
        )
    return _as_3d(image, path), fmt, dicom


def _read_dicom_series(folder: Path, series_uid: str | None, warn: WarningSink):
    """(ITK image, DicomInfo) of one series in a folder (searched recursively)."""
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    found: dict[str, int] = {}
    for directory, _, files in os.walk(folder):
        if files:
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory):
                found[uid] = found.get(uid, 0) + 1
    uids = sorted(found)
    if not uids:
        raise DataError(
            f"{folder}: no DICOM image series in this folder; give the folder of one DICOM CT series, or a DICOM file"
        )
    if series_uid is None and len(uids) > 1:
        raise DataError(
            f"{folder}: {len(uids)} series ({', '.join(uids[:3])}{'...' if len(uids) > 3 else ''}); "
            "choose one with --series UID"
        )
    chosen = series_uid or uids[0]
    if chosen not in found:
        raise DataError(f"{folder}: no series {chosen} (series here: {', '.join(uids[:5])})")
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen, False, True)  # recursive
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{folder}: cannot read series {chosen} ({_itk_reason(exc)})") from None

    def meta(k: int, key: str) -> str:
        return _clean(reader.GetMetaData(k, key)) if reader.HasMetaDataKey(k, key) else ""

    if not meta(0, _PIXEL_SPACING):
        raise DataError(f"{folder}: series {chosen} has no PixelSpacing (0028,0030); cannot tell the voxel size")
    if not meta(0, _ORIENTATION):
        raise DataError(
            f"{folder}: series {chosen} has no ImageOrientationPatient (0020,0037); cannot tell "
            "how the slices lie in the patient (a secondary capture? export the original CT series)"
        )
    _check_slice_steps(folder, image, [meta(k, _POSITION) for k in range(len(names))])
    info = DicomInfo(
        _dicom_attributes(lambda key: meta(0, key)),
        tuple(meta(k, _SOP_INSTANCE_UID) for k in range(len(names))),
        tuple(names),
    )
    return image, info


def _check_slice_steps(folder: Path, image, positions: Sequence[str]) -> None:
    """Refuse a series ITK would stack wrongly: uneven steps (missing slices, two
    acquisitions) or steps off the slice normal (gantry tilt, which ITK does not correct)."""
    if len(positions) < 2:
        return
    try:
        points = np.array([[float(v) for v in p.split("\\")] for p in positions])
    except ValueError:
        raise DataError(f"{folder}: a slice lacks ImagePositionPatient (0020,0032)") from None
    direction = np.array(image.GetDirection()).reshape(3, 3)
    normal = direction[:, 2]
    steps = np.diff(points, axis=0)
    along = steps @ normal
    median = float(np.median(along))
    spacing = image.GetSpacing()
    uneven = np.flatnonzero(np.abs(along - median) > 0.1 * abs(median) + 1e-3)
    if abs(median) < 1e-6 or uneven.size:
        k = int(uneven[0]) if uneven.size else 0
        raise DataError(
            f"{folder}: slice positions are not evenly spaced (step {along[k]:.3f} mm after slice {k}, "
            f"median {median:.3f} mm): missing slices or two acquisitions in one series; "
            "give the complete series"
        )
    drift = points[-1] - points[0]
    off_normal = float(np.linalg.norm(drift - (drift @ normal) * normal))
    if off_normal > 0.5 * min(spacing[0], spacing[1]):
        tilt = math.degrees(math.atan2(off_normal, abs(float(drift @ normal))))
        raise DataError(
            f"{folder}: the slices step {tilt:.1f}° off their normal (gantry tilt); refused, "
            "ITK would stack them sheared. Correct the tilt first (e.g. dcm2niix, which does, "
            "or 3D Slicer's DICOM import) and give the NIfTI / NRRD"
        )


def _dicom_attributes(get: Callable[[str], str]) -> dict[str, str]:
    values = {name: _clean(get(tag)) for name, tag in DICOM_ATTRIBUTES.items()}
    return {name: value for name, value in values.items() if value}


def _clean(value: str) -> str:
    return value.strip().rstrip("\x00").strip()


def _itk_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "ERROR" in line), lines[-1] if lines else type(exc).__name__)
    return reason.split("ERROR:", 1)[-1].strip()


# NIfTI header layout (NIfTI-1: 348-byte header; NIfTI-2: 540): offsets and types of dim / pixdim
_NIFTI_LAYOUTS = {348: (40, "h", 76, "f"), 540: (16, "q", 104, "d")}


def _nifti_pixdim(path: Path) -> list[float]:
    """The raw voxel sizes of a NIfTI header (ITK and nibabel both turn 0 into 1 mm).

    Read with ``struct`` from the header bytes: importing nibabel for this costs half a
    second (with pydicom) of every ``predict``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(540)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable NIfTI header ({exc})") from None
    for order in "<>":
        if len(head) >= 4 and (size := struct.unpack(order + "i", head[:4])[0]) in _NIFTI_LAYOUTS:
            dim_at, dim_type, pixdim_at, pixdim_type = _NIFTI_LAYOUTS[size]
            if len(head) < size:
                break
            dims = struct.unpack_from(f"{order}8{dim_type}", head, dim_at)
            pixdim = struct.unpack_from(f"{order}8{pixdim_type}", head, pixdim_at)
            return [float(v) for v in pixdim[1 : 1 + max(0, min(3, int(dims[0])))]]
    raise DataError(
        f"{path}: unreadable NIfTI header (no NIfTI-1 or NIfTI-2 header size); "
        "write the volume with a NIfTI tool (dcm2niix, nibabel, ITK)"
    )


def _check_header_spacing(path: Path, fmt: str, reader) -> None:
    """Refuse a header without voxel sizes: ITK silently assumes 1 mm for NIfTI pixdim 0,
    a NRRD without spacings / space directions, a MetaImage without ElementSpacing and a
    DICOM without PixelSpacing."""
    spacing = tuple(reader.GetSpacing())
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"{path}: spacing {list(spacing)} is not positive; write the file with its voxel size in mm")
    if fmt == "nifti":
        zooms = _nifti_pixdim(path)
        if not all(math.isfinite(z) and z > 0 for z in zooms):
            raise DataError(
                f"{path}: the header has no voxel spacing (pixdim {zooms}); "
                "write the NIfTI with its spacing in mm (e.g. from the DICOM PixelSpacing)"
            )
    elif fmt in ("nrrd", "metaimage"):
        keys = {"nrrd": ("spacings", "space directions"), "metaimage": ("elementspacing", "elementsize")}[fmt]
        header = _text_header(path)
        if not any(key in header for key in keys):
            raise DataError(
                f"{path}: the header has no voxel spacing ({' or '.join(keys)}); write the file with its spacing in mm"
            )
    elif fmt == "dicom" and not (reader.HasMetaDataKey(_PIXEL_SPACING) and _clean(reader.GetMetaData(_PIXEL_SPACING))):
        raise DataError(f"{path}: no PixelSpacing (0028,0030); cannot tell the voxel size")
    elif fmt == "dicom" and not (reader.HasMetaDataKey(_ORIENTATION) and _clean(reader.GetMetaData(_ORIENTATION))):
        raise DataError(
            f"{path}: no ImageOrientationPatient (0020,0037); cannot tell how the slice lies in the "
            "patient (a secondary capture? export the original CT series)"
        )


def _text_header(path: Path) -> set[str]:
    """The field names (lower case) of a NRRD or MetaImage text header."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    names: set[str] = set()
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if not line and names:  # NRRD: a blank line ends the header
            break
        for sep in (":=", ":", "="):
            if sep in line and not line.startswith("#"):
                names.add(line.split(sep, 1)[0].strip().lower())
                break
        if line.lower().startswith("elementdatafile"):
            break
    return names


def _as_3d(image, path: Path):
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel (colour?); "
            "give a greyscale CT volume in HU"
        )
    dim = image.GetDimension()
    if dim == 2:
        return sitk.JoinSeries([image])
    if dim == 4 and image.GetSize()[3] == 1:
        return image[:, :, :, 0]
    if dim != 3:
        raise DataError(f"{path}: a {dim}-D image of size {list(image.GetSize())}; give one 3-D CT volume")
    return image


def _floats3(values: Any) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _grid(image: Any) -> Grid:
    i, j, k = (int(s) for s in image.GetSize())
    return Grid(
        (i, j, k),
        _floats3(image.GetSpacing()),
        _floats3(image.GetOrigin()),
        np.array(image.GetDirection(), dtype=float).reshape(3, 3),
    )


def check_image(values: np.ndarray, source: str | os.PathLike[str]) -> tuple[float, float]:
    """Refuse what is no image at all, even with --force: NaN or infinite voxels, or one
    value everywhere (a model would still give confident labels for it). Returns (min, max)."""
    finite = np.isfinite(values)
    if not finite.all():
        raise DataError(f"{source}: {int((~finite).sum())} voxels are NaN or infinite; give a CT in HU")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise DataError(f"{source}: every voxel is {lo:g}; an empty or blank volume, not a CT image")
    return lo, hi


def check_hu(values: np.ndarray, source: str | os.PathLike[str]) -> None:
    """Refuse values that are not CT Hounsfield units: NaN, one value, or no air."""
    lo, hi = check_image(values, source)
    if lo > NO_AIR_ABOVE_HU:
        raise DataError(
            f"{source}: values {lo:g}..{hi:g} do not look like HU: no air (a CT in HU has about "
            "-1000 outside the body and in the lungs). Raw stored values (rescale not applied) "
            "or an MR? Give a CT in HU (--force for a crop without air)"
        )


def _to_volume(
    image, path: Path, fmt: str, modality: str | None, dicom: DicomInfo | None, force: bool, warn: WarningSink
) -> Volume:
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    grid = _grid(image)
    if not all(math.isfinite(s) and s > 0 for s in grid.spacing):
        raise DataError(f"{path}: spacing {list(grid.spacing)} is not positive; the header lacks voxel sizes")
    values = sitk.GetArrayViewFromImage(image)
    if force:
        check_image(values, path)  # --force accepts odd HU, never NaN or a blank volume
    else:
        check_hu(values, path)
    reorientation, degrees = axis_alignment(grid)
    if reorientation is not None:
        hu = reorientation.apply(values)
        file_from_index = reorientation.file_from_index(grid.size)
        spacing = tuple(grid.spacing[a] for a in reorientation.file_axis)
        world_from_index = grid.world_from_index() @ file_from_index
    else:
        target = axial_grid(grid)
        warn(
            f"{path}: the volume is oblique ({degrees:.1f}° off the patient axes); resampled to axial "
            f"({' × '.join(f'{s:g}' for s in target.spacing)} mm, linear)"
        )
        resampled = _resample(sitk.Cast(image, sitk.sitkFloat32), target, AIR_HU, nearest=False)
        hu = sitk.GetArrayFromImage(resampled)
        world_from_index = target.world_from_index()
        file_from_index = np.linalg.inv(grid.world_from_index()) @ world_from_index
        spacing = target.spacing
    # a copy owned by the volume: the ITK image's buffer goes away with the image
    hu = np.array(hu, dtype=np.float32, copy=True)
    return Volume(
        hu=hu,
        spacing_mm=_floats3(spacing),
        source=str(path),
        format=fmt,
        world_from_index=world_from_index,
        file_from_index=file_from_index,
        file_grid=grid,
        reorientation=reorientation,
        oblique_degrees=degrees,
        modality=modality,
        dicom=dicom,
    )


def axis_alignment(grid: Grid) -> tuple[Reorientation | None, float]:
    """How the file's axes map onto the internal ones, and the largest angle (degrees) of a
    file axis off its patient axis. ``None`` when that angle would move some voxel by more
    than half the smallest voxel size over the volume (then the volume is resampled)."""
    direction = grid.direction / np.linalg.norm(grid.direction, axis=0)
    world_of = [int(np.argmax(np.abs(direction[:, a]))) for a in range(3)]
    cosines = [abs(float(direction[world_of[a], a])) for a in range(3)]
    angles = [math.acos(min(1.0, c)) for c in cosines]
    degrees = math.degrees(max(angles))
    extents = [(n - 1) * s for n, s in zip(grid.size, grid.spacing)]
    moved = max(math.sin(angle) * extent for angle, extent in zip(angles, extents))
    if len(set(world_of)) != 3 or moved > 0.5 * min(grid.spacing):
        return None, degrees
    file_axis, flip = [], []
    for world_axis, sign in INTERNAL_AXES:
        a = world_of.index(world_axis)
        file_axis.append(a)
        flip.append(bool(np.sign(direction[world_axis, a]) != sign))
    return Reorientation(tuple(file_axis), tuple(flip)), degrees  # type: ignore[arg-type]


def axial_grid(grid: Grid) -> Grid:
    """The internal-frame grid that covers an oblique volume, with the spacing of the file
    axis nearest each patient axis."""
    direction = grid.direction / np.linalg.norm(grid.direction, axis=0)
    spacing = []
    for world_axis, _ in INTERNAL_AXES:
        spacing.append(grid.spacing[int(np.argmax(np.abs(direction[world_axis, :])))])
    corners = np.array(
        [[i, j, k] for i in (0, grid.size[0] - 1) for j in (0, grid.size[1] - 1) for k in (0, grid.size[2] - 1)],
        dtype=float,
    )
    world = _apply(grid.world_from_index(), corners)
    in_axes = world @ INTERNAL_DIRECTION  # coordinates along the internal axes
    lo, hi = in_axes.min(axis=0), in_axes.max(axis=0)
    size = tuple(int(math.floor((h - l) / s + 1e-6)) + 1 for l, h, s in zip(lo, hi, spacing))
    origin = INTERNAL_DIRECTION @ lo
    return Grid(size, tuple(spacing), tuple(float(v) for v in origin), INTERNAL_DIRECTION.copy())  # type: ignore[arg-type]


def _sitk_reference(grid: Grid):
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    ref = sitk.Image([int(s) for s in grid.size], sitk.sitkUInt8)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(tuple(float(v) for v in grid.direction.flatten()))
    return ref


def _resample(image, target: Grid, fill: float, nearest: bool):
    import SimpleITK as sitk  # local: ~0.3 s to import; PNG and cache inputs never need it

    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, _sitk_reference(target), sitk.Transform(), interpolator, fill, image.GetPixelID())
