"""Eval-mode decoder layers computed only at the output pixels a caller needs.

Inpainting pastes the network's output only at the hole pixels (and the few around them that
resampling reads), but a dense decoder computes every pixel of the crop; for the thin brush
strokes of a large photo the needed pixels are 5-20 % of the fine levels. The encoder must stay
dense (the deepest features see the whole crop), but decoder layer L's output at a pixel reads
only a 3 x 3 window of its skip features and a 2 x 2 window of the level below (the phase
form, ``core.model.phase_kernels``). So the needed pixels of each level follow from the level
above (``needed_pyramid``), and a layer whose needed pixels are few enough gathers exactly
those windows and multiplies them by its kernels as matrices (``gathered_layer``): the same
sums as the dense convolution, in another order.

Pixels that are not needed hold zeros. A dense layer may follow a gathered one: its needed
outputs read only needed inputs, the rest of its output is unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.pconv import PartialConv2d

# Decoder level L gathers when at most GATHER_MAX_FRACTION[L] of its output pixels are needed
# (the last entry for all deeper levels); above that the dense convolution is cheaper. The
# output level's matrix product has 3 columns, a poor fit, so it gathers only for few pixels;
# from level 2 on (128+ channels) gathering was faster at any fraction, as the dense form's
# per-phase adds and re-weighting pass over the whole map (bench/needed_rules.py).
GATHER_MAX_FRACTION = (0.1, 0.5, 1.0)
# Values gathered for one matrix product at most (16 MB in bf16): bounds the memory.
GATHER_CHUNK_ELEMENTS = 1 << 23

# Offsets of the 2 x 2 low-resolution window of each output phase in the matrices below.
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


@torch.no_grad()
def needed_pyramid(needed: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """For ``needed`` (N, 1, H, W) bool output pixels, the bool maps of the pixels each decoder
    level (0 = the output, ``levels - 1`` = the deepest decoder output) must compute.

    Output pixel (y, x) of level L reads level L + 1 at rows y // 2 - 1 .. y // 2 + 1 (two of
    them, by phase) and likewise columns: a 2 x 2 any-pool, then a 3 x 3 dilation (a superset,
    by at most one pixel)."""
    maps = [needed.bool()]
    for _ in range(levels - 1):
        n_items, _, h, w = maps[-1].shape
        low = maps[-1].view(n_items, 1, h // 2, 2, w // 2, 2).any(5).any(3)
        rows = low.clone()  # boolean shifts: 10x faster than max-pooling a float copy
        rows[..., 1:] |= low[..., :-1]
        rows[..., :-1] |= low[..., 1:]
        grown = rows.clone()
        grown[..., 1:, :] |= rows[..., :-1, :]
        grown[..., :-1, :] |= rows[..., 1:, :]
        maps.append(grown)
    return maps


def gather_pays(wanted: torch.Tensor, level: int) -> bool:
    """Whether gathering beats the dense convolution for decoder level ``level`` (0 = the
    output) whose needed map is ``wanted``."""
    limit = GATHER_MAX_FRACTION[min(level, len(GATHER_MAX_FRACTION) - 1)]
    return limit >= 1.0 or int(wanted.sum()) <= limit * wanted.numel()


def padded_channels_last(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H + 2, W + 2, C), zero-padded by one pixel: each pixel's channels
    contiguous, so gathering a window copies whole rows."""
    n_items, channels, h, w = features.shape
    out = features.new_empty(n_items, h + 2, w + 2, channels)
    out[:, 1:-1, 1:-1].copy_(features.permute(0, 2, 3, 1))
    out[:, 0].zero_()  # only the border: the interior is all written
    out[:, -1].zero_()
    out[:, :, 0].zero_()
    out[:, :, -1].zero_()
    return out


def decoder_activation(values: torch.Tensor, bn: nn.Module, valid: torch.Tensor) -> torch.Tensor:
    """A decoder layer's BatchNorm, its holes zeroed again (``valid``: the layer's new mask),
    then leaky ReLU 0.2: one definition for the dense decoder (core.model) and the gathered
    pixels here, which must agree exactly."""
    return F.leaky_relu_(bn(values) * valid.to(values.dtype), 0.2)


