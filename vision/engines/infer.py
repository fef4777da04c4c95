"""Prediction with a trained run: load, preprocess like training, score, decide, expand.

Every input path ends in the same cache-format patch (``vision.data.preprocess.lesion_patch``,
the function the patch cache is built with), so a lesion scores the same whether it
comes from the cache, a DeepLesion PNG series or a CT volume; reading and placing the
input lesions is ``vision.data.inputs`` / ``vision.data.locate`` / ``vision.data.manifest``.

Decisions use the run's calibrated thresholds (``RUN/thresholds.json``; 0.5 before
calibration). A decided label implies its ontology ancestors (expansion); labels are
listed most specific first (decided ones first), as in the paper's Fig. 4. Output
records follow "Prediction records" in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ontology import load_ontology
from ontology.protocol import OntologyLike
from vision.data.cache import CacheSelection, PatchCache
from vision.data.inputs import LesionInput, PredictError, input_patches
from vision.engines.checkpoint import CheckpointError, RunInfo, load_run, read_run_info
from vision.metrics.decisions import consistent_decisions, expand_decisions
from vision.metrics.multilabel import DEFAULT_THRESHOLD, decide_thresholds
from vision.metrics.thresholds import read_thresholds
from vision.networks.model import MODEL_VERSION, LesaNet

# --------------------------------------------------------------------------- the predictor


@dataclass
class Predictor:
    """A loaded run with its thresholds and the ontology used for expansion and ordering."""

    model: LesaNet
    info: RunInfo
    thresholds: np.ndarray
    calibrated: bool
    onto: OntologyLike
    device: torch.device
    exclusive: np.ndarray | None = None  # C × C when exclusive-label filtering is on
    _iris: dict[str, str] = field(default_factory=dict)

    @property
    def term_list(self) -> list[str]:
        return self.info.term_list

    def iri(self, name: str) -> str:
        if name not in self._iris:
            self._iris[name] = str(self.onto.iri(name))
        return self._iris[name]

    def model_block(self) -> dict[str, Any]:
        return {
            "name": self.info.model_name,
            "version": self.info.model_version,
            "checkpoint_sha256": self.info.checkpoint_sha256,
            "config": self.info.config.name,
        }


def load_predictor(
    run_dir: str | Path,
    device: str | None = None,
    onto: OntologyLike | None = None,
    exclusive_filter: bool = False,
    use_thresholds: bool = True,
) -> Predictor:
    """Load a run for prediction; refuses runs of another model version or label list.

    ``use_thresholds=False`` ignores RUN/thresholds.json (about to be recalibrated).
    """
    if onto is None:
        onto = load_ontology()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    version = read_run_info(run_dir).model_version
    if version != MODEL_VERSION:  # checked before the weights, whose layout may have changed too
        raise CheckpointError(
            f"{run_dir}: run made by LesaNet {version or '?'}, this toolkit reads {MODEL_VERSION}; "
            "retrain with this version"
        )
    model, info = load_run(run_dir, device=dev)
    unknown = [name for name in info.term_list if name not in onto.terms]
    if unknown:
        raise CheckpointError(
            f"{run_dir}: label {unknown[0]!r} of the run is not in ontology {onto.version}; "
            "use the ontology the run was trained with (--ontology)"
        )
    thresholds = read_thresholds(run_dir, info.term_list, info.checkpoint_sha256) if use_thresholds else None
    calibrated = thresholds is not None
    if thresholds is None:
        thresholds = np.full(len(info.term_list), DEFAULT_THRESHOLD)
    exclusive = onto.exclusive_matrix(info.term_list) if exclusive_filter else None
    return Predictor(model, info, thresholds, calibrated, onto, dev, exclusive)


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Scored:
    """Label probabilities (sigmoid of the final scores s̃) and embeddings, per lesion."""

    probs: np.ndarray  # float32 N × C
    embeddings: np.ndarray  # float32 N × D


@torch.inference_mode()
def score_patches(
    model: LesaNet,
    patches: np.ndarray,
    boxes: np.ndarray,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> Scored:
    """Score cache-format patches (uint8 N × 3 × P × P) with boxes (N × 4, patch pixels)."""
    model.eval()
    device = device or next(model.parameters()).device
    n = len(patches)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) != n:
        raise PredictError(f"{n} patches but {len(boxes)} boxes")
    probs = np.empty((n, model.num_labels), dtype=np.float32)
    embeddings = np.empty((n, model.config.embed_dim), dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = torch.from_numpy(np.ascontiguousarray(patches[start:stop])).to(device)
        b = torch.from_numpy(boxes[start:stop]).to(device)
        out = model(x, b)
        probs[start:stop] = torch.sigmoid(out.scores_spl).float().cpu().numpy()
        embeddings[start:stop] = out.embedding.float().cpu().numpy()
    return Scored(probs, embeddings)


# --------------------------------------------------------------------------- decisions -> records


def decide(predictor: Predictor, probs: np.ndarray) -> np.ndarray:
    """Threshold decisions, expanded (a child implies its parents), optionally kept free of
    exclusive pairs."""
    decisions = decide_thresholds(probs, predictor.thresholds)
    if predictor.exclusive is not None:
        return consistent_decisions(probs, decisions, predictor.term_list, predictor.onto, predictor.exclusive)
    return expand_decisions(decisions, predictor.term_list, predictor.onto)


def label_entries(predictor: Predictor, probs: np.ndarray, decisions: np.ndarray) -> list[dict[str, Any]]:
    """Every label of one lesion: decided ones most specific first, then the rest by score."""
    names = predictor.term_list
    decided = [names[c] for c in np.flatnonzero(decisions)]
    score_of = {name: float(probs[c]) for c, name in enumerate(names)}
    # Among equally specific labels the higher score comes first.
    by_score = sorted(decided, key=lambda n: -score_of[n])
    ordered = predictor.onto.sort_specific_first(by_score)
    rest = sorted((n for n in names if n not in set(decided)), key=lambda n: -score_of[n])
    column = {name: c for c, name in enumerate(names)}
    entries = []
    for name in [*ordered, *rest]:
        c = column[name]
        entries.append(
            {
                "label": name,
                "iri": predictor.iri(name),
                "score": round(float(probs[c]), 6),
                "threshold": round(float(predictor.thresholds[c]), 6),
                "decision": bool(decisions[c]),
            }
        )
    return entries


def prediction_record(
    predictor: Predictor,
    lesion_id: str,
    source: Mapping[str, Any],
    probs: np.ndarray,
    decisions: np.ndarray,
    neighbors: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One prediction record (docs/architecture.md, "Prediction records")."""
    return {
        "lesion_id": lesion_id,
        "source": dict(source),
        "labels": label_entries(predictor, probs, decisions),
        "model": predictor.model_block(),
        "ontology_version": str(predictor.onto.version),
        "neighbors": list(neighbors or []),
    }


