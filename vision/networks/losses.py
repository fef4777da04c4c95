"""LesaNet's losses: weighted CE, RHEM, the multilabel triplet loss, and WARP.

All of them work on whole batches with tensor operations on the batch's device; the
random parts (RHEM pair sampling, triplet sampling) take an explicit ``torch.Generator``
so that training is reproducible and resumable.

Shapes: N lesions, C labels. ``positive`` is bool N x C; ``weight`` is float N x C with 0
for pairs to ignore (uncertain labels); ``reliable`` is bool N x C (positives and their
ontology-inherited exclusives, the pairs RHEM may mine).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.config import LossConfig
from vision.networks.model import ModelOutput


class ClassWeights(NamedTuple):
    """Per-label balancing weights from training-set counts."""

    positive: Tensor  # C, beta_pos = (P + N) / (2P)
    negative: Tensor  # C, beta_neg = (P + N) / (2N)


def class_weights(positive: Tensor, weight: Tensor, clamp: float = 300.0) -> ClassWeights:
    """beta_pos = (P+N)/(2P), beta_neg = (P+N)/(2N), counting only pairs with weight > 0,
    each capped at ``clamp`` (a label with no positives gets the cap)."""
    valid = weight > 0
    p = (positive & valid).sum(0).double()
    n = (~positive & valid).sum(0).double()
    total = p + n
    cap = torch.full_like(total, clamp)
    beta_pos = torch.where(p > 0, total / (2 * p).clamp(min=1), cap).clamp(max=clamp)
    beta_neg = torch.where(n > 0, total / (2 * n).clamp(min=1), cap).clamp(max=clamp)
    return ClassWeights(beta_pos.float(), beta_neg.float())


def weighted_ce(logits: Tensor, positive: Tensor, weight: Tensor, betas: ClassWeights) -> Tensor:
    """Class-balanced binary cross-entropy, averaged over the pairs with weight > 0."""
    target = positive.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    beta = torch.where(positive, betas.positive.to(logits.device), betas.negative.to(logits.device))
    counted = (weight > 0).sum().clamp(min=1)
    return (ce * beta * weight).sum() / counted


def rhem_loss(
    logits: Tensor,
    positive: Tensor,
    reliable: Tensor,
    gamma: float,
    samples: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Reliable hard example mining: draw ``samples`` reliable (lesion, label) pairs with
    replacement, in proportion to their difficulty |sigmoid(s) - y|^gamma, and average
    their (unweighted) cross-entropy. Zero when no reliable pair has any difficulty."""
    target = positive.float()
    with torch.no_grad():  # the sampling distribution is not differentiated
        difficulty = ((torch.sigmoid(logits) - target).abs() ** gamma) * reliable
        flat = difficulty.flatten()
        # No host round-trip to test "nothing to mine" (it would stall a GPU every step):
        # sample uniformly instead and multiply the loss by 0.
        any_hard = flat.sum() > 0
        picked = torch.multinomial(
            torch.where(any_hard, flat, torch.ones_like(flat)), samples, replacement=True, generator=generator
        )
    # index_select: a deterministic backward for the repeated picks (see triplet_loss)
    ce = F.binary_cross_entropy_with_logits(logits.flatten().index_select(0, picked), target.flatten()[picked])
    return ce * any_hard


def label_similarity(positive: Tensor) -> Tensor:
    """sim(X, Y) = |X n Y|^2 / |X u Y| for every pair of label sets (N x N float)."""
    labels = positive.float()
    inter = labels @ labels.T
    size = labels.sum(1)
    union = size[:, None] + size[None, :] - inter
    return torch.where(union > 0, inter * inter / union.clamp(min=1), torch.zeros_like(inter))


class Triplets(NamedTuple):
    anchor: Tensor  # K, lesion indices in the batch
    positive: Tensor  # K, sim(A, B) >= theta, B != A
    negative: Tensor  # K, sim(A, C) < sim(A, B)


def _pick(count: Tensor, generator: torch.Generator | None) -> Tensor:
    """A uniform integer in [0, count) per entry (every count must be >= 1)."""
    u = torch.rand(count.shape, generator=generator, device=count.device)
    return torch.minimum((u * count).long(), count - 1)


def sample_triplets(positive: Tensor, count: int, theta: float, generator: torch.Generator | None = None) -> Triplets:
    """``count`` triplets (A, B, C): A uniform among lesions that admit a valid triplet, B
    uniform among lesions with sim(A, B) >= theta that some C can undercut, C uniform among
    lesions with sim(A, C) < sim(A, B).

    No per-triplet Python and no T x N intermediate: each row of the N x N similarity is
    sorted once, so "the C candidates of (A, B)" are the first ``below[A, B]`` entries of
    A's sorted row, and each triplet costs three random numbers and three gathers.
    """
    sim = label_similarity(positive)
    n = sim.shape[0]
    device = sim.device
    empty = torch.empty(0, dtype=torch.long, device=device)
    if count < 1 or n < 3:
        return Triplets(empty, empty, empty)
    sorted_sim, sorted_idx = sim.sort(dim=1)
    # below[a, b] = number of lesions c with sim(a, c) < sim(a, b) (left insertion point)
    below = torch.searchsorted(sorted_sim, sim.contiguous())
    self_pair = torch.eye(n, dtype=torch.bool, device=device)
    b_allowed = (sim >= theta) & ~self_pair & (below > 0)
    b_count = b_allowed.sum(1)
    anchors_ok = (b_count > 0).nonzero().flatten()
    if anchors_ok.numel() == 0:
        return Triplets(empty, empty, empty)
    # per row, the allowed B first (stable sort of "not allowed" flags)
    b_order = torch.sort((~b_allowed).to(torch.uint8), dim=1, stable=True).indices
    a = anchors_ok[torch.randint(anchors_ok.numel(), (count,), generator=generator, device=device)]
    b = b_order[a, _pick(b_count[a], generator)]
    c = sorted_idx[a, _pick(below[a, b], generator)]
    return Triplets(a, b, c)


