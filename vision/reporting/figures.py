"""Figures a person reads (PNG, matplotlib's Agg backend, no display needed).

- ``roc_figure``: ROC curves of chosen labels;
- ``spl_heatmap``: the learned score-propagation matrix W for chosen labels (paper Fig. 6);
- ``prediction_panels``: patch, box and top labels coloured TP / FP / FN (paper Fig. 4);
- ``retrieval_panel``: a query and its neighbours with shared labels marked (paper Fig. 7);
- ``label_subset_figure``: F1 of models trained on label subsets (paper Fig. 5).

Every function builds its own ``Figure`` (no pyplot state) and writes atomically.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_curve

from ontology.files import atomic_path
from vision.data.cache import PatchCache
from vision.engines.infer import (
    PredictError,
    Prediction,
    predict_cache_full,
    score_selection,
)
from vision.engines.retrieval import Embeddings, Query, RetrievalError, lesion_label_set, make_index
from vision.evaluation.evaluate import complete_truth, mined_truth

TP_COLOUR, FP_COLOUR, FN_COLOUR, OTHER_COLOUR = "#1a9641", "#d7191c", "#2b83ba", "#555555"


@dataclass(frozen=True)
class PanelLesion:
    """What a panel shows of one lesion: the cache patch (3 × H × W uint8), box and labels."""

    title: str
    patch: np.ndarray
    box: Sequence[float]
    labels: Sequence[Mapping[str, object]]  # {"label", "score", "decision"}, most specific first
    truth: frozenset[str] | None = None
    sentence: str | None = None


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` to PNG at ``path`` through a temp file + rename."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return path


def roc_figure(
    scores: np.ndarray,
    positive: np.ndarray,
    mask: np.ndarray,
    term_list: Sequence[str],
    labels: Sequence[str],
    path: str | Path,
    title: str = "ROC curves",
) -> Path:
    """ROC curves (with AUC in the legend) of ``labels``; labels without both classes are skipped."""
    column = {name: c for c, name in enumerate(term_list)}
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
    for name in labels:
        if name not in column:
            raise ValueError(f"label {name!r} is not among the run's labels")
        c = column[name]
        keep = mask[:, c]
        y, s = positive[keep, c], scores[keep, c]
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = float(area_under_curve(fpr, tpr))
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f}, n+={int(y.sum())})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def spl_heatmap(weight: np.ndarray, term_list: Sequence[str], labels: Sequence[str], path: str | Path) -> Path:
    """The learned SPL matrix W (s̃ = W s + b) restricted to ``labels``.

    Row = output label, column = input score. The colour scale is set by the off-diagonal
    entries (the learned label relations); the diagonal (≈ 1 from the identity start) is
    printed as numbers instead of saturating the scale.
    """
    column = {name: c for c, name in enumerate(term_list)}
    missing = [n for n in labels if n not in column]
    if missing:
        raise ValueError(f"label {missing[0]!r} is not among the run's labels")
    idx = [column[n] for n in labels]
    sub = np.asarray(weight, dtype=np.float64)[np.ix_(idx, idx)]
    off = sub.copy()
    np.fill_diagonal(off, np.nan)
    limit = float(np.nanmax(np.abs(off))) if len(idx) > 1 else 1.0
    limit = limit or 1e-6
    size = 1.2 + 0.42 * len(idx)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    image = ax.imshow(off, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(len(idx)):
        ax.text(i, i, f"{sub[i, i]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(idx)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(idx)), labels, fontsize=7)
    ax.set_xlabel("input score s_j")
    ax.set_ylabel("output score s̃_i")
    ax.set_title("learned score propagation W (off-diagonal)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def _show_patch(ax, patch: np.ndarray, box: Sequence[float], colour: str = "#ffcc00") -> None:
    """Middle slice of a 3-slice patch, soft-tissue-like contrast, with the lesion box."""
    middle = np.asarray(patch)[1] if np.asarray(patch).ndim == 3 else np.asarray(patch)
    ax.imshow(middle, cmap="gray", vmin=0, vmax=255 * 0.35)  # cache grey levels: HU -1024..3071
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, edgecolor=colour))
    ax.set_xticks([])
    ax.set_yticks([])


def _label_lines(lesion: PanelLesion, top: int, shared: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(text, colour) per line: decided labels TP/FP vs truth, then missed truth labels (FN)."""
    lines: list[tuple[str, str]] = []
    decided = [entry for entry in lesion.labels if entry.get("decision")]
    for entry in decided[:top]:
        name = str(entry["label"])
        score = entry.get("score")
        text = f"{name} {float(cast(float, score)):.2f}" if score is not None else name
        if shared is not None and name in shared:
            text = "★ " + text
        if lesion.truth is None:
            colour = OTHER_COLOUR
        else:
            colour = TP_COLOUR if name in lesion.truth else FP_COLOUR
        lines.append((text, colour))
    if lesion.truth is not None:
        names = {str(entry["label"]) for entry in decided}
        known = {str(entry["label"]) for entry in lesion.labels}
        for name in sorted(lesion.truth & known - names):
            lines.append((f"{name} (missed)", FN_COLOUR))
    return lines


