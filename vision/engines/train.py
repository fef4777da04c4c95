"""Training LesaNet from the patch cache: one process, or many under ``torchrun`` (DDP).

The data path is built for speed: the lesions used are one ``uint8`` tensor on the
training device (or in pinned host memory when the GPU is too small), batches are drawn
by index on the device, the model turns uint8 into mean-subtracted floats itself, and
targets live on the device next to the patches. No PNG is read and no per-sample Python
runs in the loop.

Reproducibility: the batch order and the loss sampling of epoch ``e`` come from
generators seeded by (seed, e, rank), and checkpoints are written at epoch ends with the
optimizer state, so ``--resume`` after a kill continues from the last finished epoch and
ends with the same weights as an uninterrupted run (on CPU, where kernels are
deterministic).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torchvision.ops  # noqa: F401  (roi_align's meta kernels for torch.compile, deterministic CUDA fallback)
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ontology import UnknownLabelError, load_ontology
from ontology.errors import LesanetError
from ontology.files import write_text_atomic
from ontology.logs import get_logger
from ontology.protocol import OntologyLike
from vision.config import Config, config_from_dict
from vision.data.cache import PatchCache
from vision.data.labels import build_targets
from vision.engines.checkpoint import (
    METRICS_FILE,
    RUN_FILE,
    TRAIN_STATE_FILE,
    CheckpointError,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from vision.metrics.multilabel import average_metrics, label_metrics
from vision.networks.losses import ClassWeights, LesaNetLoss, LossParts, class_weights
from vision.networks.model import LesaNet

# Use at most this share of free GPU memory for the resident patch cache.
GPU_CACHE_SHARE = 0.5


log = get_logger(__name__)


class TrainError(LesanetError, ValueError):
    """Training cannot start with these inputs (one line, says what to do)."""


@dataclass
class TrainingData:
    """Everything the loop needs, already as tensors (host or device).

    ``patches`` uint8 L x 3 x P x P; ``boxes`` float L x 4; ``positive``/``reliable`` bool
    L x C; ``weight`` float L x C; ``train_rows``/``val_rows`` index the L lesions.
    """

    patches: Tensor
    boxes: Tensor
    positive: Tensor
    weight: Tensor
    reliable: Tensor
    train_rows: Tensor
    val_rows: Tensor
    term_list: list[str]
    ontology_version: str
    finer: Tensor | None = None  # C x C, finer[j, k]: label k is an ancestor of label j (WARP)


# --------------------------------------------------------------------------- inputs


def ancestor_matrix(term_list: list[str], onto: OntologyLike) -> Tensor:
    """C x C bool, [j, k] = label k is an ontology ancestor of label j (coarser than j)."""
    position = {name: i for i, name in enumerate(term_list)}
    finer = torch.zeros(len(term_list), len(term_list), dtype=torch.bool)
    for j, name in enumerate(term_list):
        for ancestor in onto.ancestors(name):
            if ancestor in position:
                finer[j, position[ancestor]] = True
    return finer


def _check_labels(term_list: list[str], onto: OntologyLike, where: str) -> None:
    """Every label of the cache must be an ontology term under its own name."""
    for i, name in enumerate(term_list):
        try:
            term = onto.term(name)
        except UnknownLabelError as exc:
            raise TrainError(
                f"{where}: label {i} {name!r} is not in ontology {onto.version} ({exc}); "
                "rebuild the cache with this ontology or pass the ontology it was built with"
            ) from None
        if term.name != name:
            raise TrainError(
                f"{where}: label {i} {name!r} is a synonym of {term.name!r} in ontology "
                f"{onto.version}; rebuild the cache with this ontology"
            )


def load_training_data(config: Config, cache_path: str | Path, onto: OntologyLike | None = None) -> TrainingData:
    """Read the cache, build targets with the ontology, keep train (>= min positives) and val lesions."""
    if onto is None:
        onto = load_ontology()
    cache_path = Path(cache_path)
    cache = PatchCache(cache_path)
    patches, term_list, cache_ontology, records = (
        cache.patches,
        list(cache.term_list),
        cache.ontology_version,
        cache.records,
    )
    _check_labels(term_list, onto, str(cache_path / "index.json"))
    if cache_ontology != onto.version:
        log.warning("%s was built with ontology %s; training with %s", cache_path, cache_ontology, onto.version)
    size = config.model.patch_size
    if patches.shape[2:] != (size, size):
        raise TrainError(
            f"{cache_path}: patches are {patches.shape[2]}x{patches.shape[3]}, "
            f"config {config.name} expects {size}x{size}"
        )
    targets = build_targets(records, term_list, onto, positives=config.labels.positives, expand=config.labels.expand)
    positive = np.asarray(targets.positive, dtype=bool)
    split = np.array([r["split"] for r in records])
    enough = positive.sum(1) >= config.train.min_positives
    train_idx = np.flatnonzero((split == "train") & enough)
    val_idx = np.flatnonzero(split == "val")
    if train_idx.size < 2:
        raise TrainError(
            f"{cache_path}: {train_idx.size} training lesions with >= "
            f"{config.train.min_positives} positive label(s); need at least 2"
        )
    keep = np.concatenate([train_idx, val_idx])
    # One sorted read of the rows used; the hot loop never touches the memmap.
    rows = np.asarray(patches[np.sort(keep)]) if keep.size else np.empty((0, 3, size, size), np.uint8)
    order = np.argsort(np.argsort(keep))  # position of each kept row in the sorted read
    boxes = np.array([records[i]["box"] for i in keep], dtype=np.float32).reshape(-1, 4)
    return TrainingData(
        patches=torch.from_numpy(np.ascontiguousarray(rows[order])),
        boxes=torch.from_numpy(boxes),
        positive=torch.from_numpy(positive[keep]),
        weight=torch.from_numpy(np.asarray(targets.weight, dtype=np.float32)[keep]),
        reliable=torch.from_numpy(np.asarray(targets.reliable, dtype=bool)[keep]),
        train_rows=torch.arange(train_idx.size),
        val_rows=torch.arange(train_idx.size, keep.size),
        term_list=term_list,
        ontology_version=str(onto.version),
        finer=ancestor_matrix(term_list, onto) if config.loss.classification == "warp" else None,
    )


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int
    world: int
    started_group: bool  # we initialised the process group and must tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _place(device: str | None) -> Placement:
    """Device and DDP rank from the torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        started = True
    return Placement(dev, rank, world, started)


