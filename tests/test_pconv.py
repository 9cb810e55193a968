"""PartialConv2d against a brute-force evaluation of the paper's multi-channel formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.pconv import PartialConv2d


def brute_force(layer: PartialConv2d, x: torch.Tensor, mask: torch.Tensor):
    """x' = W^T(X*M) * C*k*k / sum(M) + b where sum(M) > 0, else 0; m' = [sum(M) > 0]."""
    x = x.double()
    mask = mask.double().expand_as(x)
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    cols = F.unfold(x * mask, k, padding=p, stride=s)  # (N, C*k*k, L)
    mcols = F.unfold(mask, k, padding=p, stride=s)
    w = layer.conv.weight.double().reshape(layer.out_channels, -1)
    n = x.shape[0]
    out_h = (x.shape[2] + 2 * p[0] - k[0]) // s[0] + 1
    out_w = (x.shape[3] + 2 * p[1] - k[1]) // s[1] + 1
    sum_m = mcols.sum(dim=1)  # (N, L)
    sum_1 = x.shape[1] * k[0] * k[1]
    out = torch.zeros(n, layer.out_channels, cols.shape[-1], dtype=torch.float64)
    for b in range(n):
        for loc in range(cols.shape[-1]):
            if sum_m[b, loc] > 0:
                value = w @ cols[b, :, loc] * sum_1 / sum_m[b, loc]
                if layer.bias is not None:
                    value = value + layer.bias.double()
                out[b, :, loc] = value
    new_mask = (sum_m > 0).double().reshape(n, 1, out_h, out_w)
    return out.reshape(n, layer.out_channels, out_h, out_w), new_mask


CASES = [
    # in, out, kernel, stride, padding, bias, per-channel mask
    (3, 4, 3, 1, 1, True, False),
    (3, 5, 7, 2, 3, True, False),
    (4, 2, 5, 2, 2, True, True),
    (2, 3, 3, 1, 0, False, True),
    (6, 2, 3, 2, 1, True, True),
]


@pytest.mark.parametrize("cin,cout,k,s,p,bias,per_channel", CASES)
def test_matches_brute_force(cin, cout, k, s, p, bias, per_channel):
    torch.manual_seed(cin * 31 + k)
    layer = PartialConv2d(cin, cout, k, stride=s, padding=p, bias=bias).double()
    if bias:
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, cin, 13, 11, dtype=torch.float64)
    shape = (2, cin if per_channel else 1, 13, 11)
    mask = (torch.rand(shape) > 0.6).double()
    mask[0, :, 2:9, 1:8] = 0  # a hole block
    mask[1, :, :, :6] = 0  # all-hole windows for any kernel size here
    y, m = layer(x, mask)
    y_ref, m_ref = brute_force(layer, x, mask)
    torch.testing.assert_close(m, m_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    assert (m_ref == 0).any() and (m_ref == 1).any()  # both kinds of window were exercised
    assert (y[m.expand_as(y) == 0] == 0).all()  # all-hole windows are exactly 0, bias included


def test_mixed_groups_equal_multichannel_definition():
    """A concatenation of groups with different masks = weighted one-channel sums."""
    torch.manual_seed(1)
    layer = PartialConv2d(5, 3, 3, padding=1).double()
    torch.nn.init.normal_(layer.bias)
    a, b = torch.randn(1, 2, 9, 9).double(), torch.randn(1, 3, 9, 9).double()
    ma, mb = (torch.rand(1, 1, 9, 9) > 0.5).double(), (torch.rand(1, 1, 9, 9) > 0.3).double()
    full = torch.cat([ma.expand(1, 2, 9, 9), mb.expand(1, 3, 9, 9)], dim=1)
    y_ref, m_ref = brute_force(layer, torch.cat([a, b], 1), full)
    scale, new_mask = layer.mask_update(2 * ma + 3 * mb)
    y = layer.convolve(torch.cat([a * ma, b * mb], 1), scale.double(), new_mask.double())
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(new_mask.double(), m_ref)


def test_output_ignores_hole_values():
    torch.manual_seed(2)
    layer = PartialConv2d(3, 8, 5, stride=2, padding=2)
    x = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    x2 = torch.where(mask.bool(), x, torch.randn_like(x) * 100)
    torch.testing.assert_close(layer(x, mask)[0], layer(x2, mask)[0])


def test_mask_path_has_no_full_convolution():
    """The mask sums come from a 1-channel kernel, not a C_out x C_in ones-kernel conv."""
    layer = PartialConv2d(64, 128, 3, padding=1)
    assert layer._box_kernel.shape == (1, 1, 3, 3)
    assert sum(p.numel() for p in layer.parameters()) == 64 * 128 * 9 + 128


def test_mask_counts_exact_under_bf16_autocast():
    layer = PartialConv2d(512, 4, 3, padding=1)
    count = torch.zeros(1, 1, 5, 5)
    count[0, 0, 2, 2] = 1  # one valid channel in the window: ratio 4608
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scale, new_mask = layer.mask_update(count)
    assert scale.dtype == torch.float32
    assert scale[0, 0, 2, 2].item() == 512 * 9
    assert new_mask.sum().item() == 9


def test_bad_mask_shape_is_clear():
    layer = PartialConv2d(3, 4, 3, padding=1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        layer(torch.rand(1, 3, 8, 8), torch.ones(1, 2, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        layer(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 4, 8))
