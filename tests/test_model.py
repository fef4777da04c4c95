"""The LesaNet network: size, SPL initialisation, RoI geometry, shapes and input handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vision.config import ModelConfig, load_config
from vision.networks.model import STAGE_STRIDES, LesaNet, RoIPool, count_parameters, model_summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small() -> LesaNet:
    torch.manual_seed(0)
    return LesaNet(load_config(ROOT / "configs" / "cpu-small.yaml").model, 7).eval()


def test_paper_config_has_about_24_7_million_parameters():
    model = LesaNet(load_config(ROOT / "configs" / "paper.yaml").model, 171)
    assert count_parameters(model) == pytest.approx(24.7e6, rel=0.005)


def test_spl_starts_as_identity(small: LesaNet):
    assert small.spl is not None
    assert torch.equal(small.spl.weight, torch.eye(7))
    assert torch.equal(small.spl.bias, torch.zeros(7))
    x = torch.randint(0, 256, (2, 3, 120, 120), dtype=torch.uint8)
    out = small(x, torch.tensor([[30.0, 30, 60, 60], [10, 50, 40, 90]]))
    assert torch.allclose(out.scores_spl, out.scores)


def test_without_spl_final_scores_are_the_cnn_scores():
    model = LesaNet(ModelConfig(widths=(4, 4, 4, 4, 4), roi_fc=8, embed_dim=4, spl=False), 3).eval()
    assert model.spl is None
    out = model(torch.zeros(1, 3, 120, 120, dtype=torch.uint8), torch.tensor([[0.0, 0, 50, 50]]))
    assert out.scores_spl is out.scores


def test_outputs_shapes_and_unit_embedding(small: LesaNet):
    x = torch.randint(0, 256, (3, 3, 120, 120), dtype=torch.uint8)
    out = small(x, torch.tensor([[30.0, 30, 60, 60]] * 3))
    assert out.scores.shape == out.scores_spl.shape == (3, 7)
    assert out.embedding.shape == (3, 64)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(3), atol=1e-5)


def test_uint8_and_float_pixels_are_the_same_input(small: LesaNet):
    x = torch.randint(0, 256, (2, 3, 120, 120), dtype=torch.uint8)
    boxes = torch.tensor([[30.0, 30, 60, 60], [5, 5, 25, 40]])
    with torch.no_grad():
        assert torch.allclose(small(x, boxes).scores, small(x.float(), boxes).scores, atol=1e-5)


def test_stage_features_have_vgg_strides(small: LesaNet):
    feats = small.stage_features(torch.zeros(1, 3, 120, 120, dtype=torch.uint8))
    assert [f.shape[-1] for f in feats] == [120 // s for s in STAGE_STRIDES]
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64, 64]


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_roi_geometry_maps_patch_pixels_to_feature_cells(stride: int):
    """A feature map whose value is the pixel x (or y) at each cell centre; pooling a box
    must give the pixel coordinates of the 5 x 5 bin centres of that box."""
    size = 120 // stride
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) * stride  # pixel centre of each cell
    feature = torch.stack([centres.expand(size, size), centres[:, None].expand(size, size)])[None]
    box = torch.tensor([[20.0, 36.0, 70.0, 61.0]])  # x1, y1, x2, y2 in patch pixels
    pooled = RoIPool(5, stride, whole_patch=False)(feature, box)[0]
    bins = torch.arange(5, dtype=torch.float32) + 0.5
    expect_x = 20.0 + bins * (70.0 - 20.0) / 5
    expect_y = 36.0 + bins * (61.0 - 36.0) / 5
    assert torch.allclose(pooled[0], expect_x.expand(5, 5), atol=1e-4)
    assert torch.allclose(pooled[1], expect_y[:, None].expand(5, 5), atol=1e-4)


def test_whole_patch_pooling_ignores_the_box():
    feature = torch.randn(2, 3, 7, 7)
    pool = RoIPool(5, 16, whole_patch=True)
    a = pool(feature, torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]))
    b = pool(feature, torch.tensor([[30.0, 30, 100, 100], [0, 0, 5, 5]]))
    assert torch.equal(a, b)
    # bin means of a constant map are that constant
    assert torch.allclose(pool(torch.full((1, 1, 7, 7), 3.0), torch.zeros(1, 4)), torch.full((1, 1, 5, 5), 3.0))


def test_the_lesion_box_changes_the_scores(small: LesaNet):
    x = torch.randint(0, 256, (1, 3, 120, 120), dtype=torch.uint8)
    with torch.no_grad():
        a = small(x, torch.tensor([[10.0, 10, 30, 30]])).scores
        b = small(x, torch.tensor([[80.0, 80, 110, 110]])).scores
    assert not torch.allclose(a, b)


def test_bad_input_shapes_are_one_clear_error(small: LesaNet):
    with pytest.raises(ValueError, match="boxes N x 4"):
        small(torch.zeros(2, 3, 120, 120), torch.zeros(3, 4))


def test_summary_lists_layers_and_the_total():
    text = model_summary(load_config(ROOT / "configs" / "paper.yaml").model, 171)
    assert "pools.0" in text and "spl" in text and "embedding" in text
    assert text.splitlines()[-1].startswith("total parameters: 24,721,615 (24.72 M)")


def test_roi_pooling_under_bf16_autocast_keeps_batch_indices_and_boxes_exact():
    """bf16 holds integers exactly only up to 256: lesion 257 must still pool its own map."""
    n = 300
    values = (torch.arange(n) % 8).float()
    features = values[:, None, None, None].expand(n, 1, 8, 8).contiguous().bfloat16()
    boxes = torch.tensor([[1.0, 1.0, 6.0, 6.0]]).expand(n, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = RoIPool(5, 1, whole_patch=False)(features, boxes)
    assert torch.equal(pooled.float().mean((1, 2, 3)), values)