def decided_labels(record: Mapping[str, Any]) -> list[str]:
    """The decided label names of a record, in record order (most specific first)."""
    return [entry["label"] for entry in record["labels"] if entry["decision"]]


# --------------------------------------------------------------------------- the patch cache


def check_cache_labels(predictor_terms: Sequence[str], selection: CacheSelection) -> None:
    if list(predictor_terms) != selection.term_list:
        raise PredictError(
            f"{selection.path}: the cache's label list differs from the run's; use a cache built with the run's labels"
        )


def score_selection(
    model: LesaNet,
    selection: CacheSelection,
    batch_size: int = 64,
    device: torch.device | None = None,
    chunk_rows: int = 4096,
) -> Scored:
    """Score the chosen cache rows, reading the memory map in sorted chunks (bounded memory)."""
    rows = selection.rows
    probs = np.empty((rows.size, model.num_labels), np.float32)
    embeddings = np.empty((rows.size, model.config.embed_dim), np.float32)
    order = np.argsort(rows, kind="stable")
    boxes = selection.boxes()
    for start in range(0, rows.size, chunk_rows):
        chunk = order[start : start + chunk_rows]
        scored = score_patches(model, np.asarray(selection.patches[rows[chunk]]), boxes[chunk], batch_size, device)
        probs[chunk], embeddings[chunk] = scored.probs, scored.embeddings
    return Scored(probs, embeddings)


