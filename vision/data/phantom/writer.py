"""Write a phantom dataset in DeepLesion's format.

Output folder: ``DL_info.csv``, ``Images_png/<patient>_<study>_<series>/<slice>.png``
(only the slices preprocessing needs: each key slice ± 2 mm, as DeepLesion ships only
slices around lesions), ``labels.json`` (official label/split format: what each sentence
states), ``truth.json`` (each lesion's complete label set, hand-labeled format),
``sentences.jsonl`` and ``phantom.json`` (generator settings and label counts).

Deterministic: every series draws from its own seed (seed, patient, study), so the
files are byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ontology import load_ontology
from ontology.files import default_file_mode, write_bytes_atomic, write_json_atomic
from ontology.protocol import OntologyLike
from vision.data.deeplesion import (
    SPLIT_NAMES,
    DataError,
    DLLesion,
    LesionLabels,
    encode_slice_png,
    label_split_json,
    series_dir_name,
    write_dl_info,
)
from vision.data.phantom.anatomy import Grid, Patient, add_scanner_noise, render_slice
from vision.data.phantom.lesions import SITES, PhantomLesion, paint_lesion, pick_weighted, place_lesion
from vision.data.phantom.sentences import make_sentence, sentence_record
from vision.data.workers import build_lock, process_pool

GENERATOR = "lesanet-phantom"
GENERATOR_VERSION = 1
SLICE_INTERVALS = (1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
INTERVAL_WEIGHTS = (0.12, 0.08, 0.1, 0.3, 0.1, 0.3)
GROUP_SIZES = (1, 2, 3)  # lesions per key slice
GROUP_WEIGHTS = (0.55, 0.3, 0.15)
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class SeriesSpec:
    seed: int
    patient: int
    study: int
    series: int
    n_lesions: int
    split_code: int
    image_size: int


def _patient_rng(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng([seed, patient])


def _plan_series(seed: int, n_lesions: int, image_size: int) -> list[SeriesSpec]:
    """Patients with 1-10 lesions over 1-2 studies; splits drawn per patient."""
    rng = np.random.default_rng([seed, 0])
    specs: list[SeriesSpec] = []
    remaining, patient = n_lesions, 0
    while remaining > 0:
        patient += 1
        n = min(remaining, int(np.clip(1 + rng.poisson(2.5), 1, 10)))
        split_code = 1 + int(rng.choice(3, p=SPLIT_FRACTIONS))
        studies = [n] if n < 3 or rng.random() > 0.3 else [n - n // 2, n // 2]
        for study, count in enumerate(studies, 1):
            specs.append(SeriesSpec(seed, patient, study, int(rng.integers(1, 4)), count, split_code, image_size))
        remaining -= n
    return specs


def _measure(lesion: PhantomLesion, z_key: float, grid: Grid) -> dict[str, Any]:
    """RECIST axes, box and diameters of the lesion on the key slice, in pixels."""
    dz = (z_key - lesion.z) / lesion.radius_z
    f = math.sqrt(max(0.05, 1 - dz * dz))
    rx, ry = lesion.radius_x * f, lesion.radius_y * f
    ca, sa = math.cos(lesion.angle), math.sin(lesion.angle)
    long_dir, short_dir = ((ca, sa), (-sa, ca)) if rx >= ry else ((-sa, ca), (ca, sa))
    long_r, short_r = max(rx, ry), min(rx, ry)
    points: list[float] = []
    for (dx, dy), r in ((long_dir, long_r), (short_dir, short_r)):
        for sign in (-1, 1):
            points.extend(grid.to_pixel(lesion.x + sign * r * dx, lesion.y + sign * r * dy))
    hx, hy = math.hypot(rx * ca, ry * sa), math.hypot(rx * sa, ry * ca)
    pad = 2.0  # mm around the lesion, as DeepLesion boxes have a small margin
    x1, y1 = grid.to_pixel(lesion.x - hx - pad, lesion.y - hy - pad)
    x2, y2 = grid.to_pixel(lesion.x + hx + pad, lesion.y + hy + pad)
    clip = lambda v, n: float(min(max(v, 0.0), n - 1))  # noqa: E731
    box = (clip(x1, grid.cols), clip(y1, grid.rows), clip(x2, grid.cols), clip(y2, grid.rows))
    cx, cy = grid.to_pixel(lesion.x, lesion.y)
    return {
        "measurement": [round(v, 3) for v in points],
        "box": [round(v, 3) for v in box],
        "diameters_px": [round(2 * long_r / grid.spacing, 3), round(2 * short_r / grid.spacing, 3)],
        "centre_px": [cx, cy],
        "long_mm": 2 * long_r,
    }


def render_series(spec: SeriesSpec, images_dir: str | None) -> dict[str, Any]:
    """Place the series' lesions, write its slice PNGs (unless ``images_dir`` is None);
    return lesion records."""
    prng = _patient_rng(spec.seed, spec.patient)
    patient = Patient.sample(prng)
    gender = "F" if prng.random() < 0.5 else "M"
    age = int(prng.integers(18, 90))
    rng = np.random.default_rng([spec.seed, spec.patient, spec.study])
    spacing = round(float(rng.uniform(1.35, 1.9)), 4)
    grid = Grid(spec.image_size, spec.image_size, spacing * 256 / spec.image_size)
    interval = float(rng.choice(SLICE_INTERVALS, p=INTERVAL_WEIGHTS))
    half = math.ceil(2.0 / interval - 1e-9)  # neighbours needed for ± 2 mm
    z_start = float(rng.uniform(-25, -10))
    z_of = lambda n: z_start + (n - 1) * interval  # noqa: E731
    groups: list[tuple[int, list[PhantomLesion]]] = []
    used: set[int] = set()
    remaining = spec.n_lesions
    site_weights = [s.weight for s in SITES]
    while remaining > 0:
        size = min(remaining, int(rng.choice(GROUP_SIZES, p=GROUP_WEIGHTS)))
        for _ in range(200):
            site = pick_weighted(rng, list(SITES), site_weights)
            z_anat = float(rng.uniform(*site.z_range))
            key = 1 + round((z_anat + patient.z_shift - z_start) / interval)
            if key <= half or key in used:
                continue
            _, regions = render_slice(patient, z_of(key), grid)
            first = place_lesion(rng, site, patient, z_of(key), regions, grid, [])
            if first is not None:
                break
        else:
            raise RuntimeError(f"phantom: cannot place a lesion for patient {spec.patient}")
        group = [first]
        z_key_anat = z_of(key) - patient.z_shift
        nearby = [s for s in SITES if s.z_range[0] <= z_key_anat <= s.z_range[1]]
        for _ in range(40 if nearby else 0):
            if len(group) == size:
                break
            site = pick_weighted(rng, nearby, [s.weight for s in nearby])
            lesion = place_lesion(rng, site, patient, z_of(key), regions, grid, group)
            if lesion is not None:
                group.append(lesion)
        used.add(key)
        groups.append((key, group))
        remaining -= len(group)
    groups.sort(key=lambda g: g[0])
    lesions = [lesion for _, group in groups for lesion in group]
    needed = sorted({n for key, _ in groups for n in range(key - half, key + half + 1)})
    series_dir = Path(images_dir or ".") / series_dir_name(spec.patient, spec.study, spec.series)
    if images_dir is not None:
        series_dir.mkdir(parents=True, exist_ok=True)
    for n in needed if images_dir is not None else ():
        z = z_of(n)
        hu, region = render_slice(patient, z, grid)
        for lesion in lesions:
            paint_lesion(hu, lesion, z, grid, n)
        noisy = add_scanner_noise(hu, region, np.random.default_rng([spec.seed, spec.patient, spec.study, n]))
        (series_dir / f"{n:03d}.png").write_bytes(encode_slice_png(noisy))
    records = []
    for key, group in groups:
        for lesion in group:
            m = _measure(lesion, z_of(key), grid)
            records.append(
                {
                    "key_slice": key,
                    "slice_range": [key - half, key + half],
                    "spacing": [grid.spacing, grid.spacing, interval],
                    "labels": list(lesion.labels),
                    "site": lesion.site,
                    "kind": lesion.kind,
                    "coarse_type": lesion.coarse_type,
                    "window": list(lesion.window),
                    "z_anat": lesion.z - patient.z_shift,
                    "group": key,
                    **m,
                }
            )
    return {
        "spec": spec,
        "gender": gender,
        "age": age,
        "records": records,
        "n_slices": len(needed) if images_dir is not None else 0,
    }


def _expanded(onto: OntologyLike, labels: list[str], allowed: list[str]) -> list[str]:
    """Expansion through the ontology, in term_list order; exclusions are an error."""
    expanded = onto.expand(labels)
    for name in expanded:
        clash = onto.exclusive(name) & expanded
        if clash:
            raise DataError(f"phantom label set {labels} holds exclusive labels {name!r} and {sorted(clash)[0]!r}")
    return [name for name in allowed if name in expanded]


def synthesize(
    out_dir: str | os.PathLike[str],
    n_lesions: int,
    seed: int = 0,
    *,
    workers: int = 2,
    image_size: int = 256,
    onto: OntologyLike | None = None,
    overwrite: bool = False,
    write_images: bool = True,
) -> Path:
    """Write a DeepLesion-format phantom with ``n_lesions`` lesions to ``out_dir``.

    ``write_images=False`` writes the tables and sentences only (e.g. for text mining).
    """
    if n_lesions < 1:
        raise DataError("the phantom needs at least one lesion")
    if image_size not in (256, 512):
        raise DataError("image_size must be 256 or 512")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another folder or overwrite")
    if onto is None:
        onto = load_ontology()
    term_list = onto.label_set("lesanet171")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the lock (released by the kernel when this process dies) tells a killed synth's work folder from a live one's
    with build_lock(out.parent / f".{out.name}.lock", f"phantom {out}"):
        for stale in out.parent.glob(f".{out.name}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
        try:
            mode = default_file_mode()
            os.chmod(work, mode | (mode & 0o444) >> 2)  # mkdtemp makes 0700; the dataset is an ordinary folder
            specs = _plan_series(seed, n_lesions, image_size)
            images = str(work / "Images_png") if write_images else None
            if workers <= 1:
                results = [render_series(spec, images) for spec in specs]
            else:
                with process_pool(workers) as pool:  # workers die with this process, even on SIGKILL
                    results = list(pool.map(render_series, specs, [images] * len(specs), chunksize=4))
            _write_tables(work, results, term_list, onto, seed, image_size)
            if out.exists():
                shutil.rmtree(out)
            os.replace(work, out)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return out


def _write_tables(
    work: Path, results: list[dict[str, Any]], term_list: list[str], onto: OntologyLike, seed: int, image_size: int
) -> None:
    dl_rows: list[DLLesion] = []
    label_rows: list[LesionLabels] = []
    truth_rows: list[dict[str, Any]] = []
    sentence_lines: list[str] = []
    label_counts: Counter[str] = Counter()
    for result in results:
        spec: SeriesSpec = result["spec"]
        records = result["records"]
        for rec in records:
            idx = len(dl_rows)
            truth = _expanded(onto, rec["labels"], term_list)
            label_counts.update(truth)
            cx, cy = rec["centre_px"]
            dl_rows.append(
                DLLesion(
                    lesion_idx=idx,
                    file_name=f"{series_dir_name(spec.patient, spec.study, spec.series)}_{rec['key_slice']:03d}.png",
                    patient=spec.patient,
                    study=spec.study,
                    series=spec.series,
                    key_slice=rec["key_slice"],
                    measurement=tuple(rec["measurement"]),
                    box=tuple(rec["box"]),  # type: ignore[arg-type]
                    diameters_px=tuple(rec["diameters_px"]),  # type: ignore[arg-type]
                    location=(
                        round(cx / image_size, 5),
                        round(cy / image_size, 5),
                        round(min(1.0, max(0.0, rec["z_anat"] / 640)), 5),
                    ),
                    coarse_type=-1 if spec.split_code == 1 else rec["coarse_type"],
                    possibly_noisy=False,
                    slice_range=tuple(rec["slice_range"]),  # type: ignore[arg-type]
                    spacing_mm=tuple(rec["spacing"]),  # type: ignore[arg-type]
                    image_size=(image_size, image_size),
                    dicom_window=tuple(rec["window"]),  # type: ignore[arg-type]
                    gender=result["gender"],
                    age=float(result["age"]),
                    split_code=spec.split_code,
                )
            )
            # another lesion on the same key slice may be described beside OTHER_BMK
            others = [r for r in records if r is not rec and r["group"] == rec["group"]]
            other = others[0]["labels"] if others else None
            false_labels = [
                n
                for n in ("calcified", "cavitary", "spiculated", "enhancing", "lobular", "heterogeneous")
                if n not in truth
            ]
            text, mentions = make_sentence(
                np.random.default_rng([seed, 7, idx]), onto, rec["labels"], other, false_labels
            )
            record = sentence_record(idx, text, mentions)
            sentence_lines.append(json.dumps(record, ensure_ascii=False))
            relevant = _expanded(onto, record["relevant"], term_list)
            uncertain_all = onto.expand(record["uncertain"]) if record["uncertain"] else set()
            uncertain = [n for n in term_list if n in uncertain_all and n not in relevant]
            stated = set(relevant) | set(uncertain)
            irrelevant = [n for n in term_list if n in set(record["irrelevant"]) and n not in stated]
            label_rows.append(
                LesionLabels(idx, SPLIT_NAMES[spec.split_code], tuple(relevant), tuple(uncertain), tuple(irrelevant))
            )
            truth_rows.append({"text": ", ".join(rec["labels"]), "lesion_idx": idx, "expanded_terms": truth})
    write_dl_info(work / "DL_info.csv", dl_rows)
    write_json_atomic(work / "labels.json", label_split_json(term_list, label_rows), indent=None)
    write_json_atomic(work / "truth.json", truth_rows, indent=1)
    write_bytes_atomic(work / "sentences.jsonl", ("\n".join(sentence_lines) + "\n").encode("utf-8"))
    splits = Counter(row.split for row in label_rows)
    write_json_atomic(
        work / "phantom.json",
        {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "n_lesions": len(dl_rows),
            "n_patients": len({r.patient for r in dl_rows}),
            "n_slices": sum(r["n_slices"] for r in results),
            "image_size": image_size,
            "ontology_version": onto.version,
            "splits": {k: splits[k] for k in ("train", "val", "test")},
            "label_counts": {n: label_counts[n] for n in term_list if label_counts[n]},
        },
        indent=1,
    )
