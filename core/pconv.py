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
            new_mask = (window_sum > 0.5).to(count.dtype)
            scale = self.window_size / window_sum.clamp(min=1.0) * new_mask
        return scale, new_mask

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
        self, masked_x: torch.Tensor, scale: torch.Tensor, new_mask: torch.Tensor
    ) -> torch.Tensor:
        """Convolve features already multiplied by their mask and apply the re-weighting."""
        raw = self.conv(masked_x)
        out = raw * scale.to(raw.dtype)
        if self.bias is not None:
            out = out + self.bias.to(raw.dtype).view(1, -1, 1, 1) * new_mask.to(raw.dtype)
        return out

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