def triplet_loss(embedding: Tensor, triplets: Triplets, margin: float) -> Tensor:
    """mean over triplets of max(0, d(A, B) - d(A, C) + margin), d = Euclidean distance."""
    if triplets.anchor.numel() == 0:
        return embedding.sum() * 0.0
    # index_select, not embedding[idx]: its backward (index_add_) sums repeated rows in a fixed
    # order, while advanced indexing's (index_put_ accumulate) does not on a multi-threaded
    # CPU, which made two identical trainings on 2 threads end with different weights
    ea, eb, ec = (embedding.index_select(0, rows) for rows in triplets)
    # eps inside the sqrt: identical embeddings would otherwise give a NaN gradient.
    d_ab = ((ea - eb) ** 2).sum(1).add(1e-12).sqrt()
    d_ac = ((ea - ec) ** 2).sum(1).add(1e-12).sqrt()
    return F.relu(d_ab - d_ac + margin).mean()


def harmonic_numbers(n: int, device: torch.device | str = "cpu") -> Tensor:
    """H_0 .. H_n with H_r = sum_{i=1..r} 1/i (WARP's rank weighting L(r))."""
    steps = torch.arange(1, n + 1, dtype=torch.float32, device=device).reciprocal()
    return torch.cat([torch.zeros(1, device=device), steps.cumsum(0)])


def warp_loss(
    logits: Tensor, positive: Tensor, weight: Tensor, margin: float = 1.0, finer: Tensor | None = None
) -> Tensor:
    """Weighted approximate-rank pairwise loss (Gong et al. 2013) with exact ranks.

    Each positive label j should score ``margin`` above every label k that must rank below
    it: the negatives (weight > 0) and, with ``finer`` (C x C bool, finer[j, k] = k is an
    ancestor of j), its positive coarser labels. With r_j the number of violating k, the
    loss of j is L(r_j) / r_j * sum_k max(0, margin - s_j + s_k), L(r) = H_r; it is averaged
    over positive labels. Gong et al. estimate r_j by sampling because their label sets are
    large; with C = 171 counting every violator costs one N x C x C tensor.
    """
    valid = weight > 0
    pos = positive & valid
    below = pos[:, :, None] & (~positive & valid)[:, None, :]
    if finer is not None:
        below = below | (pos[:, :, None] & pos[:, None, :] & finer.to(logits.device)[None])
    hinge = F.relu(margin - logits[:, :, None] + logits[:, None, :]) * below
    rank = (hinge > 0).sum(2)
    table = harmonic_numbers(logits.shape[1], logits.device)
    per_label = table[rank] / rank.clamp(min=1) * hinge.sum(2)
    return per_label.sum() / pos.sum().clamp(min=1)


class LossParts(NamedTuple):
    total: Tensor
    parts: dict[str, Tensor]  # detached components, for logging


class LesaNetLoss:
    """L = L_WCE(s) + L_RHEM(s~) + L_WCE(s~) + lambda L_triplet, parts switchable by config.

    With ``classification: warp`` the WARP loss takes the place of the weighted CE. RHEM
    mines on the final scores (s~ when SPL is on): those are the predictions that are used.
    """

    def __init__(
        self,
        config: LossConfig,
        betas: ClassWeights,
        finer: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.config, self.betas, self.generator = config, betas, generator
        self.finer = finer if config.warp_fine_over_coarse else None

    def _classification(self, logits: Tensor, positive: Tensor, weight: Tensor) -> Tensor:
        if self.config.classification == "warp":
            return warp_loss(logits, positive, weight, self.config.warp_margin, self.finer)
        return weighted_ce(logits, positive, weight, self.betas)

    def __call__(
        self, out: ModelOutput, positive: Tensor, weight: Tensor, reliable: Tensor, has_spl: bool
    ) -> LossParts:
        cfg = self.config
        name = "warp" if cfg.classification == "warp" else "wce"
        parts: dict[str, Tensor] = {name: self._classification(out.scores, positive, weight)}
        if has_spl:
            parts[f"{name}_spl"] = self._classification(out.scores_spl, positive, weight)
        if cfg.rhem:
            parts["rhem"] = rhem_loss(
                out.scores_spl, positive, reliable, cfg.rhem_gamma, cfg.rhem_samples, self.generator
            )
        if cfg.triplet:
            triplets = sample_triplets(positive, cfg.triplet_count, cfg.triplet_theta, self.generator)
            parts["triplet"] = triplet_loss(out.embedding, triplets, cfg.triplet_margin)
        # parts always holds the classification loss, so the sum is a tensor
        total = cast(Tensor, sum(cfg.triplet_weight * v if k == "triplet" else v for k, v in parts.items()))
        return LossParts(total, {k: v.detach() for k, v in parts.items()})