def _to_device(data: TrainingData, device: torch.device) -> TrainingData:
    """Targets always on the device; patches too when they fit (else pinned host memory)."""
    moved = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    for name in ("boxes", "positive", "weight", "reliable", "train_rows", "val_rows"):
        moved[name] = moved[name].to(device)
    if data.finer is not None:
        moved["finer"] = data.finer.to(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if data.patches.numel() <= GPU_CACHE_SHARE * free:
            moved["patches"] = data.patches.to(device)
        else:
            moved["patches"] = data.patches.pin_memory()
    return TrainingData(**moved)


def _epoch_generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream): resuming needs no RNG state."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + epoch * 10_007 + stream)
    return gen


# --------------------------------------------------------------------------- loop


def _lr_at(config: Config, epoch: int) -> float:
    t = config.train
    return t.lr * (t.lr_decay if epoch >= t.lr_step_epoch else 1.0)


def _batches(rows: Tensor, batch_size: int, generator: torch.Generator, world: int = 1) -> Iterator[Tensor]:
    """Shuffled global index batches. A short last batch that would leave some process with
    fewer than two lesions (BatchNorm needs two) is dropped by every process alike, so the
    DDP processes never disagree on the number of steps."""
    order = rows[torch.randperm(rows.numel(), generator=generator, device=generator.device).to(rows.device)]
    for start in range(0, order.numel(), batch_size):
        batch = order[start : start + batch_size]
        if batch.numel() >= 2 * world:
            yield batch


def _gather(data: TrainingData, batch: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    if data.patches.device == device:
        return data.patches[batch], data.boxes[batch]
    rows = batch.cpu()
    return data.patches[rows].to(device, non_blocking=True), data.boxes[batch]


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LesaNetLoss,
    data: TrainingData,
    rows: Tensor,
    config: Config,
    device: torch.device,
) -> LossParts:
    """One optimisation step on the lesions ``rows``: the body of the training loop, also
    what bench/gpu.py times (eager, or with ``net`` wrapped by DDP or torch.compile)."""
    x, boxes = _gather(data, rows, device)
    with _autocast(device, config.train.bf16):
        out = net(x, boxes)
    parts = loss_fn(out, data.positive[rows], data.weight[rows], data.reliable[rows], config.model.spl)
    optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.train.grad_clip)
    optimizer.step()
    return parts