def prediction_panels(lesions: Sequence[PanelLesion], path: str | Path, top: int = 8, columns: int = 4) -> Path:
    """A grid of lesions: patch with box, decided labels most specific first, TP/FP/FN colours."""
    if not lesions:
        raise ValueError("no lesions to draw")
    columns = min(columns, len(lesions))
    rows = (len(lesions) + columns - 1) // columns
    fig = Figure(figsize=(3.4 * columns, 4.6 * rows))
    for k, lesion in enumerate(lesions):
        ax = fig.add_subplot(rows, columns, k + 1)
        _show_patch(ax, lesion.patch, lesion.box)
        ax.set_title(lesion.title, fontsize=8)
        for j, (text, colour) in enumerate(_label_lines(lesion, top)):
            ax.text(0.0, -0.04 - 0.065 * j, text, transform=ax.transAxes, fontsize=7, color=colour, va="top")
    fig.suptitle(
        "decided labels, most specific first — green: true positive, red: false positive, "
        "blue: missed (false negative)",
        fontsize=8,
    )
    fig.subplots_adjust(hspace=0.9)
    return save_figure(fig, path)


def retrieval_panel(
    query: PanelLesion, hits: Sequence[PanelLesion], distances: Sequence[float], path: str | Path, top: int = 8
) -> Path:
    """The query and its nearest neighbours; ★ marks labels a hit shares with the query."""
    if not hits:
        raise ValueError("no neighbours to draw")
    query_labels = frozenset(str(e["label"]) for e in query.labels if e.get("decision"))
    if query.truth:
        query_labels = query_labels | query.truth
    n = len(hits) + 1
    fig = Figure(figsize=(3.0 * n, 4.6))
    panels = [(query, f"query: {query.title}", None)] + [
        (hit, f"#{i + 1} {hit.title}\nL2 {d:.3f}", query_labels) for i, (hit, d) in enumerate(zip(hits, distances))
    ]
    for k, (lesion, title, shared) in enumerate(panels):
        ax = fig.add_subplot(1, n, k + 1)
        _show_patch(ax, lesion.patch, lesion.box, "#00e5ff" if k == 0 else "#ffcc00")
        ax.set_title(title, fontsize=8)
        plain = PanelLesion(lesion.title, lesion.patch, lesion.box, lesion.labels, None, lesion.sentence)
        lines = _label_lines(plain, top, shared)
        if lesion.sentence:  # the report sentence, wrapped to the panel's width
            lines += [(line, OTHER_COLOUR) for line in textwrap.wrap(_shorten(lesion.sentence, 100), 40)]
        for j, (text, colour) in enumerate(lines):
            bold = text.startswith("★")
            ax.text(
                0.0,
                -0.04 - 0.065 * j,
                text,
                transform=ax.transAxes,
                fontsize=7,
                color=TP_COLOUR if bold else colour,
                va="top",
                weight="bold" if bold else "normal",
            )
    return save_figure(fig, path)


def label_subset_figure(
    f1: Mapping[str, Mapping[str, float]],
    path: str | Path,
    spread: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
) -> Path:
    """Paper Fig. 5: mean F1 of each model (trained on a label subset) on each test subset.

    ``f1[train_subset][test_subset]`` — one line per test subset, x = training subset;
    ``spread`` (same keys, e.g. the standard deviation over seeds) draws error bars.
    """
    train_names = list(f1)
    test_names = list(dict.fromkeys(t for row in f1.values() for t in row))
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()

    def cell(table: Mapping[str, Mapping[str, float]], train: str, test: str) -> float:
        value = table.get(train, {}).get(test)
        return np.nan if value is None else value

    for test in test_names:
        values = [cell(f1, train, test) for train in train_names]
        errors = [cell(spread, train, test) for train in train_names] if spread else None
        ax.errorbar(range(len(train_names)), values, yerr=errors, marker="o", capsize=3, label=f"test on {test}")
    ax.set_xticks(range(len(train_names)), [f"train {t}" for t in train_names], rotation=20, fontsize=8)
    ax.set_ylabel("mean per-label F1")
    ax.set_title(title or "label-subset experiment")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- a run's figures


def frequent_labels(positive: np.ndarray, term_list: Sequence[str], n: int) -> list[str]:
    """The ``n`` labels with the most positives (ties in label order)."""
    counts = np.asarray(positive).sum(0)
    order = np.argsort(-counts, kind="stable")
    return [term_list[c] for c in order[:n] if counts[c] > 0]


