"""CT data benchmark: patch-cache build vs the paper's per-item pipeline, on one phantom.

Measured side by side in one run, on the same phantom files:
  1. PNG decode time per slice;
  2. per-item, paper order: each lesion decodes its slices, windows and resamples the
     whole slices, then crops (1 process, what a DataLoader item does every epoch);
  3. per-item, crop-first: same decoding, only the patch region resampled;
  4. the cache build: crop-first, each slice decoded once per series, in 1 process and
     in worker processes;
  5. the paper's schedule (15 epochs): cache build + 15 epochs read from the cache
     versus 15 epochs of the per-item pipeline (paper order: --paper-subset lesions
     timed, scaled to the epoch, times 15).
Timings are the best of --repeats runs (the development machine is shared).

    .venv/bin/python bench/data.py [--lesions 600] [--workers 2] [--phantom DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vision.data.cache import PatchCache, build_cache  # noqa: E402
from vision.data.deeplesion import read_dl_info, read_label_split, read_slice_hu  # noqa: E402
from vision.data.phantom import synthesize  # noqa: E402
from vision.data.preprocess import lesion_patch, lesion_patch_whole_slice, model_input  # noqa: E402

EPOCHS = 15  # the paper's schedule
BATCH = 64


def _per_item_epoch(phantom: Path, preprocess, limit: int | None = None) -> tuple[float, int]:
    """One epoch (or its first ``limit`` lesions) of a DataLoader that preprocesses each
    lesion from its PNGs."""
    info = read_dl_info(phantom / "DL_info.csv")
    labels = read_label_split(phantom / "labels.json", dl_info=info)
    images = phantom / "Images_png"
    entries = labels.lesions[:limit]
    started = time.perf_counter()
    for entry in entries:
        lesion = info.lesions[entry.lesion_idx]
        decoded: dict[int, np.ndarray | None] = {}  # an item decodes each of its files once

        def provider(n: int) -> np.ndarray | None:
            if n not in decoded:
                path = lesion.slice_path(images, n)
                decoded[n] = read_slice_hu(path) if path.exists() else None
            return decoded[n]

        preprocess(provider, lesion.key_slice, lesion.box, lesion.spacing_mm[:2], lesion.spacing_mm[2])
    return time.perf_counter() - started, len(entries)


def _best(repeats: int, run) -> float:
    """Fastest of ``repeats`` timings: other jobs on a shared machine only add time."""
    return min(run() for _ in range(repeats))


def _cache_epoch(cache: PatchCache, rng: np.random.Generator) -> float:
    """One training epoch's data: shuffled batches from the memmap, as model input."""
    started = time.perf_counter()
    order = rng.permutation(len(cache))
    for i in range(0, len(order), BATCH):
        rows = np.sort(order[i : i + BATCH])
        model_input(np.asarray(cache.patches[rows]))
    return time.perf_counter() - started


