"""Retrieval on arrays: exact search, label-set similarity, precision@k, the embeddings file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vision.engines.retrieval import (
    ExactIndex,
    RetrievalError,
    label_set_similarity,
    load_embeddings,
    make_index,
    retrieval_quality,
    write_embeddings,
)


def test_exact_index_matches_brute_force_across_blocks() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(1000, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    index = ExactIndex(base, block_rows=96)  # several blocks, last one partial
    distances, ids = index.search(queries, 5)
    full = np.linalg.norm(queries[:, None, :].astype(np.float64) - base[None], axis=2)
    expected = np.argsort(full, axis=1)[:, :5]
    assert ids.tolist() == expected.tolist()
    assert np.allclose(distances, np.take_along_axis(full, expected, 1), atol=1e-9)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_a_duplicate_is_its_own_nearest_neighbour() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(200, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    distances, ids = make_index(base).search(base[[17, 42]], 3)
    assert ids[:, 0].tolist() == [17, 42]
    assert np.allclose(distances[:, 0], 0.0, atol=1e-9)


def test_label_set_similarity_is_the_papers_sim() -> None:
    assert label_set_similarity({"a", "b"}, {"a", "b"}) == pytest.approx(2.0)
    assert label_set_similarity({"a", "b"}, {"a", "c"}) == pytest.approx(1 / 3)
    assert label_set_similarity({"a"}, {"b"}) == 0.0
    assert label_set_similarity(set(), set()) == 0.0


def test_precision_at_k_hand_example_and_self_exclusion() -> None:
    base = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    labels = [{"liver", "cyst"}, {"liver", "cyst"}, {"lung"}, {"liver", "cyst"}]
    # query = row 0 itself; excluding it, the two nearest are rows 1 (sim 2) and 2 (sim 0)
    quality = retrieval_quality(base[:1], labels[:1], base, labels, k=2, exclude_self=np.array([0]))
    assert quality.precision_at_k == pytest.approx(0.5)
    assert quality.mean_sim_at_k == pytest.approx(1.0)
    assert quality.mean_iou_at_k == pytest.approx(0.5)
    kept_self = retrieval_quality(base[:1], labels[:1], base, labels, k=2)
    assert kept_self.precision_at_k == pytest.approx(1.0)


def test_embeddings_file_roundtrip_and_clear_errors(tmp_path) -> None:
    vectors = np.eye(3, dtype=np.float32)
    scores = np.full((3, 2), 0.5, dtype=np.float32)
    lesions = [
        {"lesion_id": f"phantom/{i}", "lesion_idx": i, "split": "test", "labels": ["a"], "sentence": None}
        for i in range(3)
    ]
    path = write_embeddings(tmp_path / "emb", vectors, scores, {"term_list": ["a", "b"], "lesions": lesions})
    write_embeddings(path, vectors, scores, {"term_list": ["a", "b"], "lesions": lesions})  # replace in place
    emb = load_embeddings(path)
    assert emb.vectors.shape == (3, 3) and emb.row_of(2) == 2
    with pytest.raises(RetrievalError, match="lesion 9 is not in"):
        emb.row_of(9)
    with pytest.raises(RetrievalError, match="no index.json"):
        load_embeddings(tmp_path)
    info = json.loads((path / "index.json").read_text())
    info["version"] = 99
    (path / "index.json").write_text(json.dumps(info))
    with pytest.raises(RetrievalError, match="version 99"):
        load_embeddings(path)
    with pytest.raises(RetrievalError, match="differ in length"):
        write_embeddings(tmp_path / "bad", vectors, scores[:2], {"lesions": lesions})
    assert not (tmp_path / "bad").exists()
    with pytest.raises(RetrievalError, match="unknown retrieval backend"):
        make_index(vectors, "annoy")
