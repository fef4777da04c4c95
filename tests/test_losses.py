"""LesaNet losses against hand-computed values, and the triplet sampler's rules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision.config import LossConfig
from vision.networks.losses import (
    ClassWeights,
    LesaNetLoss,
    class_weights,
    harmonic_numbers,
    label_similarity,
    rhem_loss,
    sample_triplets,
    triplet_loss,
    warp_loss,
    weighted_ce,
)
from vision.networks.model import ModelOutput


def ce(logit: float, y: int) -> float:
    """Binary cross-entropy of one logit, by hand."""
    p = 1 / (1 + math.exp(-logit))
    return -math.log(p) if y else -math.log(1 - p)


def test_class_weights_follow_the_formula_skip_uncertain_and_clamp():
    positive = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    weight = torch.ones(5, 3)
    weight[4, 1] = 0.0  # uncertain: not counted
    betas = class_weights(positive, weight, clamp=300.0)
    # label 0: P=2, N=3 -> 5/4, 5/6; label 1: P=1, N=3 -> 4/2, 4/6; label 2: P=0 -> clamp
    assert betas.positive.tolist() == pytest.approx([5 / 4, 2.0, 300.0])
    assert betas.negative.tolist() == pytest.approx([5 / 6, 4 / 6, 5 / 10])
    assert class_weights(positive, weight, clamp=1.5).positive.tolist() == pytest.approx([1.25, 1.5, 1.5])


def test_weighted_ce_matches_hand_computation_and_ignores_weight_zero():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    positive = torch.tensor([[True, False], [False, True]])
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    betas = ClassWeights(torch.tensor([2.0, 3.0]), torch.tensor([0.5, 0.25]))
    expected = (2.0 * ce(2.0, 1) + 0.25 * ce(-1.0, 0) + 0.5 * ce(0.5, 0)) / 3
    assert weighted_ce(logits, positive, weight, betas).item() == pytest.approx(expected, rel=1e-6)


def test_rhem_with_one_hard_reliable_pair_averages_its_ce():
    logits = torch.tensor([[1.0, -2.0, 0.3]])
    positive = torch.tensor([[False, False, True]])
    reliable = torch.tensor([[True, False, False]])  # only pair (0, 0) may be mined
    loss = rhem_loss(logits, positive, reliable, gamma=2.0, samples=50, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(ce(1.0, 0), rel=1e-6)


def test_rhem_samples_in_proportion_to_difficulty():
    logits = torch.tensor([[0.0, 2.0]])
    positive = torch.tensor([[True, True]])
    reliable = torch.ones(1, 2, dtype=torch.bool)
    d = [(1 - 1 / (1 + math.exp(-x))) ** 2 for x in (0.0, 2.0)]  # |sigma - 1|^2
    expected = (d[0] * ce(0.0, 1) + d[1] * ce(2.0, 1)) / sum(d)
    loss = rhem_loss(logits, positive, reliable, 2.0, 200_000, torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(expected, rel=0.01)


def test_rhem_is_zero_without_reliable_pairs_and_has_gradient():
    logits = torch.zeros(2, 3, requires_grad=True)
    zero = rhem_loss(logits, torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool), 2.0, 10)
    assert zero.item() == 0.0
    loss = rhem_loss(logits, torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool), 2.0, 10)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_label_similarity_by_hand():
    positive = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    sim = label_similarity(positive)
    assert sim[0, 1].item() == pytest.approx(1 / 3)  # |{1}|^2 / |{0,1,2}|
    assert sim[0, 2].item() == pytest.approx(2.0)  # 2^2 / 2
    assert sim[3, 3].item() == 0.0 and sim[0, 3].item() == 0.0


def _check_triplets(positive: torch.Tensor, theta: float, count: int, seed: int) -> None:
    sim = label_similarity(positive)
    t = sample_triplets(positive, count, theta, torch.Generator().manual_seed(seed))
    a, b, c = t
    assert a.numel() == b.numel() == c.numel()
    assert torch.all(a != b)
    assert torch.all(sim[a, b] >= theta)
    assert torch.all(sim[a, c] < sim[a, b])
    # every triplet that exists can be found: no anchor with a valid (B, C) is left out
    n = positive.shape[0]
    possible = {
        i
        for i in range(n)
        for j in range(n)
        for k in range(n)
        if j != i and sim[i, j] >= theta and sim[i, k] < sim[i, j]
    }
    if possible:
        assert a.numel() == count
        assert set(a.tolist()) <= possible
    else:
        assert a.numel() == 0


def test_triplets_honour_the_similarity_rules():
    positive = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]], dtype=torch.bool
    )
    _check_triplets(positive, 1.0, 500, 0)
    t = sample_triplets(positive, 3000, 1.0, torch.Generator().manual_seed(3))
    sim = label_similarity(positive)
    # anchors cover every lesion that can anchor a triplet (uniform sampling, 3000 draws)
    anchors = {i for i in range(6) if any(sim[i, j] >= 1 and j != i and (sim[i] < sim[i, j]).any() for j in range(6))}
    assert set(t.anchor.tolist()) == anchors
    # ... and every valid (A, B, C) shows up: B and C are drawn from all their candidates
    valid = {
        (i, j, k)
        for i in range(6)
        for j in range(6)
        for k in range(6)
        if j != i and sim[i, j] >= 1 and sim[i, k] < sim[i, j]
    }
    assert set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist())) == valid


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 5), st.integers(0, 10_000), st.sampled_from([0.5, 1.0, 2.0]))
def test_triplet_rules_on_random_label_sets(n: int, c: int, seed: int, theta: float):
    gen = torch.Generator().manual_seed(seed)
    positive = torch.rand(n, c, generator=gen) < 0.5
    _check_triplets(positive, theta, 64, seed)


def test_triplet_loss_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    t = (torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([2, 3]))
    from vision.networks.losses import Triplets

    # (0,1,2): d_ab = sqrt2, d_ac = 0 -> sqrt2 + 0.1; (0,2,3): d_ab = 0, d_ac = 2 -> 0
    loss = triplet_loss(emb, Triplets(*t), margin=0.1)
    assert loss.item() == pytest.approx((math.sqrt(2) + 0.1) / 2, rel=1e-5)


def test_harmonic_numbers():
    assert harmonic_numbers(3).tolist() == pytest.approx([0.0, 1.0, 1.5, 1.5 + 1 / 3])


def test_warp_by_hand():
    positive = torch.tensor([[True, False, False]])
    weight = torch.ones(1, 3)
    # one violator (label 2): L(1) / 1 * (1 - 2 + 1.8)
    assert warp_loss(torch.tensor([[2.0, 0.5, 1.8]]), positive, weight, 1.0).item() == pytest.approx(0.8)
    # two violators: L(2) / 2 * (1.5 + 1.2) = 1.5 / 2 * 2.7
    assert warp_loss(torch.tensor([[0.0, 0.5, 0.2]]), positive, weight, 1.0).item() == pytest.approx(2.025)
    # uncertain negative (weight 0) is not ranked against
    weight[0, 1] = 0
    assert warp_loss(torch.tensor([[0.0, 0.5, 0.2]]), positive, weight, 1.0).item() == pytest.approx(1.2)


def test_warp_ranks_fine_positive_above_its_coarse_ancestor():
    # labels: 0 fine (e.g. kidney), 1 its ancestor (abdomen), 2 negative
    positive = torch.tensor([[True, True, False]])
    finer = torch.tensor([[False, True, False], [False, False, False], [False, False, False]])
    logits = torch.tensor([[1.0, 1.5, -3.0]])
    plain = warp_loss(logits, positive, torch.ones(1, 3), 1.0)
    assert plain.item() == 0.0  # both positives are a margin above the negative
    with_order = warp_loss(logits, positive, torch.ones(1, 3), 1.0, finer)
    assert with_order.item() == pytest.approx((1 - 1.0 + 1.5) / 2)  # one violating pair over 2 positives


def test_lesanet_loss_sums_parts_with_lambda_and_switches():
    torch.manual_seed(0)
    n, c = 8, 4
    out = ModelOutput(torch.randn(n, c), torch.randn(n, c), torch.nn.functional.normalize(torch.randn(n, 3), dim=1))
    positive = torch.rand(n, c) < 0.5
    weight, reliable = torch.ones(n, c), positive.clone()
    betas = class_weights(positive, weight)
    cfg = LossConfig(rhem_samples=100, triplet_count=50)
    full = LesaNetLoss(cfg, betas, generator=torch.Generator().manual_seed(0))(out, positive, weight, reliable, True)
    assert set(full.parts) == {"wce", "wce_spl", "rhem", "triplet"}
    p = full.parts
    assert full.total.item() == pytest.approx((p["wce"] + p["wce_spl"] + p["rhem"] + 5.0 * p["triplet"]).item())
    baseline = LossConfig(rhem=False, triplet=False)
    assert set(LesaNetLoss(baseline, betas)(out, positive, weight, reliable, False).parts) == {"wce"}
    warp = LossConfig(classification="warp", rhem=False, triplet=False)
    assert set(LesaNetLoss(warp, betas)(out, positive, weight, reliable, False).parts) == {"warp"}


def test_triplet_and_rhem_gradients_are_the_same_every_time_on_several_threads():
    # repeated rows (many triplets share an anchor; RHEM draws with replacement) must be
    # summed in a fixed order, or two identical trainings end with different weights
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        base = torch.rand(6, 171, generator=g) < 0.05
        positive = base[torch.randint(0, 6, (32,), generator=g)] | (torch.rand(32, 171, generator=g) < 0.01)
        triplets = sample_triplets(positive, 2000, 1.0, torch.Generator().manual_seed(5))
        assert triplets.anchor.numel() == 2000
        embedding, logits = torch.randn(32, 128, generator=g), torch.randn(32, 171, generator=g)

        def gradients() -> tuple[torch.Tensor, torch.Tensor]:
            e, s = embedding.clone().requires_grad_(), logits.clone().requires_grad_()
            loss = triplet_loss(e, triplets, 0.1) + rhem_loss(
                s, positive, torch.ones_like(s), 2.0, 4000, torch.Generator().manual_seed(7)
            )
            loss.backward()
            assert e.grad is not None and s.grad is not None
            return e.grad, s.grad

        first = gradients()
        for _ in range(20):
            again = gradients()
            assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    finally:
        torch.set_num_threads(threads)
