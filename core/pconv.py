"""The partial convolution of Liu et al. (ECCV 2018), exactly as the v2 paper defines it.

For a window with features X and mask M covering C_in x k x k values::

    x' = W^T (X * M) * sum(1) / sum(M) + b   if sum(M) > 0, else 0 (bias included)
    m' = 1 if sum(M) > 0 else 0

The mask path never costs a second full convolution: every mask this network sees has the
same value in all channels of a concatenated group, so sum(M) over a window is the box sum of
a one-channel map holding, per pixel, the number of valid input channels. That map is a
weighted sum of one-channel group masks, and the box sum is a 1-channel k x k convolution.
The mask path runs in float32 outside autocast so the counts stay exact under bf16/fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _exact_dtype(t: torch.Tensor) -> torch.Tensor:
    """float32 for the mask path (float64 stays float64): counts must be exact integers."""
    return t if t.dtype == torch.float64 else t.float()


def scale_and_mask(
    window_sum: torch.Tensor, numerator: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``numerator / window_sum`` where the window holds a valid value, else 0; and the mask.
    Four kernels: compare, cast, divide (by a CPU scalar tensor: no fill), select."""
    valid = window_sum > 0.5
    new_mask = valid.to(window_sum.dtype)
    quotient = torch.div(torch.tensor(float(numerator), dtype=window_sum.dtype), window_sum)
    return torch.where(valid, quotient, 0.0), new_mask


class PartialConv2d(nn.Module):
    """A 2-D partial convolution; ``forward(x, valid_mask) -> (y, new_valid_mask)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.conv = nn.Conv2d(
            in_channels, out_channels, self.kernel_size, self.stride, self.padding, bias=False
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # sum(1) of the v2 paper: every value the window covers.
        self.window_size = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.register_buffer(
            "_box_kernel", torch.ones(1, 1, *self.kernel_size), persistent=False
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )

    # -- mask path -------------------------------------------------------------------------
    def mask_update(self, valid_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From a (N, 1, H, W) map of valid input channels per pixel, return the re-weighting
        ``scale`` (sum(1)/sum(M), 0 where the window is all hole) and the binary new mask."""
        with torch.autocast(device_type=valid_count.device.type, enabled=False):
            count = _exact_dtype(valid_count)
            window_sum = F.conv2d(
                count, self._box_kernel.to(count.dtype), stride=self.stride, padding=self.padding
            )
            return scale_and_mask(window_sum, self.window_size)

    def valid_count(self, valid_mask: torch.Tensor) -> torch.Tensor:
        """Per-pixel number of valid input channels for a (N, 1|C_in, H, W) mask."""
        if valid_mask.dim() != 4:
            raise ValueError(f"valid_mask must be 4-D (N, C, H, W), got {tuple(valid_mask.shape)}")
        if valid_mask.shape[1] == 1:
            return _exact_dtype(valid_mask) * self.in_channels
        if valid_mask.shape[1] == self.in_channels:
            return _exact_dtype(valid_mask).sum(dim=1, keepdim=True)
        raise ValueError(
            f"valid_mask must have 1 or {self.in_channels} channels, got {valid_mask.shape[1]}"
        )

    # -- feature path ----------------------------------------------------------------------
    def convolve(
        self,
        masked_x: torch.Tensor,
        scale: torch.Tensor,
        new_mask: torch.Tensor,
        zero_holes: bool = True,
    ) -> torch.Tensor:
        """Convolve features already multiplied by their mask and apply the re-weighting.

        raw * scale + b * m is computed as (raw * scale + b) * m (scale is 0 wherever m is 0):
        one fused addcmul and one in-place multiply, no full-size bias * mask temporary.
        ``zero_holes=False`` skips the multiply, leaving b in all-hole windows: only for a
        caller that multiplies by the mask again before anything mixes pixels or channels'
        statistics (the model in eval mode, where BatchNorm is a per-channel affine map)."""
        return self.reweight(self.conv(masked_x), scale, new_mask, zero_holes)

    def reweight(
        self,
        raw: torch.Tensor,
        scale: torch.Tensor,
        new_mask: torch.Tensor,
        zero_holes: bool = True,
    ) -> torch.Tensor:
        """The re-weighting and bias of ``convolve`` applied to ``raw``, this layer's
        convolution of the masked features however it was computed (the model's decoder
        computes it from the low-resolution features, see ``core.model``)."""
        scale = scale.to(raw.dtype)
        if self.bias is None:
            return raw * scale
        out = torch.addcmul(self.bias.to(raw.dtype).view(1, -1, 1, 1), raw, scale)
        return out.mul_(new_mask.to(raw.dtype)) if zero_holes else out

    def forward(
        self, x: torch.Tensor, valid_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        if valid_mask.shape[0] != x.shape[0] or valid_mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"valid_mask {tuple(valid_mask.shape)} does not match features {tuple(x.shape)}"
            )
        scale, new_mask = self.mask_update(self.valid_count(valid_mask))
        out = self.convolve(x * valid_mask.to(x.dtype), scale, new_mask)
        return out, new_mask
