"""The PConv U-Net of the paper: ``layers`` encoder and ``layers`` decoder partial convolutions.

The mask path depends only on the input mask, so the whole pyramid of re-weighting scales and
binary masks is computed first (one-channel, float32, no gradient) and the feature path then
runs without any mask convolutions. Every mask in the network is kept as one channel per
concatenated group, and a decoder layer's window sums use the group widths as weights, which
equals the multi-channel definition exactly.

In eval mode a decoder layer never builds its 2x nearest-upsampled input: a 3 x 3 convolution
of a nearest-upsampled map equals four 2 x 2 convolutions of the low-resolution map, one per
output phase (``phase_kernels``). That is 16 instead of 36 multiply-adds per low-resolution
pixel for the upsampled half of the decoder's input channels, about half of the network's
arithmetic, and no upsample or concatenation (``bench/speed.py``; docs/performance.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.pconv import PartialConv2d, scale_and_mask
from core.sparse_decoder import (
    decoder_activation,
    gather_pays,
    gathered_layer,
    needed_pyramid,
    padded_channels_last,
)

ENCODER_KERNELS = (7, 5, 5)  # then 3 for every deeper layer


@dataclass(frozen=True)
class PConvUNetConfig:
    """Architecture settings; stored inside every checkpoint."""

    layers: int = 8
    width: int = 64  # channels of the first layer; doubles per level up to 8 * width
    in_channels: int = 3

    def encoder_channels(self) -> list[int]:
        return [min(self.width * 2**i, self.width * 8) for i in range(self.layers)]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PConvUNetConfig:
        known = {k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(unknown)}")
        return cls(**known)


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) kernel -> (4 * O, I, 2, 2): the kernels that, run with padding 1 on a map,
    give the four output phases of the 3 x 3 convolution (padding 1) of that map upsampled 2x
    by nearest neighbour; phase (a, b) (output row parity a, column parity b) is block
    2a + b, and its value at (2i + a, 2j + b) is the block's output at (i + a, j + b).

    Why: the upsampled rows 2i + a - 1, 2i + a, 2i + a + 1 are low-resolution rows
    (i - 1, i, i) for a = 0 and (i, i, i + 1) for a = 1, so the taps that read the same row
    add up: (w0, w1 + w2) and (w0 + w1, w2). Likewise for columns."""
    rows = (torch.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], 2),
            torch.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], 2))
    blocks = []
    for r in rows:
        blocks.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1))
        blocks.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1))
    return torch.cat(blocks, 0)


