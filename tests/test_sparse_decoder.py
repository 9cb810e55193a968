"""Decoder layers computed only at the needed output pixels: exact there, whatever mix of
gathered and dense layers runs."""

from __future__ import annotations

import pytest
import torch

import core.model as model_module
import core.sparse_decoder as sparse
from core.model import PConvUNet
from tests.test_model import _randomise_bn


def _model(layers: int, seed: int) -> PConvUNet:
    torch.manual_seed(seed)
    model = PConvUNet(layers=layers, width=8).double().eval()
    _randomise_bn(model)
    return model


def _needed(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Thin strokes and single pixels, corners and edges included."""
    gen = torch.Generator().manual_seed(seed)
    needed = torch.rand(n, 1, h, w, generator=gen) > 0.985
    needed[0, 0, 5:9, 3 : w - 7] = True
    needed[-1, 0, 2 : h - 3, w // 2 : w // 2 + 2] = True
    needed[0, 0, 0, 0] = needed[-1, 0, h - 1, w - 1] = True
    return needed


@pytest.mark.parametrize("mode", ["default", "all_gathered", "alternating", "small_chunks"])
def test_needed_pixels_equal_dense_output(mode, monkeypatch):
    """float64: the gathered layers are the dense layer's sums in another order, so equal to
    rounding; pixels that are not needed differ (they are not computed)."""
    model = _model(5, 11)
    image = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    valid = (torch.rand(2, 1, 64, 96) > 0.3).double()
    valid[:, :, 20:44, 30:70] = 0  # a large hole: zero scales deep inside
    needed = _needed(2, 64, 96, 3)
    if mode == "all_gathered":
        monkeypatch.setattr(sparse, "GATHER_MAX_FRACTION", (1.0,))
    elif mode == "small_chunks":  # a few pixels per matrix product, chunks across phases
        monkeypatch.setattr(sparse, "GATHER_MAX_FRACTION", (1.0,))
        monkeypatch.setattr(sparse, "GATHER_CHUNK_ELEMENTS", 2000)
    elif mode == "alternating":  # dense layers between gathered ones, both ways round
        calls = []

        def alternate(wanted: torch.Tensor, level: int) -> bool:
            calls.append(wanted.shape[-1])
            return len(calls) % 2 == 1

        monkeypatch.setattr(model_module, "gather_pays", alternate)
    with torch.no_grad():
        dense = model(image, valid)
        got = model(image, valid, needed)
    mask = needed.expand_as(dense)
    torch.testing.assert_close(got[mask], dense[mask], rtol=0, atol=1e-12)
    assert not torch.allclose(got[~mask], dense[~mask])


def test_gathered_layer_runs_where_needed_pixels_are_few(monkeypatch):
    """With the shipped thresholds a thin stroke gathers at every level; a needed map covering
    everything gathers from level 2 on, the two finest levels run dense."""
    model = _model(5, 12)
    image = torch.rand(1, 3, 128, 128, dtype=torch.float64)
    valid = torch.ones(1, 1, 128, 128, dtype=torch.float64)
    valid[:, :, 60:66, 10:120] = 0
    needed = valid == 0
    counted = []
    real = sparse.gathered_layer
    monkeypatch.setattr(model_module, "gathered_layer",
                        lambda *a, **k: counted.append(a[2].shape[-1]) or real(*a, **k))
    with torch.no_grad():
        dense = model(image, valid)
        got = model(image, valid, needed)
        assert counted == [8, 16, 32, 64, 128]  # deepest first
        counted.clear()
        full = model(image, valid, torch.ones_like(needed))
    torch.testing.assert_close(got[needed.expand_as(got)], dense[needed.expand_as(dense)],
                               rtol=0, atol=1e-12)
    assert counted == [8, 16, 32]  # levels 2 and deeper gather at any fraction
    torch.testing.assert_close(full, dense, rtol=0, atol=1e-12)


def test_needed_under_bf16_autocast_and_weight_changes():
    """float32 weights under bf16 autocast (the CPU app's setting): within bf16 rounding of the
    dense path; the cached matrices follow an in-place weight change."""
    torch.manual_seed(13)
    model = PConvUNet(layers=5, width=8).eval()
    _randomise_bn(model)
    image = torch.rand(1, 3, 64, 64)
    valid = (torch.rand(1, 1, 64, 64) > 0.2).float()
    needed = _needed(1, 64, 64, 4)
    mask = needed.expand(1, 3, 64, 64)
    for _ in range(2):
        with torch.inference_mode():
            exact = model(image, valid)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = model(image, valid, needed).float()
        scale = exact.abs().max()
        assert (got[mask] - exact[mask]).abs().max() <= 0.05 * scale
        with torch.inference_mode():
            assert torch.allclose(model(image, valid, needed)[mask], exact[mask], atol=1e-5)
        with torch.no_grad():
            model.decoder[2].conv.weight.mul_(-1.0)


def test_needed_shape_must_match():
    model = PConvUNet(layers=4, width=4).eval()
    with pytest.raises(ValueError, match="needed"):
        model(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32),
              torch.ones(1, 1, 16, 32, dtype=torch.bool))


def test_needed_is_ignored_in_training():
    torch.manual_seed(14)
    model = PConvUNet(layers=4, width=4).train()
    image, valid = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.3).float()
    needed = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    needed[:, :, :4] = True
    torch.manual_seed(0)
    want = model(image, valid)
    got = model(image, valid, needed)
    torch.testing.assert_close(got, want)
