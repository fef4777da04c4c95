"""Benchmark: LesaNet training throughput and memory, triplet sampling, batch gathering.

    .venv/bin/python -m bench.train [--batch N] [--steps N] [--device cpu|cuda]

1. A training step of the paper configuration (VGG-16-BN, C = 171, all four losses):
   lesions/s and peak memory; bf16 autocast + channels_last on CUDA.
2. A whole epoch through ``vision.engines.train.fit`` (the real loop: device-resident uint8
   cache, index batches, validation, checkpoint) for cpu-small and, on CUDA, the paper
   config; and the implied time of the paper schedule (15 epochs x 19,000 lesions).
3. Triplet sampling (T = 5,000 on a batch of 128 x 171): the vectorised sampler against a
   per-triplet Python loop (the original design), same batch, same run; target >= 20x.
4. Batch gathering: one index into the uint8 cache tensor against per-sample Python
   conversion and stacking (what a Dataset + collate does).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vision.config import Config, load_config
from vision.engines.train import TrainingData, _autocast, fit
from vision.networks.losses import LesaNetLoss, class_weights, label_similarity, sample_triplets
from vision.networks.model import LesaNet, count_parameters

ROOT = Path(__file__).resolve().parents[1]
C = 171


def synthetic_labels(n: int, gen: torch.Generator) -> torch.Tensor:
    """Label sets with DeepLesion-like density (a few body parts + types per lesion, expanded)."""
    probs = torch.full((C,), 0.01)
    probs[:12] = 0.3  # frequent coarse labels (chest, abdomen, lung, lymph node, ...)
    return torch.rand(n, C, generator=gen) < probs


def synthetic_data(n: int, gen: torch.Generator, val: int = 0) -> TrainingData:
    patches = torch.randint(0, 256, (n + val, 3, 120, 120), dtype=torch.uint8, generator=gen)
    xy = torch.randint(10, 70, (n + val, 2), generator=gen).float()
    size = torch.randint(8, 40, (n + val, 1), generator=gen).float()
    boxes = torch.cat([xy, xy + size], 1)
    positive = synthetic_labels(n + val, gen)
    positive[:, 0] = True  # at least one positive per lesion
    return TrainingData(
        patches,
        boxes,
        positive,
        torch.ones(n + val, C),
        positive.clone(),
        torch.arange(n),
        torch.arange(n, n + val),
        [f"label{i}" for i in range(C)],
        "bench",
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_step(config: Config, batch: int, steps: int, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LesaNet(config.model, C).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    data = synthetic_data(batch, gen)
    x, boxes = data.patches.to(device), data.boxes.to(device)
    positive, weight = data.positive.to(device), data.weight.to(device)
    betas = class_weights(positive, weight)
    loss_fn = LesaNetLoss(
        config.loss,
        type(betas)(betas.positive.to(device), betas.negative.to(device)),
        generator=torch.Generator(device=device).manual_seed(0),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with _autocast(device, config.train.bf16):
            out = model(x, boxes)
        parts = loss_fn(out, positive, weight, positive, config.model.spl)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    rss_before = peak_rss_mb()
    step()  # warm-up (allocator, autotuning)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / steps
    if cuda:
        memory = f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    else:
        memory = f"peak RSS {peak_rss_mb():.0f} MB (before the first step {rss_before:.0f} MB)"
    print(
        f"[step] {config.name}: {count_parameters(model) / 1e6:.2f} M params, batch {batch} on {device}: "
        f"{seconds * 1000:.0f} ms/step, {batch / seconds:.1f} lesions/s, {memory}"
    )


def bench_epoch(config: Config, lesions: int, device: torch.device) -> float:
    gen = torch.Generator().manual_seed(1)
    data = synthetic_data(lesions, gen, val=lesions // 10)
    config = config.with_epochs(1)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        fit(config, data, Path(tmp) / "run", device=str(device), progress=False)
        seconds = time.perf_counter() - began
        import json

        metrics = json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    rate = metrics["lesions_per_s"]
    print(
        f"[epoch] {config.name}: {lesions} lesions (+{lesions // 10} val) on {device}: training "
        f"{metrics['seconds']:.1f} s = {rate:.1f} lesions/s; with validation + checkpoint {seconds:.1f} s"
    )
    return rate


def sample_triplets_loop(positive: np.ndarray, count: int, theta: float, rng: np.random.Generator):
    """The original design: one Python iteration (and numpy calls) per triplet."""
    sim = label_similarity(torch.from_numpy(positive)).numpy()
    n = sim.shape[0]
    triplets: list[tuple[int, int, int]] = []
    tries = 0
    while len(triplets) < count and tries < 100 * count:
        tries += 1
        a = int(rng.integers(n))
        candidates_b = np.flatnonzero((sim[a] >= theta) & (np.arange(n) != a))
        if candidates_b.size == 0:
            continue
        b = int(rng.choice(candidates_b))
        candidates_c = np.flatnonzero(sim[a] < sim[a, b])
        if candidates_c.size == 0:
            continue
        triplets.append((a, b, int(rng.choice(candidates_c))))
    return triplets


def bench_triplets(device: torch.device, batch: int = 128, count: int = 5000) -> None:
    gen = torch.Generator().manual_seed(2)
    positive = synthetic_labels(batch, gen)
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    looped = sample_triplets_loop(positive.numpy(), count, 1.0, rng)
    loop_s = time.perf_counter() - began
    sim = label_similarity(positive)
    assert all(sim[a, b] >= 1 and sim[a, c] < sim[a, b] for a, b, c in looped[:200])
    results = {}
    threads = torch.get_num_threads()
    runs = [("cpu", torch.device("cpu"), threads)]
    if threads > 1:  # the loop is single-threaded: also compare at one thread
        runs.append(("cpu, 1 thread", torch.device("cpu"), 1))
    if device.type == "cuda":
        runs.append((str(device), device, threads))
    for name, dev, n_threads in runs:
        torch.set_num_threads(n_threads)
        pos = positive.to(dev)
        g = torch.Generator(device=dev).manual_seed(0)
        sample_triplets(pos, count, 1.0, g)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(20):
            began = time.perf_counter()
            t = sample_triplets(pos, count, 1.0, g)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        results[name] = float(np.median(times))  # median: robust to a busy shared machine
        assert t.anchor.numel() == count
    torch.set_num_threads(threads)
    print(
        f"[triplets] T={count} on a {batch} x {C} batch: per-triplet Python loop {loop_s * 1000:.1f} ms "
        f"({len(looped)} triplets)"
    )
    for name, seconds in results.items():
        print(
            f"[triplets] vectorised on {name}: {seconds * 1000:.2f} ms (median of 20) -> "
            f"{loop_s / seconds:.0f}x faster than the loop"
        )


def bench_gather(device: torch.device, batch: int = 128, cache_size: int = 2048) -> None:
    gen = torch.Generator().manual_seed(3)
    cache = torch.randint(0, 256, (cache_size, 3, 120, 120), dtype=torch.uint8, generator=gen)
    resident = cache.to(device)
    idx = torch.randperm(cache_size, generator=gen)[:batch]
    idx_dev = idx.to(device)
    reps = 10

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    began = time.perf_counter()
    for _ in range(reps):
        x = resident[idx_dev].float() - 50.0
    sync()
    indexed = (time.perf_counter() - began) / reps
    began = time.perf_counter()
    for _ in range(reps):
        x = torch.stack([cache[int(i)].float() - 50.0 for i in idx]).to(device)
    sync()
    per_sample = (time.perf_counter() - began) / reps
    del x
    print(
        f"[gather] batch {batch} from a {cache_size}-lesion uint8 cache on {device}: index {indexed * 1000:.2f} ms, "
        f"per-sample Python + stack {per_sample * 1000:.2f} ms (per-sample / index = {per_sample / indexed:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="paper-config step batch (default 128 GPU, 16 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 GPU, 2 CPU)")
    parser.add_argument(
        "--epoch-lesions", type=int, default=None, help="lesions for the epoch figure (default 19,000 GPU, 512 CPU)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    paper = load_config(ROOT / "configs" / "paper.yaml")
    small = load_config(ROOT / "configs" / "cpu-small.yaml")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if cuda else f", {torch.get_num_threads()} threads")
        + f", {os.cpu_count()} CPUs, load average {load}"
    )
    bench_triplets(device)
    bench_gather(device)
    bench_step(paper, args.batch or (128 if cuda else 16), args.steps or (20 if cuda else 2), device)
    lesions = args.epoch_lesions or (19_000 if cuda else 512)
    bench_epoch(small, lesions, device)
    if cuda:
        rate = bench_epoch(paper, lesions, device)
        print(
            f"[schedule] paper: 15 epochs x 19,000 lesions at {rate:.0f} lesions/s = "
            f"{15 * 19_000 / rate / 60:.1f} min of training (target < 5 min)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
