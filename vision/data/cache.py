"""The patch cache: every lesion preprocessed once into one memory-mappable array.

Layout (docs/architecture.md): ``patches.npy`` (uint8 N × 3 × 120 × 120), ``index.json``
(lesion idx, split, box in patch pixels, labels), ``report.json`` (bad lesions skipped).

The build works in units (lesions of one series, in key-slice order) so each slice PNG is
decoded once even when lesions share it; units run in worker processes that write
their rows straight into a preallocated ``.npy`` (``open_memmap`` layout, ``pwrite``);
the parent appends finished units to ``done.jsonl`` after syncing the rows. A build
that is killed resumes from the units listed there and ends byte-identical to an
uninterrupted build.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ontology.batch import RecordError, decode_json_line
from ontology.files import read_versioned_json, write_json_atomic
from vision.data.deeplesion import (
    DEFAULT_COORDINATE_BASE,
    SPLIT_CODES,
    DataError,
    read_dl_info,
    read_hand_labeled,
    read_label_split,
    read_slice_hu,
    series_dir_name,
)
from vision.data.preprocess import DEFAULT_CONFIG, PreprocessConfig, lesion_patch
from vision.data.workers import build_lock, process_pool

CACHE_FORMAT = "lesanet-patch-cache"
CACHE_VERSION = 1
PARTIAL_DIR = ".partial"
LOCK_FILE = ".build.lock"
# temp files a killed build may leave beside the cache (write_bytes_atomic's mkstemp names, the compacted
# array); removed by the next build, which holds the lock, so no live build owns them
_STALE_TEMP_GLOBS = (".patches.npy.tmp", ".index.json.*", ".report.json.*")


class BuildInterrupted(RuntimeError):
    """Raised by the ``stop_after_units`` test hook to simulate a killed build."""


@dataclass(frozen=True)
class CacheLesion:
    """One row of the cache index."""

    row: int
    lesion_idx: int
    split: str
    box: tuple[float, float, float, float]  # patch pixels
    relevant: tuple[str, ...]
    uncertain: tuple[str, ...]
    irrelevant: tuple[str, ...]
    truth: tuple[str, ...] | None
    sentence: str | None


@dataclass
class CacheReport:
    out_dir: Path
    n_lesions: int
    bad: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    seconds: float = 0.0
    resumed_lesions: int = 0  # lesions taken from an interrupted build
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def lesions_per_second(self) -> float:
        done = self.n_lesions - self.resumed_lesions
        return done / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Task:
    """What a worker needs to make one row."""

    row: int
    lesion_idx: int
    series_dir: str
    key_slice: int
    box: tuple[float, float, float, float]
    spacing_xy: tuple[float, float]
    slice_interval: float


# --------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    term_list: list[str]
    tasks: list[_Task]
    meta: list[dict[str, Any]]  # per row: lesion_idx, split, labels, truth, sentence
    bad: list[dict[str, Any]]
    dropped: dict[str, int]


def _read_sentences(path: Path, bad: list[dict[str, Any]]) -> dict[int, str]:
    """``lesion_idx`` -> report sentence; a bad line is reported in ``bad`` (file:line: reason) and skipped."""
    texts: dict[int, str] = {}
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the sentences ({exc.strerror or exc})") from None
    with handle:
        for line_no, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = decode_json_line(raw)
                idx = record.get("lesion_idx") if isinstance(record, dict) else None
                if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
                    raise RecordError("no `lesion_idx` (a DL_info.csv row number)")
                if not isinstance(record.get("text"), str):
                    raise RecordError("no `text` (a string)")
            except RecordError as exc:
                bad.append({"lesion_idx": None, "reason": f"{path}:{line_no}: bad sentence record ({exc}); skipped"})
                continue
            texts[idx] = record["text"]
    return texts


def _plan(
    deeplesion_dir: Path,
    labels_json: Path,
    truth_json: Path | None,
    sentences_jsonl: Path | None,
    known_labels: set[str] | None,
    coordinate_base: int,
) -> _Plan:
    info = read_dl_info(deeplesion_dir / "DL_info.csv", strict=False, coordinate_base=coordinate_base)
    bad: list[dict[str, Any]] = []
    bad_rows = {e.lesion_idx: str(e) for e in info.errors if e.lesion_idx is not None}
    labels = read_label_split(labels_json, known_labels=known_labels, strict=False)
    for error in labels.errors:
        bad.append({"lesion_idx": None, "reason": str(error)})
    truth: dict[int, tuple[str, ...]] = {}
    if truth_json is not None:
        records, errors = read_hand_labeled(truth_json, known_labels=known_labels, strict=False)
        truth = {r.lesion_idx: r.expanded_terms for r in records}
        bad.extend({"lesion_idx": None, "reason": str(e)} for e in errors)
    sentences = _read_sentences(sentences_jsonl, bad) if sentences_jsonl is not None else {}
    dropped = dict(labels.dropped)
    tasks: list[_Task] = []
    meta: list[dict[str, Any]] = []
    for entry in sorted(labels.lesions, key=lambda e: e.lesion_idx):
        idx = entry.lesion_idx
        lesion = info.lesions.get(idx)
        if lesion is None:
            reason = bad_rows.get(idx, f"lesion {idx} is not a row of {info.path}")
            bad.append({"lesion_idx": idx, "reason": reason})
            continue
        if lesion.possibly_noisy:
            dropped["possibly_noisy"] = dropped.get("possibly_noisy", 0) + 1
            continue
        tasks.append(
            _Task(
                row=len(tasks),
                lesion_idx=idx,
                series_dir=series_dir_name(lesion.patient, lesion.study, lesion.series),
                key_slice=lesion.key_slice,
                box=lesion.box,
                spacing_xy=(lesion.spacing_mm[0], lesion.spacing_mm[1]),
                slice_interval=lesion.spacing_mm[2],
            )
        )
        meta.append(
            {
                "lesion_idx": idx,
                "split": entry.split,
                "relevant": list(entry.relevant),
                "uncertain": list(entry.uncertain),
                "irrelevant": list(entry.irrelevant),
                "truth": list(truth[idx]) if idx in truth else None,
                "sentence": sentences.get(idx),
            }
        )
    return _Plan(term_list=labels.term_list, tasks=tasks, meta=meta, bad=bad, dropped=dropped)


def _units(tasks: Sequence[_Task], chunk_lesions: int) -> list[list[_Task]]:
    """Lesions grouped by series (slices decoded once per unit), key-slice order."""
    by_series: dict[str, list[_Task]] = {}
    for task in tasks:
        by_series.setdefault(task.series_dir, []).append(task)
    units: list[list[_Task]] = []
    for series in sorted(by_series):
        group = sorted(by_series[series], key=lambda t: (t.key_slice, t.row))
        units.extend(group[i : i + chunk_lesions] for i in range(0, len(group), chunk_lesions))
    return units


# --------------------------------------------------------------------------- workers


def _npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a .npy file (after its header)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(handle)
        else:
            np.lib.format.read_array_header_2_0(handle)
        return handle.tell()


def _process_unit(
    partial_npy: str, data_offset: int, images_dir: str, unit: list[_Task], cfg: PreprocessConfig
) -> list[dict[str, Any]]:
    """Preprocess one unit and write its rows into the preallocated .npy (pwrite: no
    msync of the whole map per unit); returns per-row box / error / warnings."""
    row_bytes = cfg.num_slices * cfg.patch_size * cfg.patch_size
    decoded: dict[tuple[str, int], np.ndarray | None] = {}
    fd = os.open(partial_npy, os.O_WRONLY)

    results = []
    for task in unit:

        def provider(n: int, series: str = task.series_dir) -> np.ndarray | None:
            key = (series, n)
            if key not in decoded:
                path = Path(images_dir) / series / f"{n:03d}.png"
                decoded[key] = read_slice_hu(path) if path.exists() else None
            return decoded[key]

        notes: list[str] = []
        try:
            patch, box = lesion_patch(
                provider, task.key_slice, task.box, task.spacing_xy, task.slice_interval, cfg, notes.append
            )
        except (ValueError, OSError, MemoryError) as exc:  # DataError is a ValueError; one lesion never sinks the unit
            reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            results.append({"row": task.row, "error": reason, "warnings": notes})
            continue
        os.pwrite(fd, np.ascontiguousarray(patch, dtype=np.uint8).tobytes(), data_offset + task.row * row_bytes)
        results.append({"row": task.row, "box": [round(float(v), 4) for v in box], "warnings": notes})
    os.close(fd)  # the rows are in the page cache: a killed process keeps them
    return results


# --------------------------------------------------------------------------- build


def _fingerprint(plan: _Plan, cfg: PreprocessConfig, images_dir: Path) -> str:
    blob = json.dumps(
        {"tasks": [asdict(t) for t in plan.tasks], "cfg": asdict(cfg), "images": str(images_dir.resolve())},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_done(path: Path) -> dict[int, list[dict[str, Any]]]:
    """Units finished by an earlier (maybe killed) build; a torn last line is ignored."""
    done: dict[int, list[dict[str, Any]]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[int(record["unit"])] = record["results"]
            except (ValueError, KeyError, TypeError):
                continue
    return done


def build_cache(
    deeplesion_dir: str | os.PathLike[str],
    labels_json: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    truth_json: str | os.PathLike[str] | None = None,
    sentences_jsonl: str | os.PathLike[str] | None = None,
    known_labels: set[str] | None = None,
    ontology_version: str = "unknown",
    cfg: PreprocessConfig = DEFAULT_CONFIG,
    coordinate_base: int = DEFAULT_COORDINATE_BASE,
    chunk_lesions: int = 32,
    sync_seconds: float = 2.0,
    progress: bool = True,
    stop_after_units: int | None = None,
) -> CacheReport:
    """Preprocess every labelled lesion of a DeepLesion-format folder into ``out_dir``.

    ``truth_json`` / ``sentences_jsonl`` default to ``truth.json`` / ``sentences.jsonl``
    next to ``DL_info.csv`` when those exist (the phantom writes them).
    ``stop_after_units`` raises BuildInterrupted after that many units (resume tests).
    Finished units are made durable (rows, then the log) every ``sync_seconds``; a
    build killed at any point resumes; a machine crash loses at most that much work.
    """
    root, out = Path(deeplesion_dir), Path(out_dir)
    if not (root / "DL_info.csv").exists():
        raise DataError(f"{root}: no DL_info.csv; give the DeepLesion folder (DL_info.csv + Images_png/)")
    out.mkdir(parents=True, exist_ok=True)
    with build_lock(out / LOCK_FILE, f"patch cache {out}"):
        _remove_stale_temp_files(out)
        return _build_locked(
            root,
            out,
            workers=workers,
            truth_json=truth_json,
            sentences_jsonl=sentences_jsonl,
            known_labels=known_labels,
            ontology_version=ontology_version,
            cfg=cfg,
            coordinate_base=coordinate_base,
            chunk_lesions=chunk_lesions,
            sync_seconds=sync_seconds,
            progress=progress,
            stop_after_units=stop_after_units,
            labels_json=labels_json,
        )


def _remove_stale_temp_files(out: Path) -> None:
    """Temp files of a killed build (the caller holds the build lock, so none is live)."""
    for pattern in _STALE_TEMP_GLOBS:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


def _build_locked(
    root: Path,
    out: Path,
    *,
    labels_json: str | os.PathLike[str],
    workers: int,
    truth_json: str | os.PathLike[str] | None,
    sentences_jsonl: str | os.PathLike[str] | None,
    known_labels: set[str] | None,
    ontology_version: str,
    cfg: PreprocessConfig,
    coordinate_base: int,
    chunk_lesions: int,
    sync_seconds: float,
    progress: bool,
    stop_after_units: int | None,
) -> CacheReport:
    started = time.perf_counter()
    images_dir = root / "Images_png"
    if truth_json is None and (root / "truth.json").exists():
        truth_json = root / "truth.json"
    if sentences_jsonl is None and (root / "sentences.jsonl").exists():
        sentences_jsonl = root / "sentences.jsonl"
    plan = _plan(
        root,
        Path(labels_json),
        Path(truth_json) if truth_json else None,
        Path(sentences_jsonl) if sentences_jsonl else None,
        known_labels,
        coordinate_base,
    )
    if not plan.tasks:
        raise DataError(_nothing_cached(f"no lesion of {labels_json} can be cached", plan.bad))
    patch_shape = (cfg.num_slices, cfg.patch_size, cfg.patch_size)
    units = _units(plan.tasks, chunk_lesions)
    partial = out / PARTIAL_DIR
    partial_npy, done_path, plan_path = partial / "patches.npy", partial / "done.jsonl", partial / "plan.json"
    fingerprint = _fingerprint(plan, cfg, images_dir)
    resumable = plan_path.exists() and partial_npy.exists()
    if resumable:
        try:
            resumable = json.loads(plan_path.read_text())["fingerprint"] == fingerprint
        except (ValueError, KeyError):
            resumable = False
    if not resumable:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        np.lib.format.open_memmap(partial_npy, mode="w+", dtype=np.uint8, shape=(len(plan.tasks), *patch_shape))
        write_json_atomic(plan_path, {"fingerprint": fingerprint}, indent=None)
    done = _read_done(done_path) if resumable else {}
    resumed = sum(len(done[u]) for u in done if u < len(units))
    todo = [u for u in range(len(units)) if u not in done]

    bar = tqdm(total=len(plan.tasks), initial=resumed, unit="lesion", disable=not progress, file=sys.stderr)
    data_offset = _npy_data_offset(partial_npy)
    npy_fd = os.open(partial_npy, os.O_RDONLY)
    with done_path.open("a", encoding="utf-8") as log:
        pending: list[str] = []
        last_sync = time.monotonic()

        def sync() -> None:
            # rows reach the disk before the log lines that vouch for them
            nonlocal last_sync
            if pending:
                os.fsync(npy_fd)
                log.write("".join(pending))
                log.flush()
                os.fsync(log.fileno())
                pending.clear()
            last_sync = time.monotonic()

        def record(unit_id: int, results: list[dict[str, Any]]) -> None:
            pending.append(json.dumps({"unit": unit_id, "results": results}) + "\n")
            done[unit_id] = results
            bar.update(len(results))
            if time.monotonic() - last_sync >= sync_seconds:
                sync()
            if stop_after_units is not None and len(done) >= stop_after_units:
                raise BuildInterrupted(f"stopped after {len(done)} units (test hook)")

        args = (str(partial_npy), data_offset, str(images_dir))
        try:
            if workers <= 1:
                for unit_id in todo:
                    record(unit_id, _process_unit(*args, units[unit_id], cfg))
            else:
                with process_pool(workers) as pool:  # workers die with this process, even on SIGKILL
                    futures = {pool.submit(_process_unit, *args, units[u], cfg): u for u in todo}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            record(futures[future], future.result())
                    except BaseException:
                        for future in futures:
                            future.cancel()
                        raise
        finally:
            sync()  # units that finished are kept even when the build stops
            os.close(npy_fd)
            bar.close()

    report = _finish(plan, units, done, partial_npy, out, ontology_version, cfg)
    report.seconds = time.perf_counter() - started
    report.resumed_lesions = resumed
    shutil.rmtree(partial, ignore_errors=True)
    return report


def _nothing_cached(what: str, bad: Sequence[dict[str, Any]], shown: int = 3) -> str:
    reasons = "; ".join(b["reason"] for b in bad[:shown]) or "the label file lists no usable lesion"
    more = f" (and {len(bad) - shown:,} more)" if len(bad) > shown else ""
    return f"{what}: {reasons}{more}"


def _finish(
    plan: _Plan,
    units: list[list[_Task]],
    done: dict[int, list[dict[str, Any]]],
    partial_npy: Path,
    out: Path,
    ontology_version: str,
    cfg: PreprocessConfig,
) -> CacheReport:
    """Compact good rows into patches.npy and write index.json + report.json."""
    by_row = {r["row"]: r for results in done.values() for r in results}
    bad = list(plan.bad)
    warnings: list[dict[str, Any]] = []
    good_rows: list[int] = []
    for task in plan.tasks:
        result = by_row[task.row]
        for note in result.get("warnings", []):
            warnings.append({"lesion_idx": task.lesion_idx, "warning": note})
        if "error" in result:
            bad.append({"lesion_idx": task.lesion_idx, "reason": result["error"]})
        else:
            good_rows.append(task.row)
    if not good_rows:
        bad.sort(key=lambda b: (b["lesion_idx"] is None, b["lesion_idx"] or 0, b["reason"]))
        raise DataError(_nothing_cached(f"none of the {len(plan.tasks):,} lesions could be cached", bad))
    tmp_npy = partial_npy.with_name("patches.compact.npy")
    if len(good_rows) == len(plan.tasks):
        tmp_npy = partial_npy
    else:
        source = np.load(partial_npy, mmap_mode="r")
        compact = np.lib.format.open_memmap(
            tmp_npy, mode="w+", dtype=np.uint8, shape=(len(good_rows), *source.shape[1:])
        )
        for new_row, old_row in enumerate(good_rows):
            compact[new_row] = source[old_row]
        compact.flush()
        del compact, source
    _fsync(tmp_npy)
    lesions = []
    for new_row, old_row in enumerate(good_rows):
        meta = plan.meta[old_row]
        lesions.append(
            {
                "row": new_row,
                **{k: meta[k] for k in ("lesion_idx", "split")},
                "box": by_row[old_row]["box"],
                **{k: meta[k] for k in ("relevant", "uncertain", "irrelevant", "truth", "sentence")},
            }
        )
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "term_list": plan.term_list,
        "ontology_version": ontology_version,
        "patch_size": cfg.patch_size,
        "lesions": lesions,
    }
    bad.sort(key=lambda b: (b["lesion_idx"] is None, b["lesion_idx"] or 0, b["reason"]))
    report = {"n_lesions": len(lesions), "n_bad": len(bad), "bad": bad, "warnings": warnings, "dropped": plan.dropped}
    _commit(out, tmp_npy, index, report)
    return CacheReport(out_dir=out, n_lesions=len(lesions), bad=bad, warnings=warnings, dropped=plan.dropped)


def _commit(out: Path, new_npy: Path, index: dict[str, Any], report: dict[str, Any]) -> None:
    """Swap the new cache in as one unit: ``index.json`` is the commit record.

    The old index goes first (from then on the folder is no cache: readers refuse it),
    then the patches and the report are replaced, then the new index, which names the
    patches' size, is written last. A build killed anywhere in between leaves either the
    old cache whole, or no index (a reader says to rerun ``data cache``), never new
    patches under an old index.
    """
    (out / "index.json").unlink(missing_ok=True)
    _fsync(out)
    os.replace(new_npy, out / "patches.npy")
    write_json_atomic(out / "report.json", report, indent=1)
    index["patches_bytes"] = (out / "patches.npy").stat().st_size
    write_json_atomic(out / "index.json", index, indent=None)
    _fsync(out)


def _fsync(path: Path) -> None:
    """Make a file's bytes, or the renames in a folder, durable (a machine crash keeps their order)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reader


