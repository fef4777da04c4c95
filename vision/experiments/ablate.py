"""The paper's ablation study (Table 1) and its label-subset experiment (Fig. 5).

Each variant is the given config with a few ``SECTION.KEY=VALUE`` overrides (the same
syntax as ``lesanet train --set``); it is trained into its own run directory, calibrated
on val and evaluated on the text-mined test set and, when the cache knows complete truth,
on the hand / complete-truth set.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ontology import load_ontology
from ontology.errors import LesanetError
from ontology.files import write_text_atomic
from ontology.protocol import OntologyLike
from vision.config import Config, apply_overrides
from vision.data.cache import PatchCache
from vision.engines.checkpoint import read_run_info
from vision.engines.infer import load_predictor, score_selection
from vision.engines.retrieval import label_set_similarity, lesion_label_set, make_index
from vision.engines.train import train
from vision.evaluation.evaluate import (
    EvalResult,
    calibrate_thresholds,
    evaluate_run,
    table1_csv,
    table1_markdown,
    table1_rows,
    train_positive_counts,
)
from vision.metrics.multilabel import average_metrics
from vision.reporting.figures import label_subset_figure

# The paper's baseline: the multiscale multilabel CNN without the four additions.
BASELINE = ("model.spl=false", "loss.rhem=false", "loss.triplet=false", "labels.expand=false")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", BASELINE),
    Variant("LesaNet", ()),
    Variant("w/o SPL", ("model.spl=false",)),
    Variant("w/o RHEM", ("loss.rhem=false",)),
    Variant("w/o label expansion", ("labels.expand=false",)),
    Variant("w/o triplet loss", ("loss.triplet=false",)),
    Variant("w/o text-mined filter", ("labels.positives=RUI",)),
    Variant("baseline + WARP", (*BASELINE, "loss.classification=warp")),
)


class AblationError(LesanetError, ValueError):
    """Bad ablation arguments (one line)."""


@dataclass
class AblationOutcome:
    markdown: str
    files: list[Path]
    results: dict[str, list[EvalResult]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def _finished(run_dir: Path, epochs: int) -> bool:
    """A run whose run.json records the last epoch of its schedule."""
    try:
        return read_run_info(run_dir).epoch >= epochs
    except LesanetError:  # no run.json yet, or one a killed run left unreadable: train it (again)
        return False


def _train_variant(
    config: Config, cache: Path, run_dir: Path, epochs: int | None, onto: OntologyLike, progress: bool, resume: bool
) -> None:

    target = epochs if epochs is not None else config.train.epochs
    if resume and _finished(run_dir, target):
        return
    partial = resume and (run_dir / "train_state.pt").exists()
    if not partial and run_dir.exists():
        shutil.rmtree(run_dir)
    train(config, cache, run_dir, epochs=epochs, resume=partial, progress=progress, onto=onto)


def _evaluate_variant(run_dir: Path, cache: Path, onto: OntologyLike, has_truth: bool) -> list[EvalResult]:

    predictor = load_predictor(run_dir, onto=onto)
    calibrate_thresholds(predictor, cache)
    results = [evaluate_run(predictor, cache, "test")]
    if has_truth:
        results.append(evaluate_run(predictor, cache, "hand"))
    return results


def run_ablation(
    config: Config,
    cache: str | Path,
    out_dir: str | Path,
    variants: Sequence[str] | None = None,
    epochs: int | None = None,
    onto: OntologyLike | None = None,
    progress: bool = True,
    resume: bool = False,
) -> AblationOutcome:
    """Train and evaluate each variant; writes ``table1.md``, ``table1.csv``, ``table1.json``."""
    if onto is None:
        onto = load_ontology()
    chosen = list(VARIANTS)
    if variants:
        by_name = {v.name.lower(): v for v in VARIANTS} | {v.slug: v for v in VARIANTS}
        unknown = [name for name in variants if name.lower() not in by_name]
        if unknown:
            raise AblationError(f"unknown variant {unknown[0]!r}; known: {', '.join(v.name for v in VARIANTS)}")
        chosen = [by_name[name.lower()] for name in variants]
    cache, out = Path(cache), Path(out_dir)
    has_truth = PatchCache(cache).select("hand").rows.size > 0
    results: dict[str, list[EvalResult]] = {}
    for variant in chosen:
        variant_config = apply_overrides(config, list(variant.overrides))
        run_dir = out / variant.slug
        _train_variant(variant_config, cache, run_dir, epochs, onto, progress, resume)
        results[variant.name] = _evaluate_variant(run_dir, cache, onto, has_truth)
    markdown = f"## Table 1 (config {config.name}, cache {cache})\n\n" + table1_markdown(results) + "\n"
    files = [
        _write(out / "table1.md", markdown),
        _write(out / "table1.csv", table1_csv(results)),
        _write(
            out / "table1.json",
            json.dumps(
                {
                    "table1": table1_rows(results),
                    "variants": {v.name: {"run": str(out / v.slug), "overrides": list(v.overrides)} for v in chosen},
                    "sets": {name: [r.as_dict() for r in rs] for name, rs in results.items()},
                },
                indent=2,
                ensure_ascii=False,
            ),
        ),
    ]
    return AblationOutcome(markdown, files, results)


# --------------------------------------------------------------------------- label subsets (Fig. 5)


def run_label_subsets(
    config: Config,
    cache: str | Path,
    out_dir: str | Path,
    minimums: Sequence[int],
    epochs: int | None = None,
    onto: OntologyLike | None = None,
    progress: bool = True,
    resume: bool = False,
) -> AblationOutcome:
    """Train one model per label subset "more than N training positives" and test each on each subset.

    Writes ``label_subsets.md`` / ``.json`` and the F1 plot ``label_subsets.png``.
    """

    if onto is None:
        onto = load_ontology()
    if not minimums:
        raise AblationError("--label-subsets needs at least one minimum, e.g. 1000,500,100,0")
    cache, out = Path(cache), Path(out_dir)
    opened = PatchCache(cache)
    term_list = list(opened.term_list)
    counts = train_positive_counts(opened.records, term_list, onto, config)
    subsets: dict[str, list[str]] = {}
    for minimum in sorted(set(minimums), reverse=True):
        names = [name for name, n in zip(term_list, counts) if n > minimum]
        if not names:
            raise AblationError(f"no label has more than {minimum} training positives (most: {int(counts.max())})")
        subsets[f"> {minimum}"] = names
    f1: dict[str, dict[str, float]] = {}
    label_f1: dict[str, dict[str, float]] = {}
    for train_name, train_labels in subsets.items():
        slug = "subset-gt-" + train_name.split()[-1]
        sub_cache = opened.with_labels(train_labels, out / slug / "cache").path
        run_dir = out / slug / "run"
        _train_variant(config, sub_cache, run_dir, epochs, onto, progress, resume)
        predictor = load_predictor(run_dir, onto=onto)
        calibrate_thresholds(predictor, sub_cache)
        result = evaluate_run(predictor, sub_cache, "test")
        position = {name: c for c, name in enumerate(train_labels)}
        f1[train_name] = {}
        for test_name, test_labels in subsets.items():
            if not set(test_labels) <= set(train_labels):
                continue  # the model has no scores for the extra labels
            cols = np.array([position[name] for name in test_labels])
            value = average_metrics(result.metrics, cols).f1
            f1[train_name][test_name] = None if np.isnan(value) else value  # type: ignore[assignment]
        # per-label F1 too: the reproduction pairs two models label by label
        evaluable = result.metrics.evaluable
        label_f1[train_name] = {
            name: float(result.metrics.f1[c]) for c, name in enumerate(train_labels) if evaluable[c]
        }
    test_names = list(subsets)
    lines = ["| trained on \\ tested on | " + " | ".join(test_names) + " |", "|---" * (len(test_names) + 1) + "|"]
    for train_name in subsets:
        cells = [f"{f1[train_name][t]:.4f}" if f1[train_name].get(t) is not None else "–" for t in test_names]
        lines.append(f"| {train_name} ({len(subsets[train_name])} labels) | " + " | ".join(cells) + " |")
    markdown = "## Label-subset experiment (mean per-label F1 on test)\n\n" + "\n".join(lines) + "\n"
    files = [
        _write(out / "label_subsets.md", markdown),
        _write(
            out / "label_subsets.json",
            json.dumps({"subsets": subsets, "f1": f1, "label_f1": label_f1}, indent=2, ensure_ascii=False),
        ),
        label_subset_figure(f1, out / "label_subsets.png"),
    ]
    return AblationOutcome(markdown, files, extra={"f1": f1, "subsets": subsets, "label_f1": label_f1})


# --------------------------------------------------------------------------- retrieval per query


def retrieval_per_query(
    run_dir: Path, cache: Path, onto: OntologyLike, k: int = 5, theta: float = 1.0
) -> dict[str, list[float]]:
    """Precision@k of every test query against the train + val lesions, by embedding and by score vector.

    The same rule as ``lesanet retrieve --quality`` (a hit is relevant when the label-set
    similarity reaches ``theta``), kept per query so that two runs can be paired query by query.
    """

    predictor = load_predictor(run_dir, onto=onto)
    everything = PatchCache(cache).select("all")
    splits = np.array([record.get("split") for record in everything.records])
    queries, base = np.flatnonzero(splits == "test"), np.flatnonzero(np.isin(splits, ["train", "val"]))
    if queries.size == 0 or base.size < k:
        raise AblationError(f"{cache}: retrieval needs test lesions and at least {k} train/val lesions")
    scored = score_selection(predictor.model, everything, device=predictor.device)
    labels = [set(lesion_label_set(record, onto)) for record in everything.records]
    per_query: dict[str, list[float]] = {}
    for name, matrix in (("embedding", scored.embeddings), ("score vector", scored.probs)):
        matrix = np.asarray(matrix, dtype=np.float32)
        _, hits = make_index(matrix[base]).search(matrix[queries], k)
        per_query[name] = [
            float(np.mean([label_set_similarity(labels[q], labels[base[j]]) >= theta for j in row]))
            for q, row in zip(queries, hits)
        ]
    return per_query
