"""PConvUNet: architecture, exactness against multi-channel masks, hole independence, BN freeze."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses import InpaintingLoss
from core.model import PConvUNet, PConvUNetConfig, build_model, phase_kernels
from tests.test_pconv import brute_force


def reference_forward(model: PConvUNet, image: torch.Tensor, valid: torch.Tensor):
    """The network evaluated with full multi-channel masks and the brute-force layer."""
    feats, masks = [image.double()], [valid.double().expand_as(image)]
    h, m = feats[0], masks[0]
    for layer, bn in zip(model.encoder, model.encoder_bn):
        h, m1 = brute_force(layer, h, m)
        h = F.relu(bn(h))
        m = m1.expand_as(h)
        feats.append(h)
        masks.append(m)
    out, m = feats[-1], masks[-1]
    for i, (layer, bn) in enumerate(zip(model.decoder, model.decoder_bn)):
        skip, skip_m = feats[model.layers - 1 - i], masks[model.layers - 1 - i]
        up = F.interpolate(out, scale_factor=2.0, mode="nearest")
        up_m = F.interpolate(m, scale_factor=2.0, mode="nearest")
        out, m1 = brute_force(layer, torch.cat([up, skip], 1), torch.cat([up_m, skip_m], 1))
        if i < model.layers - 1:
            out = F.leaky_relu(bn(out), 0.2)
        m = m1.expand_as(out)
    return out


def _randomise_bn(model: torch.nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.3)


def test_paper_architecture_8_levels():
    model = PConvUNet(layers=8)
    enc = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in model.encoder]
    assert enc == [(3, 64, 7, 2), (64, 128, 5, 2), (128, 256, 5, 2)] + [
        (c, 512, 3, 2) for c in (256, 512, 512, 512, 512)
    ]
    dec = [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in model.decoder]
    assert dec == [(1024, 512, 3)] * 4 + [(768, 256, 3), (384, 128, 3), (192, 64, 3), (67, 3, 3)]
    assert isinstance(model.encoder_bn[0], torch.nn.Identity)
    assert isinstance(model.decoder_bn[-1], torch.nn.Identity)
    assert len(PConvUNet(layers=7).encoder) == 7


@pytest.mark.parametrize("training", [False, True])
def test_whole_model_equals_multichannel_definition(training):
    """Eval mode (fast path without the pre-BN multiply) and training mode (batch stats)."""
    torch.manual_seed(0)
    model = PConvUNet(layers=4, width=4).double()
    _randomise_bn(model)
    for layer in model.modules():
        if hasattr(layer, "bias") and isinstance(layer.bias, torch.nn.Parameter):
            torch.nn.init.normal_(layer.bias, std=0.2)
    model.train(training)
    image = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    valid = (torch.rand(2, 1, 32, 48) > 0.4).double()
    valid[1, :, 4:28, 4:40] = 0
    with torch.no_grad():
        ours = model(image, valid)
        ref = reference_forward(model, image, valid)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layers,size", [(4, 64), (7, 256)])
def test_model_output_ignores_hole_values(layers, size):
    torch.manual_seed(1)
    model = PConvUNet(layers=layers, width=16 if layers == 7 else 8)
    _randomise_bn(model)
    model.eval()
    image = torch.rand(1, 3, size, size)
    valid = (torch.rand(1, 1, size, size) > 0.3).float()
    valid[..., size // 4 : size // 2, size // 4 : size // 2] = 0
    noisy = torch.where(valid.bool(), image, torch.rand_like(image) * 50 - 25)
    with torch.no_grad():
        torch.testing.assert_close(model(image, valid), model(noisy, valid), rtol=0, atol=0)


def test_phase_kernels_equal_conv_of_upsampled_map():
    """The identity the eval-mode decoder rests on, for odd sizes and uneven weights."""
    torch.manual_seed(3)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    low = torch.randn(2, 4, 3, 7, dtype=torch.float64)
    want = F.conv2d(F.interpolate(low, scale_factor=2.0, mode="nearest"), weight, padding=1)
    blocks = F.conv2d(low, phase_kernels(weight), padding=1).view(2, 2, 2, 5, 4, 8)
    got = torch.empty_like(want)
    for a in (0, 1):
        for b in (0, 1):
            got[:, :, a::2, b::2] = blocks[:, a, b, :, a : a + 3, b : b + 7]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _eval_pair(model: PConvUNet, image: torch.Tensor, valid: torch.Tensor, **autocast):
    """Eval-mode output by output phase and by upsample-and-concatenate."""
    outs = []
    for phases in (True, False):
        model.phase_decoder = phases
        with torch.inference_mode(), torch.autocast("cpu", **autocast):
            outs.append(model(image, valid).float())
    model.phase_decoder = True
    return outs


def test_phase_decoder_follows_weight_changes():
    """The phase kernels are cached between calls; new weights (a load, an optimiser step)
    must not be served stale kernels."""
    torch.manual_seed(4)
    model = PConvUNet(layers=4, width=8).eval()
    _randomise_bn(model)
    image = torch.rand(1, 3, 32, 32)
    valid = (torch.rand(1, 1, 32, 32) > 0.3).float()
    first, _ = _eval_pair(model, image, valid, enabled=False)
    model.load_state_dict(PConvUNet(layers=4, width=8).state_dict())
    phases, plain = _eval_pair(model, image, valid, enabled=False)
    torch.testing.assert_close(phases, plain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(phases, first)
    with torch.no_grad():
        model.decoder[1].conv.weight.mul_(-1.0)  # in place, as an optimiser step
    phases, plain = _eval_pair(model, image, valid, enabled=False)
    torch.testing.assert_close(phases, plain, rtol=1e-5, atol=1e-5)
    # Through .data (or a fused optimiser step) the version does not move: a training loop's
    # switch to eval mode clears the cache.
    model.decoder[2].conv.weight.data.mul_(-1.0)
    model.train().eval()
    phases, plain = _eval_pair(model, image, valid, enabled=False)
    torch.testing.assert_close(phases, plain, rtol=1e-5, atol=1e-5)


def test_phase_decoder_under_bf16_autocast():
    """Within bf16's rounding of the upsample-and-concatenate path (both round differently)."""
    torch.manual_seed(5)
    model = PConvUNet(layers=5, width=8).eval()
    _randomise_bn(model)
    image = torch.rand(2, 3, 64, 96)
    valid = (torch.rand(2, 1, 64, 96) > 0.3).float()
    valid[:, :, 16:48, 20:70] = 0
    phases, plain = _eval_pair(model, image, valid, dtype=torch.bfloat16)
    exact, _ = _eval_pair(model, image, valid, enabled=False)
    scale = exact.abs().max()
    assert (phases - exact).abs().max() <= 0.05 * scale
    assert (phases - plain).abs().max() <= 0.05 * scale