class PatchCache:
    """A built cache: ``patches`` (memmap N × 3 × P × P uint8), ``lesions``, ``term_list``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.is_file():
            partial = (
                " (an interrupted build is there: rerun the same `lesanet data cache` to finish it)"
                if (self.path / PARTIAL_DIR).is_dir()
                else ""
            )
            raise DataError(
                f"{self.path}: no index.json, so no complete cache; build it with `lesanet data cache`{partial}"
            )
        index = read_versioned_json(index_path, CACHE_FORMAT, CACHE_VERSION, DataError, "; rebuild the cache")
        self.term_list: list[str] = index["term_list"]
        self.ontology_version: str = index["ontology_version"]
        self.patch_size: int = index["patch_size"]
        self.lesions: list[CacheLesion] = [
            CacheLesion(
                row=e["row"],
                lesion_idx=e["lesion_idx"],
                split=e["split"],
                box=tuple(e["box"]),  # type: ignore[arg-type]
                relevant=tuple(e["relevant"]),
                uncertain=tuple(e["uncertain"]),
                irrelevant=tuple(e["irrelevant"]),
                truth=None if e["truth"] is None else tuple(e["truth"]),
                sentence=e["sentence"],
            )
            for e in index["lesions"]
        ]
        expected_bytes = index.get("patches_bytes")
        try:
            actual_bytes = (self.path / "patches.npy").stat().st_size
        except FileNotFoundError:
            raise DataError(f"{self.path}: index.json but no patches.npy; rebuild with `lesanet data cache`") from None
        if expected_bytes is not None and actual_bytes != expected_bytes:
            raise DataError(
                f"{self.path}: patches.npy ({actual_bytes:,} bytes) is not the one index.json was "
                f"written for ({expected_bytes:,} bytes); rebuild with `lesanet data cache`"
            )
        self._records: list[dict[str, Any]] | None = None
        self.patches: np.ndarray = np.load(self.path / "patches.npy", mmap_mode="r")
        if self.patches.shape[0] != len(self.lesions) or self.patches.dtype != np.uint8:
            raise DataError(
                f"{self.path}: patches.npy has shape {self.patches.shape} {self.patches.dtype}, "
                f"index lists {len(self.lesions)} lesions; rebuild the cache"
            )

    def __len__(self) -> int:
        return len(self.lesions)

    def rows(self, split: str) -> np.ndarray:
        """Row numbers of one split ("train", "val", "test")."""
        return np.array([e.row for e in self.lesions if e.split == split], dtype=np.int64)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The lesions as plain dicts, in index.json's form (what training and evaluation read)."""
        if self._records is None:
            self._records = [asdict(lesion) for lesion in self.lesions]
        return self._records

    def select(self, split: str) -> CacheSelection:
        """Rows of ``split``: ``train`` / ``val`` / ``test``, ``all``, or ``hand`` (test rows with a complete truth)."""
        if split == "all":
            rows = np.arange(len(self.lesions), dtype=np.int64)
        elif split == "hand":
            rows = np.array([e.row for e in self.lesions if e.split == "test" and e.truth is not None], dtype=np.int64)
        elif split in SPLIT_CODES:
            rows = self.rows(split)
        else:
            raise DataError(f"unknown split {split!r} (train, val, test, hand, all)")
        return CacheSelection(self, rows)

    def with_labels(self, term_list: Sequence[str], out: str | os.PathLike[str]) -> PatchCache:
        """A view of this cache with another label list: the same patches (linked), a new index.json."""
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        index = json.loads((self.path / "index.json").read_text(encoding="utf-8"))
        index["term_list"] = list(term_list)
        patches = target / "patches.npy"
        if not patches.exists():
            try:
                os.symlink((self.path / "patches.npy").resolve(), patches)
            except OSError:  # filesystems without symlinks
                shutil.copyfile(self.path / "patches.npy", patches)
        write_json_atomic(target / "index.json", index)
        return PatchCache(target)


@dataclass(frozen=True)
class CacheSelection:
    """Rows of a patch cache chosen for scoring (e.g. one split), with their index records."""

    cache: PatchCache
    rows: np.ndarray  # chosen row numbers

    @property
    def path(self) -> Path:
        return self.cache.path

    @property
    def patches(self) -> np.ndarray:  # memory-mapped uint8 N × 3 × P × P (all rows)
        return self.cache.patches

    @property
    def records(self) -> list[dict[str, Any]]:
        lesions = self.cache.records
        return [lesions[r] for r in self.rows]

    @property
    def term_list(self) -> list[str]:
        return [str(t) for t in self.cache.term_list]

    def boxes(self) -> np.ndarray:
        return np.array([r["box"] for r in self.records], dtype=np.float32).reshape(-1, 4)

    def only(self, rows: np.ndarray) -> CacheSelection:
        """The same cache with other rows chosen."""
        return CacheSelection(self.cache, np.asarray(rows, dtype=np.int64))