@torch.no_grad()
def predict_scores(
    model: LesaNet, patches: Tensor, boxes: Tensor, batch_size: int = 256, device: torch.device | None = None
) -> Tensor:
    """Sigmoid of the final scores (s~) for every lesion, as a float CPU tensor N x C."""
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    autocast = _autocast(device, True)
    for start in range(0, patches.shape[0], batch_size):
        x = patches[start : start + batch_size].to(device, non_blocking=True)
        with autocast:
            scores = model(x, boxes[start : start + batch_size].to(device)).scores_spl
        out.append(torch.sigmoid(scores.float()).cpu())
    return torch.cat(out) if out else torch.empty(0, model.num_labels)


def _autocast(device: torch.device, enabled: bool) -> Any:
    # bf16 autocast helps on CUDA (tensor cores); on CPU it is slower than float32.
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def validate(model: LesaNet, data: TrainingData, device: torch.device, batch_size: int) -> dict[str, float | None]:
    """Mean AUC and mean per-class F1 (threshold 0.5) on the validation lesions."""
    rows = data.val_rows
    if rows.numel() == 0:
        return {}
    patch_rows = rows if data.patches.device == rows.device else rows.cpu()
    scores = predict_scores(model, data.patches[patch_rows], data.boxes[rows], batch_size, device).numpy()
    positive = data.positive[rows].cpu().numpy()
    mask = (data.weight[rows] > 0).cpu().numpy()
    metrics = label_metrics(scores, positive, scores >= 0.5, mask)
    avg = average_metrics(metrics)
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731 - no NaN in JSON lines
    figures: dict[str, float | None] = {
        "mean_auc": finite(avg.auc),
        "mean_f1": finite(avg.f1),
        "labels_evaluated": avg.n_labels,
    }
    return figures


def _write_metrics(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    write_text_atomic(run_dir / METRICS_FILE, "".join(json.dumps(line) + "\n" for line in lines))


def fit(
    config: Config,
    data: TrainingData,
    run_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> Path:
    """Train on prepared tensors; writes checkpoint, run.json, train_state.pt, metrics.jsonl.

    ``stop_after_epoch`` ends the call once that many epochs are complete, as a kill would
    (the next ``resume=True`` call carries on).
    """
    run_dir = Path(run_dir)
    place = _place(device)
    try:
        return _fit(config, data, run_dir, resume, place, progress, stop_after_epoch)
    finally:
        if place.started_group:
            dist.destroy_process_group()


def _fit(
    config: Config,
    data: TrainingData,
    run_dir: Path,
    resume: bool,
    place: Placement,
    progress: bool,
    stop_after_epoch: int | None,
) -> Path:
    t = config.train
    dev = place.device
    if place.world > 1 and t.batch_size % place.world:
        raise TrainError(f"train.batch_size {t.batch_size} is not divisible by the {place.world} DDP processes")
    start_epoch, history = 0, cast(list[dict[str, Any]], [])
    if resume and not (run_dir / TRAIN_STATE_FILE).exists() and not (run_dir / RUN_FILE).exists():
        # killed before its first epoch ended: nothing was kept, so resuming is starting
        if place.is_main:
            log.warning(
                "%s has no finished epoch to resume (the run stopped during its first epoch); starting it from epoch 1",
                run_dir,
            )
        resume = False
    if resume:
        model, start_epoch, history, opt_state = _resume_state(config, data, run_dir, place.is_main)
    else:
        if (run_dir / RUN_FILE).exists() or (run_dir / TRAIN_STATE_FILE).exists():
            raise TrainError(
                f"{run_dir}: already holds a training run; use --resume to continue it "
                "or choose another output directory"
            )
        torch.manual_seed(t.seed)
        model, opt_state = LesaNet(config.model, len(data.term_list)), None
    cuda = dev.type == "cuda"
    model.to(dev)
    if cuda and t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    net: torch.nn.Module = model
    if place.world > 1:
        # Unused branches (embedding without the triplet loss, ...) need DDP's unused-parameter scan.
        unused = not (config.loss.triplet and config.model.spl)
        net = DistributedDataParallel(model, device_ids=[dev.index] if cuda else None, find_unused_parameters=unused)
    data = _to_device(data, dev)
    train_rows = data.train_rows
    betas = class_weights(data.positive[train_rows], data.weight[train_rows], config.loss.weight_clamp)
    betas = ClassWeights(betas.positive.to(dev), betas.negative.to(dev))
    local_batch = t.batch_size // place.world
    end_epoch = t.epochs if stop_after_epoch is None else min(t.epochs, stop_after_epoch)
    for epoch in range(start_epoch, end_epoch):
        lr = _lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order_gen = _epoch_generator(t.seed, epoch, 0, dev)
        loss_fn = LesaNetLoss(config.loss, betas, data.finer, _epoch_generator(t.seed, epoch, 1 + place.rank, dev))
        model.train()
        began = time.perf_counter()
        sums: dict[str, Tensor] = {}
        steps, seen = 0, 0
        n_batches = math.ceil(train_rows.numel() / t.batch_size)
        bar = _progress(n_batches, f"epoch {epoch + 1}/{t.epochs}", progress and place.is_main)
        for batch in _batches(train_rows, t.batch_size, order_gen, place.world):
            local = batch[place.rank :: place.world][:local_batch]
            parts = train_step(net, optimizer, loss_fn, data, local, config, dev)
            for key, value in [("loss", parts.total.detach()), *parts.parts.items()]:
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
            seen += local.numel() * place.world
            if bar is not None:
                bar.update(1)
                if steps % 5 == 1:  # .item() syncs the device; not every step
                    bar.set_postfix({k: f"{float(v) / steps:.3f}" for k, v in sums.items()})
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - began
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            **{k: float(v) / max(steps, 1) for k, v in sums.items()},
            "seconds": round(seconds, 3),
            "lesions_per_s": round(seen / seconds, 1) if seconds > 0 else None,
        }
        if place.is_main:
            record.update({f"val_{k}": v for k, v in validate(model, data, dev, 2 * t.batch_size).items()})
            history.append(record)
            # The resume state is one atomic file holding everything, written first; the
            # published checkpoint, run.json and metrics follow and are redone on resume,
            # so a kill between any two writes still resumes exactly.
            save_train_state(run_dir, _train_state(epoch + 1, model, optimizer, config, data, history))
            _publish(run_dir, model, config, data, epoch + 1, history)
            if progress:
                shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
                log.info(json.dumps(shown))
        if place.world > 1:
            dist.barrier()
    return run_dir


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)