class RowView:
    """Patches of chosen cache rows, read from the memory map only when indexed."""

    def __init__(self, patches: np.ndarray, rows: np.ndarray) -> None:
        self._patches, self._rows = patches, rows

    def __len__(self) -> int:
        return int(self._rows.size)

    def __getitem__(self, item: int | slice) -> np.ndarray:
        return np.asarray(self._patches[self._rows[item]])


def cache_source(record: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    source: dict[str, Any] = {
        "dataset": dataset,
        "lesion_idx": int(record["lesion_idx"]),
        "split": record.get("split"),
        "box_patch_px": [float(v) for v in record["box"]],
    }
    for key in ("file", "slice", "box_px", "spacing_mm"):
        if record.get(key) is not None:
            source[key] = record[key]
    return source


def predict_cache_full(
    predictor: Predictor, cache: str | Path, split: str = "test", batch_size: int = 64, dataset: str = "deeplesion"
) -> Prediction:
    """Records of a cache split plus the patches, boxes and embeddings (for figures and retrieval).

    Lesion ids are ``deeplesion/<DL_info row>`` (the cache's lesions are DeepLesion-format
    rows); ``dataset`` names where they come from (``deeplesion``, ``phantom``, ...).
    """
    selection = PatchCache(cache).select(split)
    check_cache_labels(predictor.term_list, selection)
    scored = score_selection(predictor.model, selection, batch_size, predictor.device)
    decisions = decide(predictor, scored.probs)
    records = [
        prediction_record(
            predictor,
            f"deeplesion/{record['lesion_idx']}",
            cache_source(record, dataset),
            scored.probs[i],
            decisions[i],
        )
        for i, record in enumerate(selection.records)
    ]
    return Prediction(records, RowView(selection.patches, selection.rows), selection.boxes(), scored, selection.records)


def predict_cache(
    run_dir: str | Path | Predictor,
    cache: str | Path,
    split: str = "test",
    batch_size: int = 64,
    dataset: str = "deeplesion",
) -> list[dict[str, Any]]:
    """Prediction records for every lesion of a cache split (``hand`` = test lesions with truth)."""
    predictor = run_dir if isinstance(run_dir, Predictor) else load_predictor(run_dir)
    return predict_cache_full(predictor, cache, split, batch_size, dataset).records


@dataclass
class Prediction:
    """Records plus what figures and retrieval need (patches, boxes, embeddings)."""

    records: list[dict[str, Any]]
    patches: np.ndarray | RowView  # uint8 N × 3 × P × P
    boxes: np.ndarray
    scored: Scored
    cache_records: list[dict[str, Any]] | None = None  # the cache index entries, for cache inputs


def predict_inputs(
    predictor: Predictor, inputs: Sequence[LesionInput], batch_size: int = 64, warn: Callable[[str], None] | None = None
) -> Prediction:
    """Preprocess, score, decide and build one record per input lesion."""
    if not inputs:
        raise PredictError("no lesions to predict")
    patches, boxes = input_patches(inputs, warn)
    return predict_patches(
        predictor, [item.lesion_id for item in inputs], [item.source for item in inputs], patches, boxes, batch_size
    )


def predict_patches(
    predictor: Predictor,
    lesion_ids: Sequence[str],
    sources: Sequence[Mapping[str, Any]],
    patches: np.ndarray,
    boxes: np.ndarray,
    batch_size: int = 64,
) -> Prediction:
    """Score already preprocessed patches (e.g. a manifest's, vision.data.manifest) in batches."""
    if not len(lesion_ids):
        raise PredictError("no lesions to predict")
    scored = score_patches(predictor.model, patches, boxes, batch_size, predictor.device)
    decisions = decide(predictor, scored.probs)
    records = [
        prediction_record(predictor, lesion_id, source, scored.probs[i], decisions[i])
        for i, (lesion_id, source) in enumerate(zip(lesion_ids, sources))
    ]
    return Prediction(records, patches, boxes, scored)