def test_size_not_multiple_is_clear_error():
    model = PConvUNet(layers=4, width=4)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 20, 32), torch.ones(1, 1, 20, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(1, 3, 32, 32), torch.ones(1, 3, 32, 32))


def test_freeze_encoder_bn_keeps_stats_and_affine():
    torch.manual_seed(2)
    model = PConvUNet(layers=4, width=8)
    model.freeze_encoder_bn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    image = torch.rand(2, 3, 64, 64)
    valid = (torch.rand(2, 1, 64, 64) > 0.3).float()
    loss = InpaintingLoss(None)(model(image, valid), image, valid)["total"]
    loss.backward()
    opt.step()
    after = model.state_dict()
    enc_bn = [k for k in before if k.startswith("encoder_bn.")]
    dec_bn = [k for k in before if k.startswith("decoder_bn.") and "running_mean" in k]
    assert enc_bn and dec_bn
    for k in enc_bn:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in dec_bn)  # decoder BN still trains
    assert all(not p.requires_grad for bn in model.encoder_bn for p in bn.parameters())


def test_config_roundtrip_and_unknown_keys():
    cfg = PConvUNetConfig(layers=5, width=16)
    assert build_model(cfg.to_dict()).config == cfg
    with pytest.raises(ValueError, match="unknown model settings"):
        PConvUNetConfig.from_dict({"layers": 5, "depth": 3})
