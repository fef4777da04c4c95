"""Benchmark: prediction latency and throughput on CPU, and exact similar-lesion search.

    .venv/bin/python -m bench.infer [--configs cpu-small paper] [--vectors 1000000] [--threads 1] [--device cpu|cuda]

1. Latency per lesion of `lesanet predict --deeplesion DIR --lesion IDX` without process
   start-up: read the PNG slices, preprocess (vision.data.preprocess.lesion_patch, the cache's
   function), score, decide, expand and build the record — split into preprocessing and
   model time. Lesions come from a freshly synthesised phantom; the weights are a fresh
   initialisation (speed does not depend on their values).
2. Throughput of scoring cache patches in batches of 1, 32 and 128 (lesions/s), side by
   side with the one-at-a-time figure of the same run.
3. Exact L2 search over N random unit 256-D embeddings: the blocked torch search of
   vision.engines.retrieval.ExactIndex against a plain per-query numpy scan (the obvious code),
   same vectors, same queries; and faiss IndexFlatL2 when installed.

All figures are CPU time of the benchmark process (``time.process_time``), so they hold on
a busy shared machine; on an idle machine with one thread, wall time is the same.

4. ``--cli``: the `lesanet` command as a user runs it, in a fresh process each time (wall
   and CPU time of the child, best and median of ``--repeats``, with the load average):
   ``--help``; an input error (answered before torch loads); ``predict --image`` for one
   lesion on a 512 × 512 × 80 NIfTI CT (paper and cpu-small configs, fresh weights); and
   ``predict --manifest`` of 100 lesions over 5 such volumes (one model load, each volume
   read once). Then where the one-lesion time goes, measured in-process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/infer.py` as well as `python -m bench.infer`

from ontology import load_ontology  # noqa: E402
from vision.config import load_config  # noqa: E402
from vision.data.cache import PatchCache, build_cache  # noqa: E402
from vision.data.inputs import deeplesion_inputs, input_patches  # noqa: E402
from vision.data.phantom import synthesize  # noqa: E402
from vision.engines.checkpoint import save_checkpoint  # noqa: E402
from vision.engines.infer import load_predictor, predict_inputs, score_patches  # noqa: E402
from vision.engines.retrieval import ExactIndex, make_index  # noqa: E402
from vision.networks.model import LesaNet  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    """Median CPU seconds of this process per call (all threads).

    CPU time, not wall time: on a machine shared with other jobs the wall clock mostly
    measures waiting for a core; with one thread on an idle machine the two agree.
    """
    fn()  # warm-up (allocator, lazy imports, first-call kernels)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(np.median(times))


def bench_predict(config_name: str, phantom: Path, cache: Path, work: Path, onto, device: str) -> list[tuple[str, str]]:
    config = load_config(ROOT / "configs" / f"{config_name}.yaml")
    torch.manual_seed(0)
    term_list = onto.label_set("lesanet171")
    model = LesaNet(config.model, len(term_list))
    run = work / f"run-{config_name}"
    save_checkpoint(run, model, config, term_list, onto.version, epoch=0)
    predictor = load_predictor(run, device=device, onto=onto)
    inputs = deeplesion_inputs(phantom, [0])
    warnings: list[str] = []
    total = _median_seconds(lambda: predict_inputs(predictor, inputs, warn=warnings.append), 5)
    prep = _median_seconds(lambda: input_patches(deeplesion_inputs(phantom, [0]), warnings.append), 5)
    rows = [
        (f"{config_name}: predict one lesion from PNG files (end to end)", f"{total * 1e3:.1f} ms CPU"),
        (f"{config_name}:   of which reading + preprocessing", f"{prep * 1e3:.1f} ms CPU"),
    ]
    patches = np.asarray(PatchCache(cache).patches)
    boxes = np.array([lesion.box for lesion in PatchCache(cache).lesions], dtype=np.float32)
    reps = int(np.ceil(128 / len(patches)))
    patches, boxes = np.tile(patches, (reps, 1, 1, 1))[:128], np.tile(boxes, (reps, 1))[:128]
    single = None
    for batch in (1, 32, 128):
        n = batch if batch > 1 else 8
        seconds = _median_seconds(
            lambda: score_patches(predictor.model, patches[:n], boxes[:n], batch_size=batch, device=predictor.device), 3
        )
        rate = n / seconds
        single = single or rate
        rows.append(
            (
                f"{config_name}: score cache patches, batch {batch}",
                f"{rate:,.1f} lesions per CPU-second ({rate / single:.1f}× batch 1)",
            )
        )
    return rows


def bench_search(n_vectors: int, n_queries: int = 64, k: int = 5) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n_vectors, 256), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[rng.choice(n_vectors, n_queries, replace=False)] + 0.01 * rng.standard_normal(
        (n_queries, 256), dtype=np.float32
    )
    start = time.process_time()
    index = ExactIndex(base)
    build = time.process_time() - start
    blocked = _median_seconds(lambda: index.search(queries, k), 3)
    _, ids = index.search(queries, k)

    def numpy_scan() -> np.ndarray:
        found = np.empty((8, k), dtype=np.int64)
        for q in range(8):  # a per-query scan: full distance vector, then argpartition
            d = ((base - queries[q]) ** 2).sum(1)
            top = np.argpartition(d, k)[:k]
            found[q] = top[np.argsort(d[top])]
        return found

    scan = _median_seconds(numpy_scan, 1) / 8 * n_queries
    assert np.array_equal(numpy_scan(), ids[:8]), "the two searches disagree"
    rows = [
        (f"exact search, {n_vectors:,} × 256-D: build index", f"{build * 1e3:.0f} ms"),
        (
            f"exact search, {n_vectors:,} × 256-D: {n_queries} queries, k={k}, blocked torch (ExactIndex)",
            f"{blocked * 1e3:.0f} ms ({blocked / n_queries * 1e3:.2f} ms/query)",
        ),
        (
            f"exact search, {n_vectors:,} × 256-D: {n_queries} queries, per-query numpy scan (baseline)",
            f"{scan * 1e3:.0f} ms ({scan / n_queries * 1e3:.2f} ms/query)",
        ),
        ("ratio", f"{scan / blocked:.1f}× faster"),
    ]
    try:
        faiss_index = make_index(base, "faiss")
        seconds = _median_seconds(lambda: faiss_index.search(queries, k), 3)
        rows.append((f"exact search, {n_vectors:,}: faiss IndexFlatL2", f"{seconds * 1e3:.0f} ms"))
    except ValueError as exc:
        rows.append(("faiss", f"not measured ({exc})"))
    return rows


def _ct_volume(path: Path, seed: int, size=(512, 512, 80), spacing=(0.7, 0.7, 2.5)) -> None:
    """A CT-sized NIfTI in HU (RAS-stored, as dcm2niix writes): air, an elliptic body with
    10 HU noise, bright disks where the lesions are (content hardly matters for timing)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    body = ((x - size[0] / 2) / 220) ** 2 + ((y - size[1] / 2) / 170) ** 2 < 1
    hu = np.where(body, 40, -1000)[None].repeat(size[2], 0).astype(np.int16)
    hu += rng.normal(0, 10, hu.shape).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    sitk.WriteImage(sitk.DICOMOrient(image, "RAS"), str(path))


