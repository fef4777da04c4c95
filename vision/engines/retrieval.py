"""Similar-lesion retrieval: an embeddings file, nearest neighbours by L2, and its quality.

An embeddings file is a directory (memory-mapped, so a few million vectors load at once):

- ``embeddings.npy`` — float32 ``N × D`` (LesaNet's L2-normalised 256-D embedding);
- ``scores.npy`` — float32 ``N × C`` label probabilities (the score-vector baseline);
- ``index.json`` — ``{"format": "lesanet-embeddings", "version": 1, "term_list": [...],
  "model": {...}, "checkpoint_sha256": str, "ontology_version": str, "cache": str,
  "lesions": [{"lesion_id", "lesion_idx", "split", "labels", "sentence"}]}``.

Search is exact (blocked matrix products on torch) by default; ``backend="faiss"`` puts a
``faiss.IndexFlatL2`` behind the same interface when faiss is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ontology.errors import LesanetError
from ontology.files import read_versioned_json
from ontology.protocol import OntologyLike
from vision.data.cache import PatchCache
from vision.engines.infer import (
    Predictor,
    check_cache_labels,
    decided_labels,
    load_predictor,
    predict_inputs,
    score_selection,
)

EMBEDDINGS_FORMAT = "lesanet-embeddings"
EMBEDDINGS_VERSION = 1


class RetrievalError(LesanetError, ValueError):
    """A bad embeddings file or query (one line)."""


# --------------------------------------------------------------------------- search


class NeighbourIndex(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)``, both ``Q × k``, nearest first; distances are L2 (not squared)."""
        ...

    def __len__(self) -> int: ...


class ExactIndex:
    """Exact L2 search on torch (CPU or GPU): per block, ||x||² − 2 q·x in one fused matrix
    product (||q||² is the same for every candidate of a query, so it is added after top-k)."""

    def __init__(self, vectors: np.ndarray, block_rows: int = 262_144, device: str | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise RetrievalError(f"vectors must be N × D, got shape {vectors.shape}")
        self._device = torch.device(device or "cpu")
        with warnings.catch_warnings():
            # a read-only memory map is fine: the index never writes to its vectors
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self._vectors = torch.from_numpy(np.ascontiguousarray(vectors)).to(self._device)
        self._sq_norms = torch.linalg.vector_norm(self._vectors, dim=1).square()  # no N × D temporary
        self._block = block_rows

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(np.ascontiguousarray(np.asarray(queries, dtype=np.float32))).to(self._device)
        if q.ndim != 2 or q.shape[1] != self._vectors.shape[1]:
            raise RetrievalError(f"queries must be Q × {self._vectors.shape[1]}, got {tuple(q.shape)}")
        k = min(int(k), len(self))
        if k < 1:
            raise RetrievalError("k must be >= 1 and the index must not be empty")
        best_d = torch.empty((q.shape[0], 0), dtype=torch.float32, device=self._device)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.int64, device=self._device)
        with torch.inference_mode():
            for start in range(0, len(self), self._block):
                block = self._vectors[start : start + self._block]
                partial = torch.addmm(self._sq_norms[start : start + block.shape[0]][None, :], q, block.T, alpha=-2.0)
                d, i = torch.topk(partial, min(k, block.shape[0]), dim=1, largest=False, sorted=True)
                best_d = torch.cat([best_d, d], 1)
                best_i = torch.cat([best_i, i + start], 1)
                if best_d.shape[1] > k:
                    best_d, pick = torch.topk(best_d, k, dim=1, largest=False, sorted=True)
                    best_i = torch.gather(best_i, 1, pick)
            # The float32 product ranks candidates; the k winners get their distance recomputed
            # directly in float64 (no cancellation), then are re-sorted by it.
            chosen = self._vectors[best_i].double()  # Q × k × D
            distances = (chosen - q.double()[:, None, :]).pow(2).sum(2).sqrt()
            distances, order = torch.sort(distances, dim=1, stable=True)
            best_i = torch.gather(best_i, 1, order)
        return distances.cpu().numpy(), best_i.cpu().numpy()


class FaissIndex:
    """faiss ``IndexFlatL2`` (or any faiss index) behind the ``NeighbourIndex`` interface."""

    def __init__(self, vectors: np.ndarray) -> None:
        try:
            import faiss  # type: ignore[import-not-found]
        except ImportError:
            raise RetrievalError(
                "faiss is not installed: pip install 'lesanet[faiss]', or use --backend exact"
            ) from None
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        self._index = faiss.IndexFlatL2(vectors.shape[1])
        self._index.add(vectors)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d2, ids = self._index.search(np.ascontiguousarray(np.asarray(queries, dtype=np.float32)), min(k, len(self)))
        return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64), ids.astype(np.int64)


