"""A picture of cached lesion patches with their boxes and labels (docs/phantom_patches.png)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from ontology.files import atomic_path
from vision.data.cache import PatchCache

# labels too general to tell the patches apart on the picture
_GENERAL = {
    "chest",
    "abdomen",
    "upper abdomen",
    "pelvis",
    "retroperitoneum",
    "lymph node",
    "bone",
    "lung",
    "enlargement",
}


def _display(patch_u8: np.ndarray, lung: bool) -> np.ndarray:
    """Middle channel of a cached patch in a reading window (lung or soft tissue)."""
    hu = patch_u8.astype(np.float32) * (4095.0 / 255.0) - 1024.0
    lo, hi = (-1200.0, 300.0) if lung else (-250.0, 350.0)
    return np.clip((hu - lo) / (hi - lo), 0, 1)


def patch_panel(
    cache_dir: str | os.PathLike[str], out_png: str | os.PathLike[str], count: int = 16, seed: int = 0
) -> Path:
    """Draw ``count`` patches (one per kind of finding where possible) with labels."""
    import matplotlib  # local: ~0.5 s to import, and the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: after the backend is chosen

    cache = PatchCache(cache_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cache))
    chosen, seen = [], set()
    for row in order:  # prefer patches whose specific labels differ from those shown
        lesion = cache.lesions[row]
        labels = lesion.truth or lesion.relevant
        key = frozenset(l for l in labels if l not in _GENERAL)
        if key not in seen:
            seen.add(key)
            chosen.append(lesion)
        if len(chosen) == count:
            break
    cols = 4
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 3.9))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, lesion in zip(np.atleast_1d(axes).flat, chosen):
        labels = list(lesion.truth or lesion.relevant)
        ax.imshow(_display(cache.patches[lesion.row][1], "lung" in labels), cmap="gray", vmin=0, vmax=1)
        x1, y1, x2, y2 = lesion.box
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1))
        shown = [l for l in labels if l not in _GENERAL]
        ax.set_title("\n".join(textwrap.wrap(", ".join(shown), 34)), fontsize=7)
    fig.suptitle("Phantom lesion patches (120 mm, 1 mm/px; middle channel) with their true labels", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out_png)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=72)
    plt.close(fig)
    return out
