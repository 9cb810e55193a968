"""Each loss term against small hand-computed examples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.losses import InpaintingLoss, LossWeights, dilate_holes, gram_matrix, tv_loss


class Identity3(nn.Module):
    """A 'feature extractor' returning the image itself three times: easy to hand-compute."""

    def forward(self, x):
        return [x, x * 2, x[..., ::2, ::2]]


def _pair():
    target = torch.zeros(1, 1, 2, 2)
    output = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    valid = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    return output, target, valid


def test_valid_and_hole_terms_by_hand():
    output, target, valid = _pair()
    terms = InpaintingLoss(None)(output, target, valid)
    assert terms["valid"].item() == pytest.approx((1 + 3 + 4) / 4)
    assert terms["hole"].item() == pytest.approx(2 / 4)
    assert terms["perceptual"].item() == 0 and terms["style_out"].item() == 0


def test_gram_matrix_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # C=2, H=1, W=2
    g = gram_matrix(f.half())
    assert g.dtype == torch.float32
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / (2 * 1 * 2)
    torch.testing.assert_close(g, expected)


def test_perceptual_and_style_by_hand():
    output, target, valid = _pair()
    target = torch.full_like(output, 1.0)
    composite = valid * target + (1 - valid) * output  # [[1, 2], [1, 1]]
    terms = InpaintingLoss(Identity3())(output, target, valid)
    exp_perc = 0.0
    exp_style_out = 0.0
    exp_style_comp = 0.0
    for f in (lambda x: x, lambda x: 2 * x, lambda x: x[..., ::2, ::2]):
        exp_perc += (f(output) - f(target)).abs().mean() + (f(composite) - f(target)).abs().mean()
        g_gt = gram_matrix(f(target))
        exp_style_out += (gram_matrix(f(output)) - g_gt).abs().mean()
        exp_style_comp += (gram_matrix(f(composite)) - g_gt).abs().mean()
    assert terms["perceptual"].item() == pytest.approx(float(exp_perc))
    assert terms["style_out"].item() == pytest.approx(float(exp_style_out))
    assert terms["style_comp"].item() == pytest.approx(float(exp_style_comp))
    # hand values for the first map: |out - gt| = [0,1,2,3] -> 1.5; |comp - gt| = [0,1,0,0]
    assert float((output - target).abs().mean()) == 1.5


def test_total_uses_paper_weights():
    w = LossWeights()
    assert (w.valid, w.hole, w.perceptual, w.style_out, w.style_comp, w.tv) == (
        1.0, 6.0, 0.05, 120.0, 120.0, 0.1)
    torch.manual_seed(0)
    out, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    valid = (torch.rand(2, 1, 8, 8) > 0.5).float()
    t = InpaintingLoss(Identity3())(out, gt, valid)
    total = (t["valid"] + 6 * t["hole"] + 0.05 * t["perceptual"]
             + 120 * (t["style_out"] + t["style_comp"]) + 0.1 * t["tv"])
    assert t["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_tv_only_inside_dilated_hole():
    valid = torch.ones(1, 1, 6, 6)
    valid[..., 2, 2] = 0  # one hole pixel: R is the 3x3 block rows/cols 1..3
    region = dilate_holes(valid)
    assert region.sum().item() == 9
    comp = torch.zeros(1, 1, 6, 6)
    comp[..., 0, :] = 5.0  # big edges outside R must not count
    comp[..., 5, 5] = 7.0
    assert tv_loss(comp, valid).item() == 0.0
    comp[..., 2, 3] = 1.0  # inside R: pairs (2,2)-(2,3), (2,3)-(2,4)? (2,4) is outside R
    # Horizontal pairs in R touching (2,3): with (2,2) -> 1. Vertical: (1,3)-(2,3), (2,3)-(3,3).
    assert tv_loss(comp, valid).item() == pytest.approx(3.0 / 36)


def test_hole_term_ignores_known_pixels():
    out, gt, valid = _pair()
    t1 = InpaintingLoss(None)(out, gt, valid)["hole"]
    out2 = out.clone()
    out2[valid.bool()] += 100  # changing known-pixel predictions leaves the hole term alone
    assert InpaintingLoss(None)(out2, gt, valid)["hole"].item() == t1.item()
