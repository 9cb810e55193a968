"""The paper's loss: valid, hole, perceptual, style (output and composite) and TV terms.

Every L1 is a mean over its elements. Perceptual and style terms use a frozen feature
extractor returning three maps (VGG-16 pool1..pool3 by default, see core.backbones); the
extractor normalises its own input. Gram matrices and the style distance are computed in
float32 (fp16 overflows). TV runs over the composite inside R, the 1-pixel dilation of the
hole, counting only neighbour pairs that both lie in R; like the paper it is normalised by
the number of elements of the composite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

TERMS = ("valid", "hole", "perceptual", "style_out", "style_comp", "tv")


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights: 1, 6, 0.05, 120, 120, 0.1."""

    valid: float = 1.0
    hole: float = 6.0
    perceptual: float = 0.05
    style_out: float = 120.0
    style_comp: float = 120.0
    tv: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """K = psi^T psi / (C H W), in float32 whatever the input dtype."""
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def dilate_holes(valid_mask: torch.Tensor) -> torch.Tensor:
    """R: the hole region grown by one pixel (3 x 3), as a float {0, 1} map."""
    hole = 1.0 - valid_mask.float()
    return F.max_pool2d(hole, kernel_size=3, stride=1, padding=1)


def tv_loss(composite: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """Total variation of the composite over neighbour pairs that both lie in R."""
    region = dilate_holes(valid_mask)
    comp = composite.float()
    pair_h = region[..., :, 1:] * region[..., :, :-1]
    pair_v = region[..., 1:, :] * region[..., :-1, :]
    diff_h = (comp[..., :, 1:] - comp[..., :, :-1]).abs() * pair_h
    diff_v = (comp[..., 1:, :] - comp[..., :-1, :]).abs() * pair_v
    return (diff_h.sum() + diff_v.sum()) / comp.numel()


class InpaintingLoss(nn.Module):
    """``forward(output, target, valid_mask) -> dict`` of every term plus 'total'.

    ``feature_extractor=None`` drops the perceptual and style terms (they read 0).
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        weights: LossWeights | None = None,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.weights = weights or LossWeights()

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        output = output.float()
        target = target.float()
        valid = valid_mask.float()
        hole = 1.0 - valid
        composite = valid * target + hole * output
        terms: dict[str, torch.Tensor] = {
            "valid": (valid * (output - target)).abs().mean(),
            "hole": (hole * (output - target)).abs().mean(),
        }
        zero = output.new_zeros(())
        if self.feature_extractor is not None:
            batch = output.shape[0]
            feats = self.feature_extractor(torch.cat([output, composite, target], dim=0))
            perceptual, style_out, style_comp = zero, zero, zero
            for f in feats:
                f_out, f_comp, f_gt = f[:batch], f[batch : 2 * batch], f[2 * batch :].detach()
                perceptual = perceptual + (f_out.float() - f_gt.float()).abs().mean()
                perceptual = perceptual + (f_comp.float() - f_gt.float()).abs().mean()
                g_gt = gram_matrix(f_gt)
                style_out = style_out + (gram_matrix(f_out) - g_gt).abs().mean()
                style_comp = style_comp + (gram_matrix(f_comp) - g_gt).abs().mean()
            terms.update(perceptual=perceptual, style_out=style_out, style_comp=style_comp)
        else:
            terms.update(perceptual=zero, style_out=zero, style_comp=zero)
        terms["tv"] = tv_loss(composite, valid)
        w = self.weights
        terms["total"] = (
            w.valid * terms["valid"]
            + w.hole * terms["hole"]
            + w.perceptual * terms["perceptual"]
            + w.style_out * terms["style_out"]
            + w.style_comp * terms["style_comp"]
            + w.tv * terms["tv"]
        )
        return terms
