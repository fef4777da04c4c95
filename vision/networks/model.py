"""The LesaNet network: VGG-16-BN trunk, multiscale RoI pooling, scores, SPL and embedding.

Input is a batch of cache patches (``uint8`` N x 3 x P x P, three adjacent CT slices, HU
window [-1024, 3071] -> [0, 255]) and the lesion boxes in patch pixels. The model itself
converts to float and subtracts the pixel mean, so the cache can sit on the device as
uint8 and every caller (training, evaluation, prediction) feeds it the same way.

Pooling choice: ``torchvision.ops.roi_align`` (aligned=True), not ``roi_pool``. Lesion
boxes are small (often 10-20 px in a 120 px patch, i.e. 2-5 cells at conv3_3's stride 4);
``roi_pool`` rounds the box to whole feature cells and then to whole bins, so a 5 x 5 grid
over a 3-cell box repeats cells and shifts the box by up to half a cell (2 px at stride
4), and its gradient reaches only the arg-max cell. ``roi_align`` samples bilinearly at
the exact box coordinates, so small boxes keep their position and every cell under the
box gets gradient. Both are plain torchvision ops (CPU and CUDA), no extension of ours.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.config import ModelConfig

MODEL_NAME = "LesaNet"
MODEL_VERSION = "0.1.0"
# Total stride of each VGG stage output (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3).
STAGE_STRIDES = (1, 2, 4, 8, 16)
# Stages pooled over the lesion box; the deeper ones are pooled over the whole patch.
BOX_STAGES = 3


class ModelOutput(NamedTuple):
    """Per-lesion outputs. ``scores`` and ``scores_spl`` are logits (apply a sigmoid for
    probabilities); ``scores_spl`` is the final prediction (equal to ``scores`` when the
    score propagation layer is off); ``embedding`` is L2-normalised."""

    scores: Tensor  # N x C, s
    scores_spl: Tensor  # N x C, s~ = W s + b
    embedding: Tensor  # N x embed_dim


# VGG-16's layer configuration "D" (Simonyan & Zisserman 2015): conv widths, "M" = 2x2 max-pool.
VGG16_D: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def vgg16_bn_layout(widths: tuple[int, ...]) -> list[int | str]:
    """VGG-16's layer configuration "D" with each stage's width replaced, without the final
    max-pool (conv5_3 is the last feature map LesaNet uses)."""
    layout: list[int | str] = []
    stage = 0
    for item in VGG16_D:
        if item == "M":
            layout.append("M")
            stage += 1
        else:
            layout.append(widths[stage])
    return layout[:-1]


def vgg_bn_layers(layout: list[int | str]) -> nn.Sequential:
    """3x3 conv + batch norm + ReLU per width, a 2x2 max-pool per "M": the layer sequence
    (and state-dict names) of torchvision's ``vgg.make_layers(..., batch_norm=True)``."""
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            width = int(item)
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
    return nn.Sequential(*layers)


@functools.cache
def _torchvision_library_ops() -> Any:
    """``torch.ops.torchvision`` from torchvision's compiled library alone (forward kernels)."""
    spec = importlib.util.find_spec("torchvision")
    folder = Path(spec.origin).parent if spec is not None and spec.origin else None
    libraries = [
        lib for lib in (sorted(folder.glob("_C_stable.*")) if folder else []) if lib.suffix in (".so", ".pyd", ".dylib")
    ]
    if not libraries:
        raise RuntimeError("torchvision's compiled ops (_C_stable) not found; reinstall torchvision==0.29.1")
    torch.ops.load_library(str(libraries[0]))
    return torch.ops.torchvision