def _linear_probe(cache: PatchCache) -> tuple[float, int] | None:
    """Mean test AUC of per-label logistic regressions on downsampled patches: a floor
    for what a CNN can learn from the phantom's visual evidence."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if any(lesion.truth is None for lesion in cache.lesions):
        return None
    n = len(cache)
    x = cache.patches.reshape(n, 3, 40, 3, 40, 3).mean(axis=(3, 5)).reshape(n, -1).astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    train = cache.rows("train")
    test = np.concatenate([cache.rows("val"), cache.rows("test")])
    names = sorted({name for lesion in cache.lesions for name in lesion.truth or ()})
    y = np.array([[name in (lesion.truth or ()) for name in names] for lesion in cache.lesions])
    aucs = []
    for j in range(len(names)):
        if y[train, j].sum() < 5 or y[test, j].sum() < 2 or y[test, j].all():
            continue
        model = LogisticRegression(C=0.01, max_iter=300).fit(x[train], y[train, j])
        aucs.append(roc_auc_score(y[test, j], model.decision_function(x[test])))
    return (float(np.mean(aucs)), len(aucs)) if aucs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phantom", type=Path, default=None, help="reuse this phantom instead of writing one")
    parser.add_argument("--repeats", type=int, default=2, help="timings are the best of this many runs")
    parser.add_argument("--paper-subset", type=int, default=300, help="lesions timed for the slow paper order")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lesanet-bench-data-"))
    try:
        phantom = args.phantom
        if phantom is None:
            started = time.perf_counter()
            phantom = synthesize(work / "phantom", args.lesions, seed=0, workers=args.workers)
            print(
                f"phantom: {args.lesions} lesions written in {time.perf_counter() - started:.1f} s "
                f"({args.workers} workers)"
            )
        slices = sorted((phantom / "Images_png").rglob("*.png"))[:200]
        started = time.perf_counter()
        for path in slices:
            read_slice_hu(path)
        decode_ms = (time.perf_counter() - started) / len(slices) * 1000
        shape = read_slice_hu(slices[0]).shape
        print(f"PNG decode: {decode_ms:.2f} ms per {shape[0]}x{shape[1]} slice")

        n = len(read_label_split(phantom / "labels.json").lesions)
        # the slow paper-order epoch is timed on a subset and scaled to the epoch
        sub_s, sub_n = _per_item_epoch(phantom, lesion_patch_whole_slice, args.paper_subset)
        paper_s = sub_s / sub_n * n
        crop_s = _best(args.repeats, lambda: _per_item_epoch(phantom, lesion_patch)[0])

        def build(workers: int, name: str) -> float:
            started = time.perf_counter()
            build_cache(phantom, phantom / "labels.json", work / name, workers=workers, progress=False)
            return time.perf_counter() - started

        build1_s = _best(args.repeats, lambda: build(1, "cache1"))
        build_s = _best(args.repeats, lambda: build(args.workers, "cache"))
        report_bad = json.loads((work / "cache" / "report.json").read_text())["n_bad"]
        cache = PatchCache(work / "cache")
        rng = np.random.default_rng(0)
        epoch_s = [_cache_epoch(cache, rng) for _ in range(EPOCHS)]
        schedule_cache = build_s + sum(epoch_s)
        schedule_item = EPOCHS * paper_s

        rate = lambda seconds: n / seconds  # noqa: E731
        print(
            f"\n{n} lesions ({report_bad} bad); best of {args.repeats} runs, paper order timed on "
            f"{sub_n} lesions and scaled"
        )
        print(f"{'pipeline':58s} {'seconds':>8s} {'lesions/s':>10s}")
        print(f"{'per item, paper order (whole slice), 1 process':58s} {paper_s:8.2f} {rate(paper_s):10.0f}")
        print(f"{'per item, crop-first, 1 process':58s} {crop_s:8.2f} {rate(crop_s):10.0f}")
        print(f"{'cache build: crop-first, decode once, 1 process':58s} {build1_s:8.2f} {rate(build1_s):10.0f}")
        print(
            f"{f'cache build: crop-first, decode once, {args.workers} workers':58s} {build_s:8.2f} {rate(build_s):10.0f}"
        )
        print(
            f"ratio cache build / per-item paper order: {paper_s / build_s:.1f}x faster "
            f"(crop-first alone: {paper_s / crop_s:.1f}x)"
        )
        print(
            f"\n{EPOCHS}-epoch data cost: cache build + {EPOCHS} cache epochs = {schedule_cache:.2f} s "
            f"(one cache epoch {np.mean(epoch_s) * 1000:.1f} ms) vs {EPOCHS} per-item epochs "
            f"(paper order, scaled from the timed lesions) = {schedule_item:.1f} s -> "
            f"{schedule_item / schedule_cache:.1f}x less time (target >= 10x)"
        )
        probe = _linear_probe(cache)
        if probe is not None:
            print(
                f"\nlearnability (not a speed figure): logistic regression on 3x40x40 patches, "
                f"train -> val+test, complete truth: mean AUC {probe[0]:.3f} over {probe[1]} labels"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