def gathered_layer(
    low_padded: torch.Tensor,
    skip_padded: torch.Tensor,
    wanted: torch.Tensor,
    skip_mat: torch.Tensor,
    phase_mats: torch.Tensor,
    layer: PartialConv2d,
    bn: nn.Module,
    scale: torch.Tensor,
    new_mask: torch.Tensor,
    last: bool,
) -> torch.Tensor:
    """One eval-mode decoder layer at the ``wanted`` (N, 1, H, W) pixels only.

    ``low_padded`` (N, H/2 + 2, W/2 + 2, C_low) and ``skip_padded`` (N, H + 2, W + 2,
    C_skip): the level below and this level's skip features as ``padded_channels_last``
    makes them; ``skip_mat`` and ``phase_mats``: the layer's weight as
    ``PhaseKernelCache.matrices`` makes them; ``scale`` and ``new_mask``: this layer's entries
    of the mask pyramid. Returns the layer's output (after BN and activation unless ``last``)
    in the same padded channels-last form, zero where not wanted."""
    n_items, hp, wide, c_skip = skip_padded.shape
    w = wide - 2
    c_low, low_wide = low_padded.shape[-1], low_padded.shape[2]
    out_ch = skip_mat.shape[0]
    dtype = skip_mat.dtype
    device = skip_padded.device
    taps3 = (torch.arange(3, device=device)[:, None] * wide
             + torch.arange(3, device=device)[None, :]).view(1, 9)
    taps2 = torch.tensor([0, 1, low_wide, low_wide + 1], device=device).view(1, 4)
    # Pixels per matrix product: the gathered windows stay within GATHER_CHUNK_ELEMENTS
    # values whatever the map's size (a full 512 px level of 128 channels is 300M values).
    chunk = max(1, GATHER_CHUNK_ELEMENTS // (9 * c_skip + 4 * c_low))
    # (Re-weighting, BN and activation keep the products' dtype.)
    out = torch.zeros(n_items, hp, wide, out_ch, dtype=dtype, device=device)
    for n in range(n_items):
        ys, xs = wanted[n, 0].nonzero(as_tuple=True)
        # Pixels ordered by phase, so each phase's kernels apply to a block of rows.
        phase = (ys % 2) * 2 + xs % 2
        order = torch.argsort(phase, stable=True)
        ys, xs = ys[order], xs[order]
        counts = torch.bincount(phase, minlength=4).tolist()
        skip_rows = skip_padded[n].view(-1, c_skip)
        low_rows = low_padded[n].view(-1, c_low)
        bounds = [0]
        for phase_count in counts:
            bounds.append(bounds[-1] + phase_count)
        for start in range(0, bounds[-1], chunk):
            stop = min(bounds[-1], start + chunk)
            count = stop - start
            py, px = ys[start:stop], xs[start:stop]
            # Skip half: each pixel's 3 x 3 window (padded coordinates), taps then channels,
            # as in the matrix; one product for all phases (the deep levels are bound by
            # reading the matrix).
            index = (py * wide + px)[:, None] + taps3
            rows = skip_rows.index_select(0, index.view(-1)).view(count, 9 * c_skip)
            raw = torch.mm(rows.to(dtype), skip_mat.t())
            # Upsampled half: phase (a, b) of output (2i + a, 2j + b) reads the padded low map
            # at rows i + a .. i + a + 1 and columns j + b .. j + b + 1.
            for block, (a, b) in enumerate(_PHASES):
                lo, hi = max(start, bounds[block]), min(stop, bounds[block + 1])
                if lo >= hi:
                    continue
                base = (ys[lo:hi] // 2 + a) * low_wide + xs[lo:hi] // 2 + b
                cols = low_rows.index_select(0, (base[:, None] + taps2).view(-1))
                raw[lo - start : hi - start].addmm_(cols.view(hi - lo, 4 * c_low).to(dtype),
                                                    phase_mats[block].t())
            # Pixels as the batch dimension: re-weighting, BN and activation are per pixel.
            flat = py * w + px
            pixel_scale = scale[n].reshape(-1)[flat].view(count, 1, 1, 1)
            pixel_mask = new_mask[n].reshape(-1)[flat].view(count, 1, 1, 1)
            values = layer.reweight(raw.view(count, out_ch, 1, 1), pixel_scale, pixel_mask,
                                    zero_holes=last)
            if not last:
                values = decoder_activation(values, bn, pixel_mask)
            out[n].view(-1, out_ch).index_copy_(0, (py + 1) * wide + px + 1,
                                                values.view(count, out_ch))
    return out