def _train_state(
    epoch: int,
    model: LesaNet,
    optimizer: torch.optim.Optimizer,
    config: Config,
    data: TrainingData,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything --resume needs, as tensors, numbers and strings (weights_only-loadable)."""
    return {
        "epoch": epoch,
        "model": {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "config": json.dumps(config.to_dict()),
        "term_list": json.dumps(data.term_list),
        "ontology_version": data.ontology_version,
        "history": json.dumps(history),
    }


def _publish(
    run_dir: Path, model: LesaNet, config: Config, data: TrainingData, epoch: int, history: list[dict[str, Any]]
) -> None:
    save_checkpoint(run_dir, model, config, data.term_list, data.ontology_version, epoch)
    _write_metrics(run_dir, history)


def _resume_state(
    config: Config, data: TrainingData, run_dir: Path, publish: bool
) -> tuple[LesaNet, int, list[dict[str, Any]], dict[str, Any]]:
    """Model, next epoch, metrics so far and optimizer state of an interrupted run."""
    state = load_train_state(run_dir)
    try:
        saved = config_from_dict(json.loads(state["config"]), f"{run_dir / TRAIN_STATE_FILE} (config)")
        term_list = json.loads(state["term_list"])
        history = json.loads(state["history"])
        epoch = int(state["epoch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{run_dir / TRAIN_STATE_FILE}: not a LesaNet training state ({exc}); train again without --resume"
        ) from None
    if saved != config:
        raise TrainError(
            f"{run_dir}: the run was started with config {saved.name!r} and different "
            "settings; resume with the same --config/--epochs or train into another directory"
        )
    if term_list != data.term_list:
        raise TrainError(
            f"{run_dir}: the run was trained on another label set than this cache "
            f"({len(term_list)} vs {len(data.term_list)} labels); use the cache it was trained on"
        )
    model = LesaNet(config.model, len(term_list))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{run_dir / TRAIN_STATE_FILE}: weights do not fit the configured architecture ({str(exc).splitlines()[0]})"
        ) from None
    if publish:  # redo the publication of the last finished epoch (a kill may have cut it short)
        _publish(run_dir, model, config, data, epoch, history)
    return model, epoch, history, state["optimizer"]


def train(
    config: Config,
    cache_path: str | Path,
    run_dir: str | Path,
    epochs: int | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    onto: OntologyLike | None = None,
    stop_after_epoch: int | None = None,
) -> Path:
    """Train LesaNet on a patch cache into ``run_dir``; returns ``run_dir``.

    ``epochs`` shortens the schedule proportionally (the lr step moves with it).
    """
    if epochs is not None:
        config = config.with_epochs(epochs)
    data = load_training_data(config, cache_path, onto)
    return fit(
        config, data, run_dir, resume=resume, device=device, progress=progress, stop_after_epoch=stop_after_epoch
    )