def _timed(command: list[str], repeats: int) -> tuple[float, float, float, int]:
    """Best and median wall seconds and median CPU seconds (user + sys) of a fresh process."""
    import resource
    import subprocess

    walls, cpus, code = [], [], 0
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), float(np.median(walls)), float(np.median(cpus)), code


def bench_cli(work: Path, onto, repeats: int, threads: int) -> list[tuple[str, str]]:
    import os

    lesanet = str(Path(sys.executable).parent / "lesanet")
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    os.environ.update(env_threads)
    term_list = onto.label_set("lesanet171")
    for name in ("paper", "cpu-small"):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        torch.manual_seed(0)
        save_checkpoint(
            work / f"run-{name}", LesaNet(config.model, len(term_list)), config, term_list, onto.version, epoch=0
        )
    volumes = []
    for v in range(5):
        volumes.append(work / f"ct{v}.nii.gz")
        _ct_volume(volumes[-1], v)
    rng = np.random.default_rng(0)
    lines = ["image,slice,box"]
    for i in range(100):
        x, y, k = int(rng.integers(150, 330)), int(rng.integers(150, 330)), int(rng.integers(3, 77))
        lines.append(f'{volumes[i % 5].name},{k},"{x},{y},{x + 30},{y + 24}"')
    (work / "lesions.csv").write_text("\n".join(lines) + "\n")
    one = ["--image", str(volumes[0]), "--slice", "40", "--box", "240,250,270,274"]
    rows = [("load average (1 min) at the start", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")]
    cases = [
        ("`lesanet --help`", [lesanet, "--help"]),
        (
            "input error (`predict --slice` without `--box`), answered before torch loads",
            [lesanet, "predict", str(work / "run-paper"), *one[:4]],
        ),
        (
            "`predict --image` one lesion, 512×512×80 NIfTI, paper config",
            [lesanet, "predict", str(work / "run-paper"), *one],
        ),
        ("`predict --image` one lesion, cpu-small config", [lesanet, "predict", str(work / "run-cpu-small"), *one]),
        (
            "`predict --manifest` 100 lesions over 5 volumes, paper config",
            [lesanet, "predict", str(work / "run-paper"), "--manifest", str(work / "lesions.csv"), "--jsonl"],
        ),
    ]
    for name, command in cases:
        best, median, cpu, code = _timed(command, repeats if "manifest" not in name else 1)
        rows.append((name, f"{best:.2f} s wall best, {median:.2f} s median; {cpu:.2f} s CPU (exit {code})"))
    rows.append(("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}"))
    rows += _predict_breakdown(work, volumes[0], one)
    return rows


def _predict_breakdown(work: Path, volume: Path, one: list[str]) -> list[tuple[str, str]]:
    """Where one `predict --image` goes, in a fresh interpreter (imports are the point)."""
    import json
    import subprocess

    code = f"""
import json, sys, time
t = [time.process_time()]
import torch; t.append(time.process_time())
from ontology import load_ontology; onto = load_ontology(); t.append(time.process_time())
from vision import infer; from vision.data.locate import VoxelBox, image_inputs; t.append(time.process_time())
predictor = infer.load_predictor({str(work / "run-paper")!r}, onto=onto); t.append(time.process_time())
inputs = image_inputs({str(volume)!r}, [VoxelBox(40, (240.0, 250.0, 270.0, 274.0))]); t.append(time.process_time())
infer.predict_inputs(predictor, inputs, warn=lambda m: None); t.append(time.process_time())
assert "torchvision" not in sys.modules  # predict runs on torchvision's compiled kernel alone
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    parts = json.loads(out.splitlines()[-1])
    names = [
        "import torch",
        "load the ontology",
        "import vision.engines.infer (the rest)",
        "load the paper model (safetensors)",
        "read the 512×512×80 NIfTI + place the lesion",
        "preprocess + score + decide + record",
    ]
    return [(f"one lesion, in-process: {n}", f"{v:.2f} s CPU") for n, v in zip(names, parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["cpu-small", "paper"])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine; more on an idle one)"
    )
    parser.add_argument("--cli", action="store_true", help="only the command-line figures (section 4)")
    parser.add_argument("--repeats", type=int, default=3, help="with --cli: runs per command (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads))
    onto = load_ontology()
    if args.cli:
        with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
            cli_rows = bench_cli(Path(tmp), onto, args.repeats, args.threads)
        print("| figure | value |\n|---|---|")
        for name, value in cli_rows:
            print(f"| {name} | {value} |")
        return
    rows: list[tuple[str, str]] = [("torch threads / device", f"{torch.get_num_threads()} / {args.device}")]
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        work = Path(tmp)
        phantom = synthesize(work / "phantom", 16, seed=0, workers=1, onto=onto)
        build_cache(
            phantom, phantom / "labels.json", work / "cache", workers=1, progress=False, ontology_version=onto.version
        )
        for name in args.configs:
            rows += bench_predict(name, phantom, work / "cache", work, onto, args.device)
    rows += bench_search(args.vectors)
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