def make_index(vectors: np.ndarray, backend: str = "exact") -> NeighbourIndex:
    """``"exact"`` (numpy/torch), ``"faiss"``, or ``"auto"`` (faiss when installed and N > 2 M)."""
    if backend == "auto":
        try:
            import faiss  # type: ignore[import-not-found]  # noqa: F401

            backend = "faiss" if len(vectors) > 2_000_000 else "exact"
        except ImportError:
            backend = "exact"
    if backend == "exact":
        return ExactIndex(vectors)
    if backend == "faiss":
        return FaissIndex(vectors)
    raise RetrievalError(f"unknown retrieval backend {backend!r} (exact, faiss, auto)")


# --------------------------------------------------------------------------- quality


def label_set_similarity(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    """The paper's sim(A, B) = |X ∩ Y|² / |X ∪ Y| of two label sets (0 when both are empty)."""
    union = len(a | b)
    return len(a & b) ** 2 / union if union else 0.0


@dataclass(frozen=True)
class RetrievalQuality:
    """Mean over queries of: precision@k (hit relevant when sim >= theta), mean sim@k, mean IoU@k."""

    k: int
    theta: float
    n_queries: int
    precision_at_k: float
    mean_sim_at_k: float
    mean_iou_at_k: float

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def retrieval_quality(
    query_vectors: np.ndarray,
    query_labels: Sequence[set[str]],
    base_vectors: np.ndarray,
    base_labels: Sequence[set[str]],
    k: int = 5,
    theta: float = 1.0,
    exclude_self: np.ndarray | None = None,
    backend: str = "exact",
) -> RetrievalQuality:
    """Precision@k of label-set similarity for queries against a database.

    ``exclude_self[q]`` is the database row of query q itself (or -1), skipped in its hits.
    A hit is relevant when sim(query, hit) >= theta (the triplet loss's positive rule).
    """
    if len(query_vectors) != len(query_labels) or len(base_vectors) != len(base_labels):
        raise RetrievalError("vectors and label sets differ in length")
    if len(query_vectors) == 0:
        raise RetrievalError("no query lesions")
    index = make_index(base_vectors, backend)
    extra = 1 if exclude_self is not None else 0
    _, ids = index.search(query_vectors, k + extra)
    precision, sims, ious = [], [], []
    for q, row in enumerate(ids):
        if exclude_self is not None:
            row = row[row != exclude_self[q]]
        row = row[:k]
        s = [label_set_similarity(query_labels[q], base_labels[j]) for j in row]
        iou = [_iou(query_labels[q], base_labels[j]) for j in row]
        precision.append(np.mean([v >= theta for v in s]))
        sims.append(np.mean(s))
        ious.append(np.mean(iou))
    return RetrievalQuality(
        k=k,
        theta=theta,
        n_queries=len(query_vectors),
        precision_at_k=float(np.mean(precision)),
        mean_sim_at_k=float(np.mean(sims)),
        mean_iou_at_k=float(np.mean(ious)),
    )


def _iou(a: set[str], b: set[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


# --------------------------------------------------------------------------- embeddings file


@dataclass
class Embeddings:
    """An embeddings directory, loaded (arrays memory-mapped)."""

    path: Path
    vectors: np.ndarray
    scores: np.ndarray
    info: dict[str, Any]

    @property
    def lesions(self) -> list[dict[str, Any]]:
        return self.info["lesions"]

    def row_of(self, lesion_idx: int) -> int:
        """The row of a lesion by its dataset index; a clear error when absent."""
        for row, lesion in enumerate(self.lesions):
            if lesion.get("lesion_idx") == lesion_idx:
                return row
        raise RetrievalError(f"{self.path}: lesion {lesion_idx} is not in the embeddings file")

    def label_sets(self) -> list[set[str]]:
        return [set(lesion.get("labels") or []) for lesion in self.lesions]


def write_embeddings(path: str | Path, vectors: np.ndarray, scores: np.ndarray, info: dict[str, Any]) -> Path:
    """Write an embeddings directory atomically (build in a temp dir, then rename into place)."""
    path = Path(path)
    if len(vectors) != len(scores) or len(vectors) != len(info.get("lesions", [])):
        raise RetrievalError("embeddings, scores and lesion list differ in length")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.save(tmp / "embeddings.npy", np.asarray(vectors, dtype=np.float32))
        np.save(tmp / "scores.npy", np.asarray(scores, dtype=np.float32))
        body = {"format": EMBEDDINGS_FORMAT, "version": EMBEDDINGS_VERSION, **info}
        (tmp / "index.json").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            _remove_tree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove_tree(tmp)
        raise
    return path


def load_embeddings(path: str | Path) -> Embeddings:
    """Open an embeddings directory; errors name the file and what is wrong."""
    path = Path(path)
    index_file = path / "index.json"
    if not index_file.is_file():
        raise RetrievalError(f"{path}: not an embeddings directory (no index.json); make one with `lesanet embed`")
    info = read_versioned_json(
        index_file, EMBEDDINGS_FORMAT, EMBEDDINGS_VERSION, RetrievalError, "; re-run `lesanet embed`"
    )
    try:
        vectors = np.load(path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        scores = np.load(path / "scores.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RetrievalError(f"{path}: cannot read the arrays ({exc})") from None
    if not (len(vectors) == len(scores) == len(info.get("lesions", []))):
        raise RetrievalError(f"{path}: embeddings, scores and lesion list differ in length (truncated file?)")
    return Embeddings(path, vectors, scores, info)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- runs


def lesion_label_set(record: Mapping[str, Any], onto: OntologyLike) -> list[str]:
    """The labels a lesion is known to have: its complete truth when known, else the
    text-mined relevant labels expanded through the ontology."""
    if record.get("truth") is not None:
        return sorted(record["truth"])
    relevant = [name for name in record.get("relevant") or [] if name in onto.terms]
    return sorted(onto.expand(relevant)) if relevant else []


def embed_cache(
    run_dir: str | Path | Any,
    cache: str | Path,
    out: str | Path,
    split: str = "all",
    batch_size: int = 64,
    dataset: str = "deeplesion",
) -> Embeddings:
    """Embed every lesion of a cache (or one split) once with a run; writes and returns the file."""

    predictor = run_dir if isinstance(run_dir, Predictor) else load_predictor(run_dir)
    selection = PatchCache(cache).select(split)
    check_cache_labels(predictor.term_list, selection)
    scored = score_selection(predictor.model, selection, batch_size, predictor.device)
    lesions = [
        {
            "lesion_id": f"deeplesion/{record['lesion_idx']}",  # the ids of prediction records
            "dataset": dataset,
            "lesion_idx": int(record["lesion_idx"]),
            "split": record.get("split"),
            "row": int(row),
            "labels": lesion_label_set(record, predictor.onto),
            "sentence": record.get("sentence"),
        }
        for row, record in zip(selection.rows, selection.records)
    ]
    info = {
        "term_list": predictor.term_list,
        "model": predictor.model_block(),
        "checkpoint_sha256": predictor.info.checkpoint_sha256,
        "ontology_version": str(predictor.onto.version),
        "cache": str(Path(cache).resolve()),
        "lesions": lesions,
    }
    write_embeddings(out, scored.embeddings, scored.probs, info)
    return load_embeddings(out)


def check_same_model(embeddings: Embeddings, checkpoint_sha256: str) -> None:
    """Query and database vectors must come from the same weights to be comparable."""
    if embeddings.info.get("checkpoint_sha256") != checkpoint_sha256:
        raise RetrievalError(f"{embeddings.path}: made with another checkpoint; re-run `lesanet embed` with this run")


def neighbours(
    embeddings: Embeddings,
    query: np.ndarray,
    k: int = 5,
    exclude_rows: Sequence[int] = (),
    backend: str = "exact",
    index: NeighbourIndex | None = None,
) -> list[dict[str, Any]]:
    """The k nearest lesions of one query embedding, each with its labels and sentence."""
    index = index or make_index(np.asarray(embeddings.vectors), backend)
    distances, ids = index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k + len(exclude_rows))
    hits = []
    for d, row in zip(distances[0], ids[0]):
        if int(row) in set(exclude_rows):
            continue
        lesion = embeddings.lesions[int(row)]
        hits.append(
            {
                "lesion_id": lesion["lesion_id"],
                "distance": round(float(d), 6),
                "row": int(row),
                "lesion_idx": lesion.get("lesion_idx"),
                "split": lesion.get("split"),
                "labels": lesion.get("labels") or [],
                "sentence": lesion.get("sentence"),
            }
        )
        if len(hits) == k:
            break
    return hits


def retrieval_report(
    embeddings: Embeddings,
    k: int = 5,
    theta: float = 1.0,
    query_split: str = "test",
    base_splits: Sequence[str] = ("train", "val"),
    backend: str = "exact",
) -> dict[str, RetrievalQuality]:
    """Precision@k of label-set similarity: test lesions query the train+val lesions, once by
    the 256-D embedding and once by the classifier's score vector (the comparison)."""
    splits = np.array([lesion.get("split") for lesion in embeddings.lesions])
    labels = embeddings.label_sets()
    queries = np.flatnonzero(splits == query_split)
    base = np.flatnonzero(np.isin(splits, list(base_splits)))
    if queries.size == 0 or base.size == 0:
        raise RetrievalError(
            f"{embeddings.path}: needs {query_split} lesions as queries and {'/'.join(base_splits)} lesions as "
            "the database; embed the whole cache (--split all)"
        )
    report = {}
    for name, matrix in (("embedding", embeddings.vectors), ("score vector", embeddings.scores)):
        matrix = np.asarray(matrix, dtype=np.float32)
        report[name] = retrieval_quality(
            matrix[queries],
            [labels[i] for i in queries],
            matrix[base],
            [labels[i] for i in base],
            k=k,
            theta=theta,
            backend=backend,
        )
    return report


@dataclass
class Query:
    """A retrieval query: its embedding, its labels, and (when it is in the file) its row."""

    lesion_id: str
    vector: np.ndarray
    labels: list[str]
    row: int | None = None
    patch: np.ndarray | None = None
    box: np.ndarray | None = None
    sentence: str | None = None


def stored_query(embeddings: Embeddings, row: int) -> Query:
    """A lesion of the embeddings file as the query (its stored vector and labels)."""
    lesion = embeddings.lesions[row]
    return Query(
        lesion["lesion_id"],
        np.asarray(embeddings.vectors[row]),
        list(lesion.get("labels") or []),
        row,
        sentence=lesion.get("sentence"),
    )


def image_query(predictor: Any, lesion_input: Any, embeddings: Embeddings, warn: Any = None) -> Query:
    """A lesion on CT as the query: preprocessed and embedded like the file's lesions.

    Its labels are the run's decisions; when the lesion is in the file (same dataset
    lesion index), ``row`` points at its stored copy.
    """

    prediction = predict_inputs(predictor, [lesion_input], warn=warn)
    record = prediction.records[0]
    row = None
    idx = record["source"].get("lesion_idx")
    if idx is not None:
        matches = [
            r
            for r, lesion in enumerate(embeddings.lesions)
            if lesion.get("lesion_idx") == idx and lesion.get("lesion_id") == record["lesion_id"]
        ]
        row = matches[0] if matches else None
    return Query(
        record["lesion_id"],
        prediction.scored.embeddings[0],
        decided_labels(record),
        row,
        prediction.patches[0],
        prediction.boxes[0],
    )


def mark_shared(query: Query, hits: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The query and its hits, each hit with the labels it shares with the query (Fig. 7's evidence)."""
    query_labels = set(query.labels)
    return {
        "query": {"lesion_id": query.lesion_id, "labels": list(query.labels), "row": query.row},
        "hits": [
            {
                **hit,
                "shared": [name for name in hit.get("labels", []) if name in query_labels],
                "sim": round(label_set_similarity(query_labels, set(hit.get("labels", []))), 6),
                "is_query": query.row is not None and hit.get("row") == query.row,
            }
            for hit in hits
        ],
    }


def hits_table(result: Mapping[str, Any]) -> str:
    """Readable neighbours: distance, labels (shared ones starred) and the report sentence."""
    q = result["query"]
    lines = [f"query {q['lesion_id']}: {', '.join(q['labels']) or '(no decided labels)'}", ""]
    for rank, hit in enumerate(result["hits"], 1):
        shared = set(hit["shared"])
        labels = ", ".join(f"*{n}*" if n in shared else n for n in hit["labels"]) or "(no labels)"
        itself = "  (the query itself)" if hit.get("is_query") else ""
        lines.append(f"{rank:>2}. {hit['lesion_id']}  L2 {hit['distance']:.4f}  sim {hit['sim']:.2f}{itself}")
        lines.append(f"    labels: {labels}")
        if hit.get("sentence"):
            lines.append(f"    report: {hit['sentence']}")
    lines.append("")
    lines.append("*label* = shared with the query")
    return "\n".join(lines)


def quality_markdown(report: Mapping[str, RetrievalQuality]) -> str:
    """Embedding vs score-vector retrieval, one Markdown table."""
    lines = [
        "| retrieval by | queries | k | precision@k (sim >= theta) | mean sim@k | mean IoU@k |",
        "|---|---|---|---|---|---|",
    ]
    for name, q in report.items():
        lines.append(
            f"| {name} | {q.n_queries} | {q.k} | {q.precision_at_k:.4f} | {q.mean_sim_at_k:.4f} | "
            f"{q.mean_iou_at_k:.4f} |"
        )
    return "\n".join(lines)


def attach_neighbours(records: Sequence[dict[str, Any]], vectors: np.ndarray, embeddings: Embeddings, k: int) -> None:
    """Add each prediction record's ``k`` nearest lesions of ``embeddings`` as its ``neighbors``."""
    index = make_index(embeddings.vectors)
    for record, vector in zip(records, vectors):
        hits = neighbours(embeddings, vector, k, index=index)
        record["neighbors"] = [{"lesion_id": h["lesion_id"], "distance": h["distance"]} for h in hits]