def run_figures(
    predictor, cache: str | Path, out_dir: str | Path, labels: Sequence[str] | None = None, n_panels: int = 8
) -> list[Path]:
    """ROC curves, the SPL heatmap, prediction panels and a retrieval panel of a run on a cache.

    Predictions are drawn for the complete-truth test lesions when the cache has them
    (TP / FP / FN against truth), else for the test lesions against their mined labels.
    """

    out = Path(out_dir)
    written: list[Path] = []
    split = "hand" if PatchCache(cache).select("hand").rows.size else "test"
    prediction = predict_cache_full(predictor, cache, split)
    if not prediction.records:
        raise PredictError(f"{cache}: no test lesions to draw")
    records = prediction.cache_records or []
    term_list = predictor.term_list
    if split == "hand":
        truth = complete_truth([r["truth"] for r in records], term_list, predictor.onto)
    else:
        truth = mined_truth(records, term_list, predictor.onto)
    chosen = list(labels) if labels else frequent_labels(truth.positive, term_list, 6)
    written.append(
        roc_figure(
            prediction.scored.probs,
            truth.positive,
            truth.mask,
            term_list,
            chosen,
            out / "roc.png",
            title=f"ROC, {split} lesions",
        )
    )
    if predictor.model.spl is not None:
        weight = predictor.model.spl.weight.detach().cpu().numpy()
        heat_labels = list(labels) if labels else frequent_labels(truth.positive, term_list, 16)
        written.append(spl_heatmap(weight, term_list, heat_labels, out / "spl_weights.png"))
    panels = panel_lesions(prediction, n_panels)
    if split != "hand":  # colour against the mined labels, expanded
        panels = [
            PanelLesion(
                p.title,
                p.patch,
                p.box,
                p.labels,
                frozenset(term_list[c] for c in np.flatnonzero(truth.positive[i])),
                p.sentence,
            )
            for i, p in enumerate(panels)
        ]
    written.append(prediction_panels(panels, out / "predictions.png"))
    # retrieval: the first drawn lesion queries the train + val lesions
    base = PatchCache(cache).select("train")
    base_scored = score_selection(predictor.model, base, device=predictor.device)
    if base.rows.size:
        k = min(4, int(base.rows.size))
        distances, ids = make_index(base_scored.embeddings).search(prediction.scored.embeddings[:1], k)
        base_records = base.records
        hits = []
        for j in ids[0]:
            rec = base_records[int(j)]
            names = lesion_label_set(rec, predictor.onto)
            hits.append(
                PanelLesion(
                    f"deeplesion/{rec['lesion_idx']}",
                    np.asarray(base.patches[base.rows[int(j)]]),
                    rec["box"],
                    [{"label": n, "decision": True} for n in names],
                    None,
                    rec.get("sentence"),
                )
            )
        query = panels[0]
        query_truth = query.truth or frozenset()
        query_panel = PanelLesion(
            query.title,
            query.patch,
            query.box,
            [{"label": n, "decision": True} for n in sorted(query_truth)],
            None,
            query.sentence,
        )
        written.append(retrieval_panel(query_panel, hits, distances[0].tolist(), out / "retrieval.png"))
    return written


# --------------------------------------------------------------------------- panels of predictions and retrieval hits


def panel_lesions(prediction: Prediction, limit: int = 16) -> list[PanelLesion]:
    """Figure panels of the first ``limit`` predicted lesions;
    truth comes from the cache records when known (TP / FP / FN colours)."""
    panels = []
    for i, record in enumerate(prediction.records[:limit]):
        meta = prediction.cache_records[i] if prediction.cache_records else {}
        truth = meta.get("truth")
        panels.append(
            PanelLesion(
                title=record["lesion_id"],
                patch=prediction.patches[i],
                box=prediction.boxes[i],
                labels=record["labels"],
                truth=frozenset(truth) if truth is not None else None,
                sentence=meta.get("sentence"),
            )
        )
    return panels


def hits_panel(result: Mapping[str, Any], query: Query, embeddings: Embeddings, path: str | Path) -> Path:
    """The query and its neighbours as a picture (neighbour patches read from the embedded cache)."""
    cache = embeddings.info.get("cache")
    try:
        opened = PatchCache(str(cache))
    except (ValueError, OSError, TypeError) as exc:
        raise RetrievalError(f"{embeddings.path}: its cache {cache!r} cannot be opened for the panel ({exc})") from None
    patches, lesions = opened.patches, opened.records

    def panel(lesion_id: str, row_in_cache: int, labels: Sequence[str], sentence: str | None) -> PanelLesion:
        entries = [{"label": n, "decision": True} for n in labels]
        return PanelLesion(
            lesion_id, np.asarray(patches[row_in_cache]), lesions[row_in_cache]["box"], entries, None, sentence
        )

    hits = []
    for hit in result["hits"]:
        cache_row = embeddings.lesions[hit["row"]].get("row", hit["row"])
        hits.append(panel(hit["lesion_id"], cache_row, hit["labels"], hit.get("sentence")))
    if query.patch is not None:
        q_panel = PanelLesion(
            query.lesion_id,
            query.patch,
            cast(Sequence[float], query.box),
            [{"label": n, "decision": True} for n in query.labels],
            None,
            query.sentence,
        )
    else:
        assert query.row is not None  # a query without its patch is a stored row
        cache_row = embeddings.lesions[query.row].get("row", query.row)
        q_panel = panel(query.lesion_id, cache_row, query.labels, query.sentence)
    return retrieval_panel(q_panel, hits, [h["distance"] for h in result["hits"]], path)
