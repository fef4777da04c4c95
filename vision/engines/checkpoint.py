"""Run directories: model weights (safetensors), run.json, and the resumable training state.

Layout (docs/architecture.md, "Run directory"):

- ``checkpoint.safetensors`` - model weights, never a pickle;
- ``run.json`` - config, term list, ontology version, model name/version, epoch and the
  checkpoint's sha256;
- ``train_state.pt`` - everything ``--resume`` needs in one file (epoch, model and
  optimizer state, config, term list, metrics so far); tensors, numbers and strings only,
  read with ``torch.load(weights_only=True)``. No RNG state is needed: training seeds its
  generators per epoch.

Every file is written to a temp file in the same folder and renamed into place, so a
kill leaves the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ontology.errors import LesanetError
from ontology.files import atomic_path, read_json, write_bytes_atomic, write_json_atomic
from vision.config import Config, ConfigError, config_from_dict
from vision.networks.model import MODEL_NAME, MODEL_VERSION, LesaNet

CHECKPOINT_FILE = "checkpoint.safetensors"
RUN_FILE = "run.json"
TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


class CheckpointError(LesanetError, ValueError):
    """A run directory that cannot be used as asked (one line, says what to do)."""


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says about a trained model."""

    run_dir: Path
    config: Config
    term_list: list[str]
    ontology_version: str
    epoch: int
    checkpoint_sha256: str
    model_name: str
    model_version: str


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the JSON header's keys sorted.

    The library writes its header from a hash map, so the same weights come out with their
    header keys (tensors, metadata) in another order on each call, and another sha256; a
    bit-identical retrain must give the same checkpoint hash (retrieval and thresholds
    name the checkpoint by it). The tensors' bytes and offsets are untouched; only the
    header is rewritten (sorted, padded with spaces to 8 bytes as the format allows)."""
    raw = save(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def save_checkpoint(
    run_dir: str | Path, model: LesaNet, config: Config, term_list: list[str], ontology_version: str, epoch: int
) -> RunInfo:
    """Write the weights, then run.json pointing at them by sha256; returns the new RunInfo."""
    run_dir = Path(run_dir)
    if len(term_list) != model.num_labels:
        raise CheckpointError(f"term list has {len(term_list)} labels but the model has {model.num_labels}")
    # safetensors needs contiguous tensors (channels_last weights on CUDA are not).
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"model": MODEL_NAME, "version": MODEL_VERSION, "num_labels": str(model.num_labels)}
    data = canonical_safetensors(tensors, metadata)
    write_bytes_atomic(run_dir / CHECKPOINT_FILE, data)
    sha = file_sha256(run_dir / CHECKPOINT_FILE)
    run = {
        "config": config.to_dict(),
        "term_list": list(term_list),
        "ontology_version": ontology_version,
        "model": {"name": MODEL_NAME, "version": MODEL_VERSION},
        "epoch": int(epoch),
        "checkpoint_sha256": sha,
    }
    write_json_atomic(run_dir / RUN_FILE, run)
    return read_run_info(run_dir)


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Parse and validate ``run.json`` (no weights loaded)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no run.json - is {run_dir} a training run directory (lesanet train -o DIR)?")
    run = read_json(path, CheckpointError, "run.json")
    required = ["config", "term_list", "ontology_version", "model", "epoch", "checkpoint_sha256"]
    missing = [k for k in required if k not in run] if isinstance(run, dict) else required
    if missing:
        raise CheckpointError(f"{path}: run.json lacks {', '.join(missing)}")
    name = run["model"].get("name") if isinstance(run["model"], dict) else None
    if name != MODEL_NAME:
        raise CheckpointError(f"{path}: model {name!r} is not {MODEL_NAME}; this loader reads LesaNet runs only")
    try:
        config = config_from_dict(run["config"], f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return RunInfo(
        run_dir=run_dir,
        config=config,
        term_list=[str(t) for t in run["term_list"]],
        ontology_version=str(run["ontology_version"]),
        epoch=int(run["epoch"]),
        checkpoint_sha256=str(run["checkpoint_sha256"]),
        model_name=name,
        model_version=str(run["model"].get("version", "")),
    )


def _first_difference(expected: list[str], found: list[str]) -> str:
    if len(expected) != len(found):
        return f"{len(found)} labels instead of {len(expected)}"
    for i, (a, b) in enumerate(zip(expected, found)):
        if a != b:
            return f"label {i} is {b!r}, expected {a!r}"
    return "same labels"  # pragma: no cover - only called on a difference


def load_run(
    run_dir: str | Path,
    term_list: list[str] | None = None,
    device: str | torch.device = "cpu",
    expect_model: Config | None = None,
) -> tuple[LesaNet, RunInfo]:
    """Load a trained LesaNet (eval mode) and its run info.

    Refuses, with one clear line: a checkpoint whose tensors do not fit the architecture in
    run.json (or ``expect_model``'s), a checkpoint changed after run.json was written, and
    a label list different from ``term_list`` when given.
    """
    info = read_run_info(run_dir)
    path = info.run_dir / CHECKPOINT_FILE
    if term_list is not None and list(term_list) != info.term_list:
        raise CheckpointError(
            f"{info.run_dir}: the model was trained on another label list "
            f"({_first_difference(list(term_list), info.term_list)}); use a run trained on these labels"
        )
    if expect_model is not None and expect_model.model != info.config.model:
        raise CheckpointError(
            f"{info.run_dir}: architecture mismatch: run has {info.config.model}, expected {expect_model.model}"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the run has no saved weights yet")
    sha = file_sha256(path)
    if sha != info.checkpoint_sha256:
        raise CheckpointError(
            f"{path}: sha256 {sha[:12]} does not match run.json ({info.checkpoint_sha256[:12]}); "
            "the weights were replaced after training - retrain or restore the file"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    model = LesaNet(info.config.model, len(info.term_list))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected {unexpected[0]}"
            if unexpected
            else f"{wrong[0]} is {tuple(tensors[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}"
        )
        raise CheckpointError(
            f"{path}: weights do not fit the architecture in run.json ({detail}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong shapes)"
        )
    model.load_state_dict(tensors)
    return model.to(device).eval(), info


def save_train_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """The resume state (tensors, numbers and strings only), written atomically."""
    with atomic_path(Path(run_dir) / TRAIN_STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from; train without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal is one clear line
        raise CheckpointError(
            f"{path}: unreadable training state ({type(exc).__name__}); train again without --resume"
        ) from None


def last_epoch_line(run_dir: str | Path) -> str:
    """The run's last ``metrics.jsonl`` entry in one line: epoch, loss, validation AUC / F1."""
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    auc, f1 = last.get("val_mean_auc"), last.get("val_mean_f1")
    val = f", val mean AUC {auc:.3f}, mean F1 {f1:.3f}" if auc is not None and f1 is not None else ""
    return f"epoch {last.get('epoch', 0)}, loss {last.get('loss', float('nan')):.4f}{val}"