def roi_align(
    features: Tensor, rois: Tensor, size: int, spatial_scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """torchvision's ``roi_align`` over ``rois`` (K x 5: batch index, x1, y1, x2, y2).

    Importing the torchvision package costs about 1.7 s of CPU (its Python ops import
    ``torch._dynamo``): a third of a one-lesion ``predict``. Plain inference (no gradient,
    no autocast, not deterministic mode) calls the compiled forward kernel directly, which is
    what torchvision's wrapper calls there too; everything else (training, autocast, whose
    rules torchvision registers from Python, torch.compile's meta kernels) goes through the
    package, imported on first use.
    """
    needs_package = (
        "torchvision.ops" in sys.modules
        or (torch.is_grad_enabled() and (features.requires_grad or rois.requires_grad))
        or torch.is_autocast_enabled(features.device.type)
        or torch.are_deterministic_algorithms_enabled()
    )
    if needs_package:
        from torchvision.ops import roi_align as torchvision_roi_align  # heavy import: see above

        return torchvision_roi_align(
            features, rois, size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned
        )
    return _torchvision_library_ops().roi_align(features, rois, spatial_scale, size, size, sampling_ratio, aligned)


class RoIPool(nn.Module):
    """``roi_align`` of one feature map to ``size`` x ``size``, over the lesion box or the
    whole map. A module (not a bare function) so it shows in the layer table."""

    def __init__(self, size: int, stride: int, whole_patch: bool) -> None:
        super().__init__()
        self.size, self.stride, self.whole_patch = size, stride, whole_patch

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        n = features.shape[0]
        # RoIs stay float32 even when the features are bf16 (autocast): bf16 would round box
        # corners to 0.5 px above 64 px, and batch indices above 256. torchvision's autocast
        # rule for roi_align runs the op in float32.
        batch_idx = torch.arange(n, device=features.device, dtype=torch.float32)[:, None]
        if self.whole_patch:
            # The box is the whole feature map, in feature-cell units.
            h, w = features.shape[-2:]
            full = torch.tensor([0.0, 0.0, float(w), float(h)], device=features.device).expand(n, 4)
            rois, scale = torch.cat([batch_idx, full], 1), 1.0
        else:
            rois, scale = torch.cat([batch_idx, boxes.float()], 1), 1.0 / self.stride
        if features.dtype != torch.float32 and not torch.is_autocast_enabled(features.device.type):
            rois = rois.to(features.dtype)  # a model run in half precision without autocast
        # sampling_ratio=2: a fixed 2 x 2 samples per bin keeps the cost independent of box size.
        return roi_align(features, rois, self.size, spatial_scale=scale, sampling_ratio=2, aligned=True)

    def extra_repr(self) -> str:
        where = "whole patch" if self.whole_patch else "lesion box"
        return f"size={self.size}, stride={self.stride}, {where}"


class LesaNet(nn.Module):
    """Multiscale multilabel CNN with score propagation and a retrieval embedding."""

    def __init__(self, config: ModelConfig, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"LesaNet needs at least one label, got {num_labels}")
        self.config, self.num_labels = config, num_labels
        trunk = vgg_bn_layers(vgg16_bn_layout(config.widths))
        # Split the flat VGG sequence at its max-pools: stage k ends at conv{k+1}_x's ReLU.
        stages: list[nn.Sequential] = []
        current: list[nn.Module] = []
        for layer in trunk:
            if isinstance(layer, nn.MaxPool2d):
                stages.append(nn.Sequential(*current))
                current = []
            current.append(layer)
        stages.append(nn.Sequential(*current))
        self.stages = nn.ModuleList(stages)
        self.pools = nn.ModuleList(
            RoIPool(config.roi_size, stride, whole_patch=k >= BOX_STAGES) for k, stride in enumerate(STAGE_STRIDES)
        )
        area = config.roi_size * config.roi_size
        self.roi_fcs = nn.ModuleList(
            nn.Sequential(nn.Linear(width * area, config.roi_fc), nn.ReLU(inplace=True)) for width in config.widths
        )
        joint = config.roi_fc * len(config.widths)
        self.classifier = nn.Linear(joint, num_labels)
        self.spl = nn.Linear(num_labels, num_labels) if config.spl else None
        self.embedding = nn.Linear(joint, config.embed_dim)
        self.register_buffer("pixel_mean", torch.tensor(float(config.pixel_mean)), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation (trained from scratch, no downloaded weights).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)
        if self.spl is not None:
            # SPL starts as the identity, so s~ = s until training learns label relations.
            with torch.no_grad():
                self.spl.weight.copy_(torch.eye(self.num_labels))
                self.spl.bias.zero_()

    def preprocess(self, patches: Tensor) -> Tensor:
        """Cache pixels (uint8 or float in [0, 255]) -> float, pixel mean subtracted."""
        return patches.float() - cast(Tensor, self.pixel_mean)

    def stage_features(self, patches: Tensor) -> list[Tensor]:
        """Outputs of conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 (after BN + ReLU)."""
        h = self.preprocess(patches)
        if patches.is_cuda and next(self.parameters()).is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features

    def forward(self, patches: Tensor, boxes: Tensor) -> ModelOutput:
        """``patches`` N x 3 x P x P (cache pixels), ``boxes`` N x 4 (x1, y1, x2, y2) in patch pixels."""
        if patches.dim() != 4 or boxes.shape != (patches.shape[0], 4):
            raise ValueError(
                f"expected patches N x 3 x H x W and boxes N x 4, got {tuple(patches.shape)} and {tuple(boxes.shape)}"
            )
        features = self.stage_features(patches)
        pooled = [fc(pool(f, boxes).flatten(1)) for f, pool, fc in zip(features, self.pools, self.roi_fcs)]
        joint = torch.cat(pooled, 1)
        scores = self.classifier(joint)
        scores_spl = self.spl(scores) if self.spl is not None else scores
        embedding = F.normalize(self.embedding(joint).float(), dim=1)
        return ModelOutput(scores.float(), scores_spl.float(), embedding)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_summary(config: ModelConfig, num_labels: int) -> str:
    """Layer table (module, output shape, parameters) of one forward pass, and the total."""
    torch.manual_seed(0)
    model = LesaNet(config, num_labels).eval()
    rows: list[tuple[str, str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def hook(mod: nn.Module, _inputs, output, name: str = name) -> None:
                shape = tuple(output.shape) if isinstance(output, Tensor) else "?"
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append((name, type(mod).__name__, "x".join(str(s) for s in shape[1:]), params))

            hooks.append(module.register_forward_hook(hook))
    size = config.patch_size
    with torch.no_grad():
        model(
            torch.zeros(1, 3, size, size, dtype=torch.uint8),
            torch.tensor([[size * 0.3, size * 0.3, size * 0.7, size * 0.7]]),
        )
    for h in hooks:
        h.remove()
    width = max(len(r[0]) for r in rows)
    lines = [f"{'layer':<{width}}  {'type':<12} {'output (per lesion)':<20} {'params':>11}"]
    lines += [f"{n:<{width}}  {t:<12} {s:<20} {p:>11,}" for n, t, s, p in rows]
    total = count_parameters(model)
    lines.append(f"total parameters: {total:,} ({total / 1e6:.2f} M), labels C = {num_labels}")
    return "\n".join(lines)