class PhaseKernelCache:
    """A decoder weight split for ``upsampled_conv``: the skip half (contiguous) and the
    ``phase_kernels`` of the upsampled half, kept while the weight is unchanged and no gradient
    is wanted (making them costs ~5 % of a 512 px pass on a CPU core). Stored in the dtype the
    convolution runs in: bf16 under CPU autocast, half the memory and no cast per call.

    A change through ``.data`` or by a fused optimiser step does not bump a weight's version;
    PConvUNet.train() / eval() clear the cache, so a training loop's evaluation never sees
    stale kernels."""

    def __init__(self) -> None:
        self._kernels: dict[int, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}

    def clear(self) -> None:
        self._kernels.clear()

    def get(self, slot: int, weight: torch.Tensor, up_width: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(skip-half weight, phase kernels) for ``weight`` (layer ``slot`` of the caller)."""
        return self._cached(slot, weight, up_width, self._split)

    def matrices(self, slot: int, weight: torch.Tensor, up_width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same split as matrices with the channels last in each tap, as
        ``core.sparse_decoder`` gathers them: (O, 9 * C_skip) and (4, O, 4 * C_low)."""
        return self._cached(-1 - slot, weight, up_width, self._matrices)

    @staticmethod
    def _split(weight: torch.Tensor, up_width: int, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return (weight[:, up_width:].to(dtype, memory_format=torch.contiguous_format),
                phase_kernels(weight[:, :up_width]).to(dtype))

    @staticmethod
    def _matrices(weight: torch.Tensor, up_width: int, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        out_ch = weight.shape[0]
        skip = weight[:, up_width:].permute(0, 2, 3, 1).reshape(out_ch, -1)
        kernels = phase_kernels(weight[:, :up_width]).view(4, out_ch, up_width, 2, 2)
        return (skip.to(dtype).contiguous(),
                kernels.permute(0, 1, 3, 4, 2).reshape(4, out_ch, -1).to(dtype).contiguous())

    def _cached(self, slot: int, weight: torch.Tensor, up_width: int, build
                ) -> tuple[torch.Tensor, torch.Tensor]:
        # Not kept while a CUDA graph is captured either: the graph must read the weights
        # themselves, or a later weight change would replay stale (or freed) copies.
        dtype = weight.dtype
        if torch.is_autocast_enabled(weight.device.type) and weight.dtype == torch.float32:
            dtype = torch.get_autocast_dtype(weight.device.type)
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or weight.is_inference() \
                or (weight.is_cuda and torch.cuda.is_current_stream_capturing()):
            return build(weight, up_width, dtype)
        key = (weight._version, weight.data_ptr(), weight.shape, weight.dtype, weight.device,
               dtype, up_width)
        cached = self._kernels.get(slot)
        if cached is None or cached[0] != key:
            cached = (key, build(weight.detach(), up_width, dtype))
            self._kernels[slot] = cached
        return cached[1]


def upsampled_conv(
    low: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor, up_width: int,
    cache: PhaseKernelCache, slot: int,
) -> torch.Tensor:
    """conv2d(cat(upsample_nearest_2x(low), skip), weight, padding=1) without building either:
    the skip half as it is, the upsampled half from ``low`` by output phase
    (``phase_kernels``, from ``cache`` as layer ``slot``), added into the skip half's output
    in place."""
    n, _, h, w = low.shape
    skip_weight, kernels = cache.get(slot, weight, up_width)
    out = F.conv2d(skip, skip_weight, padding=1)
    phases = F.conv2d(low, kernels, padding=1).view(n, 2, 2, -1, h + 1, w + 1).to(out.dtype)
    for a in (0, 1):
        for b in (0, 1):
            out[:, :, a::2, b::2] += phases[:, a, b, :, a : a + h, b : b + w]
    return out


class PConvUNet(nn.Module):
    """``forward(image, valid_mask) -> raw output``; image (N, 3, H, W) in [0, 1],
    valid_mask (N, 1, H, W) with 1 = known pixel; H and W multiples of 2**layers."""

    def __init__(self, layers: int = 8, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if layers < 4:
            raise ValueError("PConvUNet needs at least 4 levels")
        self.config = PConvUNetConfig(layers=layers, width=width, in_channels=in_channels)
        channels = self.config.encoder_channels()
        self.encoder = nn.ModuleList()
        self.encoder_bn = nn.ModuleList()
        previous = in_channels
        for i, out_ch in enumerate(channels):
            k = ENCODER_KERNELS[i] if i < len(ENCODER_KERNELS) else 3
            self.encoder.append(PartialConv2d(previous, out_ch, k, stride=2, padding=k // 2))
            self.encoder_bn.append(nn.BatchNorm2d(out_ch) if i > 0 else nn.Identity())
            previous = out_ch
        # Decoder layer j combines the upsampled deeper features with the skip of level j-1.
        skips = [in_channels, *channels[:-1]]
        outs = [in_channels, *channels[:-1]]
        self.decoder = nn.ModuleList()
        self.decoder_bn = nn.ModuleList()
        self.decoder_widths: list[tuple[int, int]] = []
        up = channels[-1]
        for level in reversed(range(layers)):
            out_ch = outs[level]
            self.decoder.append(PartialConv2d(up + skips[level], out_ch, 3, stride=1, padding=1))
            self.decoder_bn.append(nn.BatchNorm2d(out_ch) if level > 0 else nn.Identity())
            self.decoder_widths.append((up, skips[level]))
            up = out_ch
        for i, (layer, (up_w, skip_w)) in enumerate(zip(self.decoder, self.decoder_widths)):
            box = layer._box_kernel
            self.register_buffer(
                f"_decoder_box_{i}", torch.cat([box * up_w, box * skip_w], dim=1), persistent=False
            )
        self._encoder_bn_frozen = False
        # Eval mode: decoder convolutions by output phase (module docstring); False runs the
        # upsample-and-concatenate form, as training always does (its speed on a GPU is what
        # was measured; the phases there are not).
        self.phase_decoder = True
        self._phase_kernels = PhaseKernelCache()
        self.reset_parameters()

    @property
    def layers(self) -> int:
        return self.config.layers

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.config.layers

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, PartialConv2d):
                nn.init.kaiming_normal_(module.conv.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -- BatchNorm freezing for the fine-tuning stage ----------------------------------------
    def freeze_encoder_bn(self) -> None:
        """Freeze encoder BN running statistics AND affine parameters (paper's stage 2)."""
        self._encoder_bn_frozen = True
        for bn in self.encoder_bn:
            for p in bn.parameters():
                p.requires_grad_(False)
            bn.eval()

    def train(self, mode: bool = True) -> PConvUNet:
        super().train(mode)
        self._phase_kernels.clear()  # (PhaseKernelCache: weights may change unseen)
        if self._encoder_bn_frozen:
            for bn in self.encoder_bn:
                bn.eval()
        return self

    # -- forward ---------------------------------------------------------------------------
    @torch.no_grad()
    def mask_pyramid(self, valid_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(scale, new_mask) for every layer, encoder first, from the input mask alone.

        Encoder: window_size / (C_in * boxsum(m)) is computed as (k * k) / boxsum(m) (equal,
        both correctly rounded). Decoder: the weighted count up_width * up(m) + skip_width * m
        and its box sum are one 2-channel convolution with weights (up_width, skip_width)."""
        dtype = torch.float64 if valid_mask.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=valid_mask.device.type, enabled=False):
            masks = [valid_mask.to(dtype)]
            plan: list[tuple[torch.Tensor, torch.Tensor]] = []
            for layer in self.encoder:
                window_sum = F.conv2d(masks[-1], layer._box_kernel.to(dtype),
                                      stride=layer.stride, padding=layer.padding)
                kh, kw = layer.kernel_size
                scale, new_mask = scale_and_mask(window_sum, kh * kw)
                plan.append((scale, new_mask))
                masks.append(new_mask)
            deep = masks[-1]
            for i, layer in enumerate(self.decoder):
                skip = masks[self.layers - 1 - i]
                pair = torch.cat([F.interpolate(deep, scale_factor=2.0, mode="nearest"), skip], 1)
                kernel = getattr(self, f"_decoder_box_{i}").to(dtype)
                window_sum = F.conv2d(pair, kernel, stride=layer.stride, padding=layer.padding)
                scale, new_mask = scale_and_mask(window_sum, layer.window_size)
                plan.append((scale, new_mask))
                deep = new_mask
        return plan

    def check_input(self, image: torch.Tensor, valid_mask: torch.Tensor) -> None:
        if image.dim() != 4 or image.shape[1] != self.config.in_channels:
            raise ValueError(
                f"image must be (N, {self.config.in_channels}, H, W), got {tuple(image.shape)}"
            )
        if valid_mask.dim() != 4 or valid_mask.shape[1] != 1:
            raise ValueError(f"valid_mask must be (N, 1, H, W), got {tuple(valid_mask.shape)}")
        if valid_mask.shape[0] != image.shape[0] or valid_mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"valid_mask {tuple(valid_mask.shape)} does not match image {tuple(image.shape)}"
            )
        h, w = image.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"image height and width must be multiples of {self.multiple} for a "
                f"{self.layers}-level PConvUNet, got {h} x {w}; pad the input first"
            )

    def forward(self, image: torch.Tensor, valid_mask: torch.Tensor,
                needed: torch.Tensor | None = None) -> torch.Tensor:
        """``needed`` (N, 1, H, W) bool, eval mode only: the output is exact where it is True
        and unspecified elsewhere; decoder layers with few needed pixels compute only those
        (``core.sparse_decoder``). Ignored in training or with ``phase_decoder`` off."""
        self.check_input(image, valid_mask)
        if needed is not None and needed.shape != valid_mask.shape:
            raise ValueError(f"needed {tuple(needed.shape)} does not match valid_mask "
                             f"{tuple(valid_mask.shape)}")
        plan = self.mask_pyramid(valid_mask)
        valid = valid_mask.to(image.dtype)
        features = [image * valid]  # features of each level, already multiplied by their mask
        h = features[0]
        for i, (layer, bn) in enumerate(zip(self.encoder, self.encoder_bn)):
            scale, new_mask = plan[i]
            has_bn = isinstance(bn, nn.BatchNorm2d)
            # In training BN's batch statistics need the exact zeros at holes; in eval BN is a
            # per-channel affine map and the multiply below restores them.
            h = layer.convolve(h, scale, new_mask, zero_holes=self.training or not has_bn)
            if has_bn:
                h = bn(h) * new_mask.to(h.dtype)  # relu(z) * m == relu(z * m) for m in {0, 1}
            h = F.relu_(h)
            features.append(h)
        out = features[-1]
        sparse = needed is not None and not self.training and self.phase_decoder
        wanted = needed_pyramid(needed, self.layers) if sparse else []
        padded = None  # ``out`` zero-padded by one pixel, when a gathered layer made it
        for i, (layer, bn) in enumerate(zip(self.decoder, self.decoder_bn)):
            level = self.layers - 1 - i  # of the output: 0 is full resolution
            scale, new_mask = plan[self.layers + i]
            skip = features[level]
            last = level == 0
            if sparse and gather_pays(wanted[level], level):
                skip_mat, phase_mats = self._phase_kernels.matrices(
                    i, layer.conv.weight, self.decoder_widths[i][0])
                low = padded if padded is not None else padded_channels_last(out)
                padded = gathered_layer(low, padded_channels_last(skip), wanted[level],
                                        skip_mat, phase_mats, layer, bn, scale, new_mask, last)
                out = padded[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
                continue
            padded = None
            if self.training or not self.phase_decoder:
                up = F.interpolate(out, scale_factor=2.0, mode="nearest")
                out = layer.convolve(torch.cat([up, skip.to(up.dtype)], dim=1), scale, new_mask,
                                     zero_holes=self.training or last)
            else:
                raw = upsampled_conv(out, skip, layer.conv.weight, self.decoder_widths[i][0],
                                     self._phase_kernels, i)
                out = layer.reweight(raw, scale, new_mask, zero_holes=last)
            if not last:
                out = decoder_activation(out, bn, new_mask)
        return out


def build_model(config: PConvUNetConfig | dict | None = None) -> PConvUNet:
    """Build a PConvUNet from a config object or the dict stored in a checkpoint."""
    if config is None:
        config = PConvUNetConfig()
    elif isinstance(config, dict):
        config = PConvUNetConfig.from_dict(config)
    return PConvUNet(layers=config.layers, width=config.width, in_channels=config.in_channels)
