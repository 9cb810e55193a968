"""Inpainting photos of any size with a trained PConvUNet: the API the app and CLI use.

A photo is never shrunk as a whole. Holes are grouped into clusters; each cluster is cut out
with surrounding context, run through the network at native resolution (downscaled only when
the crop is larger than the model's working size, or its holes thicker than the model was
trained on; a long cluster is cut into tiles instead), and only the hole pixels are pasted back
into the full-resolution photo. Pixels outside the hole are returned bit-exact. On a CPU with
several torch threads, the crops of several clusters run at the same time (same output).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.checkpoint import CheckpointError, model_from_checkpoint
from core.masks import binarize_mask, grow_mask
from core.model import PConvUNet
from core.resources import shipped_model_path

DEFAULT_WORK_SIZE = 512
PRECISIONS = ("auto", "fp32", "bf16")
_GRID = 16  # cell size (pixels) used to group holes into clusters
_MIN_SIDE = 128  # never shrink a crop below this for the network
# Pixels around the holes whose output is computed too: LANCZOS resampling of the network's
# output reads 3 px on each side (at the network's scale), plus one for rounding.
NEEDED_MARGIN = 4
# Inpainter.tile_shrink on a CPU.
CPU_TILE_SHRINK = 0.5


class InpaintCancelled(Exception):
    """Raised when ``should_abort`` returned True between steps."""


@dataclass
class InpaintResult:
    raw: np.ndarray  # network output where it ran, input elsewhere; (H, W, 3) uint8
    composite: np.ndarray  # input outside the hole, network output inside; (H, W, 3) uint8
    device: str = "cpu"
    notices: list[str] = field(default_factory=list)


@dataclass
class _Fill:
    """One cluster's fill, ready to paste into the photo: arrays the size of its box."""

    rows: slice  # the cluster's box in the photo
    cols: slice
    paste: np.ndarray  # the pixels to write (this cluster's holes, and others in its box)
    out: np.ndarray  # the network's fill (for ``raw``)
    smoothed: np.ndarray | None  # the fill the composite gets, when smoothed
    notices: list[str]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without it is a clear error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use --device cpu")
    if name == "cpu" or name.startswith("cuda"):
        return torch.device(name)
    raise ValueError(f"unknown device '{device}'; use auto, cpu or cuda")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 runs
    emulated and is slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private API: absent in other torch versions
        return False


@functools.cache
def per_thread_torch_threads() -> bool:
    """Whether each thread can have its own torch thread count: with torch's OpenMP backend
    (its wheels' default). The native backend has one pool and ignores a second count."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means float32.

    'auto' is bfloat16 on CPUs that have it natively (the network runs ~1.7x faster; on the
    val photos PSNR moved by +0.01 dB) and float32 everywhere else, CUDA included. The mask
    path stays float32 in every case (see core.pconv)."""
    name = str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{describe_device(device)} has no bfloat16 support; use fp32")
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None


def _memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU: its convolutions run 1.25x faster so (bench/speed.py)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return "CPU"


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Accept (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8; return (H, W, 3) uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {tuple(np.shape(image))}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image is empty: shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return arr


def as_hole_mask(hole_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binarise a hole mask (True / nonzero-white = fill) and check it matches the image."""
    arr = np.asarray(hole_mask)
    if arr.ndim != 2:
        raise ValueError(f"hole_mask must be (H, W), got shape {arr.shape}")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"mask size {arr.shape[1]} x {arr.shape[0]} does not match image size "
            f"{shape[1]} x {shape[0]}"
        )
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iu" and arr.size and arr.max() <= 1 and arr.min() >= 0:
        return arr.astype(bool)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"hole_mask must be bool or numeric, got {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("hole_mask contains NaN or inf")
    return binarize_mask(arr)


def _hole_box(hole: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the True pixels, bottom/right exclusive; None if none."""
    rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def hole_clusters(hole_mask: np.ndarray, context: int) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, bottom, right) of groups of holes closer than ``context``."""
    return _cluster_cells(hole_mask, context)[0]


def _cluster_cells(
    hole_mask: np.ndarray, context: int
) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """``hole_clusters``' boxes, and a grid of _GRID-pixel cells: k + 1 where a cell holds holes
    of the k-th cluster, 0 where it holds none (a box can hold another cluster's holes)."""
    h, w = hole_mask.shape
    gh, gw = math.ceil(h / _GRID), math.ceil(w / _GRID)
    padded = np.zeros((gh * _GRID, gw * _GRID), dtype=bool)
    padded[:h, :w] = hole_mask
    cells = padded.reshape(gh, _GRID, gw, _GRID).any(axis=(1, 3))
    reach = max(1, math.ceil(context / _GRID))
    # Dilate the occupied cells by ``reach`` so nearby holes join one cluster.
    near = np.zeros_like(cells)
    ys, xs = np.nonzero(cells)
    for y, x in zip(ys, xs):
        near[max(0, y - reach) : y + reach + 1, max(0, x - reach) : x + reach + 1] = True
    labels = np.zeros(cells.shape, dtype=np.int32)
    boxes: list[tuple[int, int, int, int]] = []
    for y0, x0 in zip(ys, xs):
        if labels[y0, x0]:
            continue
        label = len(boxes) + 1
        queue = deque([(y0, x0)])
        labels[y0, x0] = label
        members: list[tuple[int, int]] = []
        while queue:
            y, x = queue.popleft()
            if cells[y, x]:
                members.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < gh and 0 <= nx < gw and near[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        my = [m[0] for m in members]
        mx = [m[1] for m in members]
        top, left = min(my) * _GRID, min(mx) * _GRID
        bottom, right = min(h, (max(my) + 1) * _GRID), min(w, (max(mx) + 1) * _GRID)
        t, lft, b, rgt = _hole_box(hole_mask[top:bottom, left:right])  # type: ignore[misc]
        boxes.append((top + t, left + lft, top + b, left + rgt))
    labels[~cells] = 0
    return boxes, labels


def _expand(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) to length ``want`` around its centre, clipped to [0, limit)."""
    want = min(max(want, hi - lo), limit)
    lo = max(0, (lo + hi) // 2 - want // 2)
    hi = lo + want
    if hi > limit:
        lo, hi = limit - want, limit
    return lo, hi


def _cells(lo: int, hi: int, most: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into the fewest near-equal parts of at most ``most`` pixels."""
    n = max(1, math.ceil((hi - lo) / most))
    edges = [lo + round(i * (hi - lo) / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _resize_rgb(
    arr: np.ndarray, size: tuple[int, int], resample: int = Image.Resampling.LANCZOS
) -> np.ndarray:
    """Resize (H, W, 3) uint8 to (width, height) = size."""
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, resample))


def _resize_rgb_at(arr: np.ndarray, size: tuple[int, int], where: np.ndarray,
                   tile: int = 128) -> np.ndarray:
    """``_resize_rgb(arr, size)`` (LANCZOS) with its second pass computed only in the
    ``tile``-pixel squares of the output that hold a ``where`` pixel, zero elsewhere: a thin
    stroke's crop is mostly context, and the upscale costs per output pixel (13 ms for 0.8 MP
    on a CPU core).

    PIL resizes in two passes, horizontal then vertical, rounding and clipping to 8 bits in
    between, so the passes are run here one at a time, in that order: the horizontal one over
    every row (as PIL's), the vertical one per square from a box of that result. A box resize
    left to choose its own order can run the vertical pass first and differ by 20+ levels at
    saturated edges. As it is, a square differs from the whole resize only where its box
    coordinates round: by 1 level, in under 0.1 % of the values."""
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    width, height = size
    out = np.zeros((height, width, 3), np.uint8)
    wide = np.asarray(Image.fromarray(arr).resize((width, arr.shape[0]),
                                                  Image.Resampling.LANCZOS))
    sy = arr.shape[0] / height
    rows = np.add.reduceat(where.any(axis=1), np.arange(0, height, tile)) > 0
    cols = np.add.reduceat(where.any(axis=0), np.arange(0, width, tile)) > 0
    for tx in np.flatnonzero(cols):
        x0, x1 = tx * tile, min(width, tx * tile + tile)
        strip = Image.fromarray(np.ascontiguousarray(wide[:, x0:x1]))
        for ty in np.flatnonzero(rows):
            y0, y1 = ty * tile, min(height, ty * tile + tile)
            if not where[y0:y1, x0:x1].any():
                continue
            out[y0:y1, x0:x1] = np.asarray(strip.resize(
                (x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=(0, y0 * sy, x1 - x0, y1 * sy)))
    return out


def _downscale_holes(hole: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A low-resolution pixel is a hole if any pixel of its footprint is (never leak holes).

    In 8 bits PIL rounds between its two BOX passes, so past about 22x per axis a lone hole
    pixel's 255 / (nx * ny) rounds to 0 and is lost; such shrinks (rare: only crops of very
    thick holes in large photos get them) run in float, 3x slower and exact."""
    if (hole.shape[1], hole.shape[0]) == size:
        return hole
    area_shrink = hole.shape[0] * hole.shape[1] / (size[0] * size[1])
    if area_shrink <= 100:  # at most 255 / ~121 per pixel: never rounds to 0
        img = Image.fromarray(hole.astype(np.uint8) * 255)
    else:
        img = Image.fromarray(hole.astype(np.float32))
    return np.asarray(img.resize(size, Image.Resampling.BOX)) > 0


def _erode(hole: np.ndarray) -> np.ndarray:
    """One 3 x 3 erosion of a bool mask, edge pixels repeated outward (as PIL's MinFilter):
    separable, so four boolean passes instead of a 9-pixel rank filter (~10x faster)."""
    rows = hole.copy()
    rows[:, 1:] &= hole[:, :-1]
    rows[:, :-1] &= hole[:, 1:]
    out = rows.copy()
    out[1:] &= rows[:-1]
    out[:-1] &= rows[1:]
    return out


def _tight(hole: np.ndarray) -> np.ndarray:
    """The part of ``hole`` inside its bounding box plus a one-pixel ring: erosions give the
    same result there as on the whole mask (the ring is known pixels, or the mask's edge)."""
    box = _hole_box(hole)
    if box is None:
        return hole[:0, :0]
    top, left, bottom, right = box
    return hole[max(0, top - 1) : bottom + 1, max(0, left - 1) : right + 1]


def hole_radius(hole: np.ndarray, limit: int) -> int:
    """Chessboard radius of the thickest hole: 3 x 3 erosions until it vanishes (<= limit)."""
    img = _tight(np.asarray(hole, dtype=bool))
    radius = 0
    while radius < limit and img.any():
        img = _erode(img)
        radius += 1
    return radius


def hole_thickness(hole: np.ndarray, limit: int) -> int:
    """``hole_radius`` of a mask of any size, approximate (within ``limit`` / 32 px or so, and
    a few pixels above one megapixel), where it is measured on blocks that are wholly hole:
    a 12-MP mask or a thick hole costs no more than a 1-MP mask with a thin one."""
    hole = _tight(np.asarray(hole, dtype=bool))
    block = max(1, math.ceil(math.sqrt(hole.size / 1_000_000)), math.ceil(limit / 32))
    if block == 1:
        return hole_radius(hole, limit)
    # edge pixels repeated up to whole blocks, as the erosions treat the edge
    hole = np.pad(hole, ((0, -hole.shape[0] % block), (0, -hole.shape[1] % block)), mode="edge")
    h, w = hole.shape
    blocks = hole.reshape(h // block, block, w // block, block).all(axis=(1, 3))
    radius = hole_radius(blocks, math.ceil(limit / block))
    if radius:
        return min(limit, radius * block + block // 2)
    return min(limit, max(1, block // 2)) if hole.any() else 0  # thinner than a block


def _check_smoothing(value: object, source: str) -> tuple[float, float, float] | None:
    """(near sigma, far sigma, ramp) from a model file or a caller, checked; None/0 = off."""
    if value is None or value == 0:
        return None
    try:
        near, far, ramp = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{source}: bad fill_smoothing {str(value)[:40]!r}") from None
    if not (0.0 < near <= far <= 16.0 and 1.0 <= ramp <= 256.0):
        raise ValueError(f"{source}: fill_smoothing {value!r} is outside 0 < near <= far <= 16, "
                         "1 <= ramp <= 256")
    return near, far, ramp


def _reflect(index: np.ndarray, size: int, mirror: bool) -> np.ndarray:
    """Indices outside [0, size) folded back in: mirrored without repeating the edge pixel
    (torch's 'reflect' padding), or clamped to it (``mirror`` False: 'replicate')."""
    if not mirror or size == 1:
        return np.clip(index, 0, size - 1)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def _blur_window(
    image: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], sigmas: tuple[float, ...]
) -> list[torch.Tensor]:
    """Separable Gaussian blurs of ``image`` (H, W, 3) over rows x cols only, one (3, h, w)
    float32 per sigma: equal to blurring the whole image with mirrored borders (edge pixels
    repeated where the image is smaller than the kernel) and cutting the window out, at the
    cost of the window alone. The window is read once for all sigmas."""
    radii = [max(1, math.ceil(3.0 * sigma)) for sigma in sigmas]
    outer = max(radii)
    mirror = min(image.shape[:2]) > outer
    if not mirror and min(image.shape[:2]) > min(radii):  # the border rule differs by sigma
        return [_blur_window(image, rows, cols, (sigma,))[0] for sigma in sigmas]
    ys = _reflect(np.arange(rows[0] - outer, rows[1] + outer), image.shape[0], mirror)
    xs = _reflect(np.arange(cols[0] - outer, cols[1] + outer), image.shape[1], mirror)
    img = torch.from_numpy(image[np.ix_(ys, xs)]).permute(2, 0, 1).float()
    blurred = []
    for sigma, radius in zip(sigmas, radii):
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x * x) / (2.0 * sigma * sigma))
        kernel = kernel / kernel.sum()
        cut = outer - radius
        window = img[:, cut : img.shape[1] - cut, cut : img.shape[2] - cut]
        blurred.append(_taps(_taps(window, kernel, 2), kernel, 1))
    return blurred


def _taps(image: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """The 'valid' 1-D correlation of ``image`` with ``kernel`` along ``dim``, as one scaled
    add per tap: 20x faster on a CPU core than a depthwise conv2d of the same kernel (torch's
    grouped convolution runs a slow generic path), with the same result up to rounding."""
    length = image.shape[dim] - kernel.numel() + 1
    out = image.narrow(dim, 0, length) * kernel[0]
    for tap in range(1, kernel.numel()):
        out.add_(image.narrow(dim, tap, length), alpha=float(kernel[tap]))
    return out


def _known_distance(hole: np.ndarray, cap: int) -> np.ndarray:
    """Chessboard distance (float32) of each pixel to the nearest known one, capped at
    ``cap``: 0 on known pixels, 1 on a hole's rim. Grows the known region one 3 x 3 step at
    a time, so it costs ``cap`` 3 x 3 dilations at most."""
    known = ~hole
    distance = np.zeros(hole.shape, np.float32)
    for _ in range(cap):
        distance += ~known
        if known.all():
            break
        known = grow_mask(known, 1)
    return distance


def _blend_scales(coarse: np.ndarray, fine: np.ndarray, hole: np.ndarray, band: int
                  ) -> np.ndarray:
    """``fine`` within ``band`` px of the known pixels, ``coarse`` deeper in, linearly between
    (weight of ``coarse``: distance / band): see Inpainter.edge_band."""
    weight = (_known_distance(hole, band) / np.float32(band))[..., None]
    mixed = coarse.astype(np.float32) * weight + fine.astype(np.float32) * (1.0 - weight)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def _smooth_fill(
    composite: np.ndarray, hole: np.ndarray, near: float, far: float, ramp: float,
    keep: int = 0,
) -> np.ndarray:
    """The composite blurred with ``near`` sigma at the hole's edge, rising to ``far`` sigma
    ``ramp`` pixels (chessboard distance) from the nearest known pixel.

    Why: the network's fill carries pixel-scale speckle, and the further a pixel is from known
    ones the less its fine detail can be right; on the validation photos this smoothing raised
    PSNR and SSIM in every hole-size bucket (resources/MODEL_CARD.md). Known pixels take part
    in the blur, so the fill meets its surroundings without a seam; only hole pixels are used.

    Computed over the holes' bounding box grown by ``keep`` pixels only (a thin stroke across
    a crop costs its own area, not the crop's): pixels there are as if the whole image had been
    smoothed; pixels further out are returned unchanged.
    """
    out = np.array(composite, copy=True)
    box = _hole_box(hole)
    if box is None:
        return out
    h, w = hole.shape
    rows = (max(0, box[0] - keep), min(h, box[2] + keep))
    cols = (max(0, box[1] - keep), min(w, box[3] + keep))
    with torch.inference_mode():
        if far > near:
            blurred_near, blurred_far = _blur_window(composite, rows, cols, (near, far))
        else:
            blurred_near = blurred_far = _blur_window(composite, rows, cols, (near,))[0]
        # Chessboard distance to the nearest known pixel, capped at the ramp: grow the known
        # region one 3 x 3 step at a time (over a frame wide enough for the cap).
        steps = math.ceil(ramp)
        frame = (max(0, rows[0] - steps), min(h, rows[1] + steps),
                 max(0, cols[0] - steps), min(w, cols[1] + steps))
        distance = _known_distance(hole[frame[0] : frame[1], frame[2] : frame[3]], steps)
        distance = distance[rows[0] - frame[0] : rows[1] - frame[0],
                            cols[0] - frame[2] : cols[1] - frame[2]]
        weight = torch.from_numpy(distance / np.float32(ramp)).clamp_(max=1.0)
        smoothed = blurred_near + weight * (blurred_far - blurred_near)
        smoothed = smoothed.round_().clamp_(0, 255).to(torch.uint8)
    out[rows[0] : rows[1], cols[0] : cols[1]] = smoothed.permute(1, 2, 0).numpy()
    return out


MAX_PASSES = 3  # as is, mirrored left-right, mirrored top-bottom
# Extra passes only where a hole is this thick (chessboard radius, px) at the scale the network
# runs: on 144 of the val pairs a single pass differed from the median of three by more than
# 60 levels on over 0.1 % of the hole in 18 of 115 crops with radius 18+, and in none of 29
# thinner ones (resources/MODEL_CARD.md); thin strokes are spared the extra time. (It was 16, a
# margin below that; with context sized to the holes' thickness, brush strokes in large photos
# run sharper and their crossings reach 16-17, which tripled a compact 12-MP hole's CPU time.)
# On a GPU every crop gets them: there they cost milliseconds, and on thin brush strokes in the
# large validation photos they still gained 0.14 dB (docs/evaluation/large_photos/) for 3x the
# time on a CPU.
PASSES_MIN_RADIUS = 18


def check_passes(value: object, source: str) -> int:
    """A pass count from a caller, checked: a whole number 1-3."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PASSES:
        raise ValueError(f"{source}: passes must be 1, 2 or 3, got {str(value)[:20]!r}")
    return value


def _setting(payload: dict, key: str, path: str | Path, lo: int, hi: int) -> int | None:
    """An integer inference setting stored in a checkpoint (None when absent or 0); anything
    but a whole number in [lo, hi] comes from a damaged or hostile file."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{path}: bad {key} {str(value)[:40]!r} in the checkpoint")
    if value == 0:
        return None
    if not lo <= value <= hi:
        raise CheckpointError(f"{path}: {key} {value} in the checkpoint is outside {lo}-{hi}")
    return value


@dataclass
class _Cluster:
    """A cluster as ``Inpainter._cluster_plan`` measured it, ready to cut into windows."""

    box: tuple[int, int, int, int]
    margin: int  # context on each side
    floor: int  # the smallest crop side its thickness allows (max_hole_radius)
    scale: float  # the scale its thickest hole needs, at most 1
    thickness: int | None  # its thickest hole's radius, when measured
    own_cells: np.ndarray | None  # _cluster_cells' grid, True where it has holes


class Inpainter:
    """Runs a PConvUNet on photos of any size; see module docstring for the method."""

    # Context on each side of a cluster, in multiples of its thickest hole's radius (see
    # _tiles; docs/evaluation/large_photos/ compares settings).
    context_per_thickness = 2
    # The smallest crop side around a hole, as a fraction of the working size (_crop_side;
    # docs/evaluation/large_photos/crop_floor.py compares settings).
    crop_floor = 0.5
    # On a CPU, by default (tile_shrink unset), a job whose full-scale tiles cost at most this
    # many network runs on a working-size square gets them (_plan_crops): about 1.5 s of
    # network time on one core of a 2-core AMD EPYC in bf16 (0.156 s a run; _run_cost errs
    # high, so the real work is often less).
    full_scale_budget = 10.0
    # Crops run at once on a CPU, at most (each holds its own activations; _crop_workers).
    max_crop_workers = 4

    def __init__(
        self,
        model: PConvUNet,
        device: str | torch.device = "auto",
        work_size: int = DEFAULT_WORK_SIZE,
        source: str | None = None,
        max_hole_radius: int | None = None,
        precision: str = "auto",
        fill_smoothing: tuple[float, float, float] | None = None,
        passes: int = 1,
        edge_band: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.model = model.eval().to(self.device, memory_format=_memory_format(self.device))
        self.multiple = model.multiple
        self.work_size = max(self.multiple, int(work_size) // self.multiple * self.multiple)
        self.source = source or "(in memory)"
        self.max_hole_radius = max_hole_radius
        # (near sigma, far sigma, ramp in pixels): see _smooth_fill; None leaves fills as the
        # network made them.
        self.fill_smoothing = _check_smoothing(fill_smoothing, self.source)
        self.passes = check_passes(passes, self.source)
        # Pixels (at the working scale) from the known ones over which a crop run coarser for
        # max_hole_radius takes its fill from a second run at the working scale; None: off.
        if edge_band is not None and (not isinstance(edge_band, int) or isinstance(edge_band, bool)
                                      or not 1 <= edge_band <= 256):
            raise ValueError(f"{self.source}: edge_band must be a whole number of pixels "
                             f"from 1 to 256 or None, got {edge_band!r}")
        self.edge_band = edge_band
        # Passes of that second run; None: the model's (_fill_box says why, on a CPU too).
        self.edge_passes: int | None = None
        self._needed_only: bool | None = None  # see needed_only
        self._tile_shrink: float | None = None  # see tile_shrink

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        passes: int | None = None,
    ) -> Inpainter:
        """Load a checkpoint or model file; None means the model shipped in resources/.
        ``passes`` (1-3, see ``_forward``) overrides the file's ``flip_passes``."""
        if path is None:
            path = shipped_model_path()
            if path is None:
                raise CheckpointError(
                    "no trained model is shipped in resources/model/; pass a checkpoint "
                    "written by core.train (--checkpoint PATH)"
                )
        model, payload = model_from_checkpoint(path)
        # Capped: one network pass must stay short enough to cancel and to close the app.
        work_size = _setting(payload, "work_size", path, 16, 2048) or DEFAULT_WORK_SIZE
        radius = _setting(payload, "max_hole_radius", path, 1, 4096)
        try:
            smoothing = _check_smoothing(payload.get("fill_smoothing"), str(path))
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        if passes is None:
            passes = _setting(payload, "flip_passes", path, 1, MAX_PASSES) or 1
        edge_band = _setting(payload, "edge_band", path, 1, 256)
        return cls(model, device=device, work_size=work_size, source=str(path),
                   max_hole_radius=radius, precision=precision, fill_smoothing=smoothing,
                   passes=passes, edge_band=edge_band)

    @property
    def min_crop(self) -> int:
        """The smallest crop side run around a hole (when the photo has that much)."""
        return self._crop_side(0)

    def _crop_side(self, need: int) -> int:
        """The crop side for ``need`` pixels of hole and context.

        At least ``crop_floor`` (half) of the working size (eighth session; 3/4 before). Small
        holes (discs of radius 6-30 px, docs/evaluation/large_photos/crop_floor.py): +0.07 dB
        in the full-size val originals (10 of 16 better) in 0.62x the time, -0.01 dB in the 24
        val photos at their own size (25 of 48 better, 20 worse) in 0.73x; brush strokes in
        the originals +0.003 dB. An earlier model had lost 0.03 dB with it. Up to the working
        size, rounded up to the model multiple, so the network's padding is real photo, not a
        mirrored copy; a larger crop is downscaled to the working size anyway."""
        need = max(need, int(self.work_size * self.crop_floor))
        if need > self.work_size:
            return need
        return min(self.work_size, math.ceil(need / self.multiple) * self.multiple)

    @property
    def needed_only(self) -> bool:
        """Whether decoder layers compute only the pixels pasted (core.sparse_decoder): on a
        CPU, unless set (the bench's dense variant); a setting outlives ``to()``."""
        return self.device.type == "cpu" if self._needed_only is None else self._needed_only

    @needed_only.setter
    def needed_only(self, value: bool) -> None:
        self._needed_only = bool(value)

    @property
    def _context(self) -> int:
        """The least context around a cluster, and how close holes join one."""
        return min(max(32, self.work_size // 8), self.work_size // 4)

    @property
    def _thickness_cap(self) -> int:
        """The hole radius above which even a working-size crop, shrunk to _MIN_SIDE px at
        most (_fill_box), cannot bring a hole down to max_hole_radius: thickness measurements
        stop there. 0 without max_hole_radius."""
        if not self.max_hole_radius:
            return 0
        return self.work_size * self.max_hole_radius // _MIN_SIDE + 1

    @property
    def tile_shrink(self) -> float:
        """How far a long cluster's extent may shrink its crop beyond the scale its holes'
        thickness needs before it is cut into tiles (``_tiles``); 0: never tiles.

        Unless set: 1.0 on a GPU (every tile at that scale: a tile costs milliseconds there),
        0.5 on a CPU, where a job within ``full_scale_budget`` still gets 1.0 (_plan_crops).
        Long brush strokes on the full-size validation photos
        (docs/evaluation/large_photos/results_s10.json, 1 thread): one shrunk crop 31.00 dB in
        0.68 s, 0.5 +1.01 dB in 1.43 s, 0.75 and 1.0 +1.67 / +1.66 dB in 2.28 / 2.87 s. 0.5
        keeps scattered strokes on a 12-MP photo within 1.5 s on 2 cores (1.32 s;
        docs/performance.md, tenth session)."""
        if self._tile_shrink is not None:
            return self._tile_shrink
        return CPU_TILE_SHRINK if self.device.type == "cpu" else 1.0

    @tile_shrink.setter
    def tile_shrink(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"tile_shrink must be from 0 to 1, got {value!r}")
        self._tile_shrink = float(value)

    @property
    def device_name(self) -> str:
        name = describe_device(self.device)
        return f"{name} (bfloat16)" if self.autocast_dtype == torch.bfloat16 else name

    def to(self, device: str | torch.device) -> Inpainter:
        device = resolve_device(device)
        self.autocast_dtype = resolve_precision(self.precision, device)
        self.device = device
        self.model.to(self.device, memory_format=_memory_format(self.device))
        return self

    # -- the public call -------------------------------------------------------------------
    def inpaint(
        self,
        image: np.ndarray,
        hole_mask: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
        should_abort: Callable[[], bool] | None = None,
    ) -> InpaintResult:
        """Fill ``hole_mask`` (True = fill) in ``image`` (H, W, 3) uint8; see InpaintResult."""
        rgb = as_rgb8(image)
        hole = as_hole_mask(hole_mask, rgb.shape[:2])
        raw = rgb.copy()
        composite = rgb.copy()  # filled box by box, like raw (smoothed there if asked)
        notices: list[str] = []
        if not hole.any():
            notices.append("the mask is empty: nothing to fill")
            return InpaintResult(raw, composite, self.device_name, notices)
        if hole.all():
            raise ValueError("the mask covers the whole image: there is nothing to fill from")
        context = self._context
        clusters, labels = _cluster_cells(hole, context)
        plans = [self._cluster_plan(hole, box, context, labels == k + 1)
                 for k, box in enumerate(clusters)]
        crops = self._plan_crops(hole, plans)
        boxes = [box for box, _ in crops]
        windows = [window for _, window in crops]
        costs = [self._crop_cost(window) for window in windows]
        shares = self._crop_workers(costs)

        def fill(index: int) -> _Fill:
            return self._fill_box(rgb, hole, boxes[index], windows[index])

        if len(shares) == 1:
            for i in range(len(boxes)):
                if should_abort is not None and should_abort():
                    raise InpaintCancelled()
                if progress is not None:
                    progress(i, len(boxes))
                self._paste(fill(i), raw, composite, notices)
        else:
            self._fill_in_parallel(fill, costs, shares, raw, composite, notices,
                                   progress, should_abort)
        if progress is not None:
            progress(len(boxes), len(boxes))
        return InpaintResult(raw, composite, self.device_name, notices)

    def _plan_crops(self, hole: np.ndarray, plans: list[_Cluster]
                    ) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """(box, window) of every crop for the measured clusters: tiles at ``tile_shrink``, or
        at full scale when that is set and the whole job's network work at full scale is
        within ``full_scale_budget`` (a CPU's default only): a job of a few strokes gets the
        sharper fill at little cost; one of many keeps the CPU's speed."""
        shrink = self.tile_shrink
        if self._tile_shrink is None and 0 < shrink < 1 and self.full_scale_budget:
            full = [self._tiles(hole, plan, 1.0) for plan in plans]
            work = sum(self._run_cost(window, plan.thickness)
                       for plan, tiles in zip(plans, full) for _, window in tiles)
            if work <= self.full_scale_budget:
                return [crop for tiles in full for crop in tiles]
        return [crop for plan in plans for crop in self._tiles(hole, plan, shrink)]

    def _run_cost(self, window: tuple[int, int, int, int], thickness: int | None) -> float:
        """A crop's network work, in network runs on a working-size square, as _fill_box will
        spend it: its area at the scale the network runs, times the passes a hole of
        ``thickness`` (the cluster's thickest) gets on a CPU; for a crop run coarser for
        max_hole_radius, the coarse run and the edge band's run at that scale. On the safe
        side: the radius _fill_box measures on the downscaled holes (which only grow) may be
        up to 2 px above ``thickness`` times the scale, and each choice takes the dearer of
        the two; a thickness measured only as at least its cap counts as thicker than any."""
        t, b, lft, rgt = window
        side = max(b - t, rgt - lft)
        factor = min(1.0, self.work_size / side)
        area = self._crop_cost(window) / self.work_size**2
        if not self.max_hole_radius or thickness is None:
            return area * self.passes
        low = math.inf if thickness >= self._thickness_cap else thickness * factor
        high = low + 2  # what _fill_box may measure
        if high <= self.max_hole_radius:
            return area * (self.passes if high >= PASSES_MIN_RADIUS else 1)
        # the coarse run as large as the lower radius would make it, its passes as the higher
        shrink = min(1.0, max(self.max_hole_radius / max(low, self.max_hole_radius),
                              _MIN_SIDE / (side * factor)))
        coarse_passes = self.passes if high * shrink >= PASSES_MIN_RADIUS else 1
        edge = area * (self.edge_passes or self.passes) if self.edge_band else 0.0
        return area * shrink**2 * coarse_passes + edge

    def _crop_workers(self, costs: list[float]) -> list[int]:
        """Torch threads for each crop run at once, for crops of ``costs`` (``_crop_cost``) on
        this device: one entry when they run one after another (as always on a GPU).

        Several crops at once, each on a share of torch's threads, where no crop dominates the
        work: a 512 px crop keeps two cores only ~75 % busy inside one operator, and the work
        around the network (resizing, smoothing) runs on one core. Scattered strokes on a
        12-MP photo with two threads: 1.43-1.53 -> 1.19-1.24 s (docs/performance.md, ninth
        session). Where one crop is more than half the work (a single large hole beside small
        ones), it runs alone with every thread, as before. (Measured on 2 cores only.)"""
        threads = torch.get_num_threads()
        if (self.device.type != "cpu" or threads < 2 or len(costs) < 2
                or self.max_crop_workers < 2 or not per_thread_torch_threads()):
            return [threads]
        if max(costs) > sum(costs) / 2:
            return [threads]
        workers = min(threads, len(costs), self.max_crop_workers)
        return [threads // workers + (i < threads % workers) for i in range(workers)]

    def _crop_cost(self, window: tuple[int, int, int, int]) -> float:
        """A crop's network work, roughly: its area at the scale the network runs."""
        t, b, lft, rgt = window
        factor = min(1.0, self.work_size / max(b - t, rgt - lft))
        return (b - t) * (rgt - lft) * factor * factor

    def _fill_in_parallel(
        self,
        fill: Callable[[int], _Fill],
        costs: list[float],
        shares: list[int],
        raw: np.ndarray,
        composite: np.ndarray,
        notices: list[str],
        progress: Callable[[int, int], None] | None,
        should_abort: Callable[[], bool] | None,
    ) -> None:
        """Run ``fill`` for every crop on one pool thread per entry of ``shares`` (its torch
        threads), largest crops first (so no large one starts last and runs alone), pasting
        in the crops' own order: where a cluster's box holds another cluster's holes, the
        later cluster's fill wins, as when the crops run one after another. (The model's
        phase-kernel cache may be filled twice at once; both copies are the same.)

        Each pool thread takes its share of threads once, at its start, after torch's own
        per-thread setup (which applies the process-wide count, the last one any thread set);
        the caller's count is set again at the end, so threads started later get it. One job
        at a time per process is assumed: another thread setting torch's count meanwhile
        could change what a crop thread started with."""
        total = len(costs)
        workers = len(shares)
        unclaimed = list(shares)
        lock = threading.Lock()

        def start_thread() -> None:
            torch.get_num_threads()  # torch's per-thread setup first, then this thread's share
            with lock:
                torch.set_num_threads(unclaimed.pop())

        order = iter(sorted(range(total), key=lambda i: -costs[i]))
        main_threads = torch.get_num_threads()
        done: dict[int, _Fill] = {}
        pasted = 0
        if progress is not None:
            progress(0, total)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="inpaint-crop",
                                  initializer=start_thread)
        running: dict[Future[_Fill], int] = {}
        try:
            while pasted < total:
                for index in order:
                    if should_abort is not None and should_abort():
                        raise InpaintCancelled()
                    running[pool.submit(fill, index)] = index
                    if len(running) == workers:
                        break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[running.pop(future)] = future.result()
                    if progress is not None and len(done) + pasted < total:
                        progress(len(done) + pasted, total)
                while pasted in done:
                    self._paste(done.pop(pasted), raw, composite, notices)
                    pasted += 1
        finally:
            for future in running:
                future.cancel()
            pool.shutdown(wait=True)  # a crop already running finishes; none starts
            torch.set_num_threads(main_threads)  # what new threads start with, too

    # -- internals -------------------------------------------------------------------------
    def _fill_box(
        self,
        rgb: np.ndarray,
        hole: np.ndarray,
        box: tuple[int, int, int, int],
        window: tuple[int, int, int, int],
    ) -> _Fill:
        """The fill of the cluster in ``box`` from its crop ``window`` (``_tiles``);
        reads ``rgb`` and ``hole`` only, so crops can run at once."""
        notices: list[str] = []
        top, left, bottom, right = box
        t, b, lft, rgt = window
        crop_rgb = rgb[t:b, lft:rgt]
        crop_hole = hole[t:b, lft:rgt]
        ch, cw = crop_hole.shape
        factor = min(1.0, self.work_size / max(ch, cw))
        size = (max(1, round(cw * factor)), max(1, round(ch * factor)))
        small_hole = _downscale_holes(crop_hole, size)
        radius = None  # the thickest hole at the scale the network runs, when known
        fine = None  # (size, holes) at the working scale when the network runs coarser
        if self.max_hole_radius:
            # Holes much thicker than those seen in training come out as grey blotches; run
            # such crops at a coarser scale so the hole radius matches the training range.
            radius = hole_radius(small_hole, limit=8 * self.max_hole_radius)
            if radius > self.max_hole_radius:
                shrink = max(self.max_hole_radius / radius, _MIN_SIDE / max(size))
                if shrink < 1.0:
                    fine = (size, small_hole)
                    size = (max(1, round(size[0] * shrink)), max(1, round(size[1] * shrink)))
                    small_hole = _downscale_holes(crop_hole, size)
                    radius = None
        # Reuse the radius above when it is still the network's (measuring costs ~45 ms per
        # 512 px crop), unless it stopped at its cap below the threshold: then it is unknown.
        if radius is not None and 8 * self.max_hole_radius <= radius < PASSES_MIN_RADIUS:
            radius = None
        passes = self._passes_for(small_hole, radius)
        # BOX: the same footprint as _downscale_holes, so no pixel marked known carries any
        # colour from inside the hole (a wider filter such as LANCZOS would leak it).
        small_rgb = _resize_rgb(crop_rgb, size, Image.Resampling.BOX)
        small_out = self._run(small_rgb, small_hole, notices, passes)
        if fine is not None and self.edge_band:
            # The coarse run fills a thick hole without blotches but loses the detail its
            # edge could keep; near the edge, a run at the working scale is better (+0.1-0.2
            # dB for holes over 40 %, resources/MODEL_CARD.md). With the model's passes on a
            # CPU too: one pass there scored less and let _forward's spots into the band (a
            # dark blot at the top of docs/evaluation/examples/0010_*), for a third of the
            # time (a solid 12-MP disc on one core: 0.7 s instead of 1.4 s; 0.93 s since the
            # decoder computes only the needed pixels).
            size, small_hole = fine
            coarse = _resize_rgb(small_out, size)
            small_rgb = _resize_rgb(crop_rgb, size, Image.Resampling.BOX)
            passes = self.edge_passes or self.passes
            fill = self._run(small_rgb, small_hole, notices, passes)
            small_out = _blend_scales(coarse, fill, small_hole, self.edge_band)
        # This cluster's holes are pasted; another cluster inside the crop is filled from its
        # own, better-centred crop. ``out`` is computed only in squares with holes: nothing
        # below reads it elsewhere (the smoothing reads it at hole pixels).
        paste = crop_hole.copy()
        paste[: top - t] = paste[bottom - t :] = False
        paste[:, : left - lft] = paste[:, right - lft :] = False
        out = _resize_rgb_at(small_out, (cw, ch), crop_hole)
        smoothed = None
        if self.fill_smoothing is not None and max(ch, cw) <= self.work_size:
            # At the photo's scale, as measured (resources/MODEL_CARD.md); about 6 ms for a
            # 512 px crop's 300 px hole on one CPU core.
            smoothed = _smooth_fill(np.where(crop_hole[..., None], out, crop_rgb), crop_hole,
                                    *self.fill_smoothing)
        elif self.fill_smoothing is not None:
            # A crop larger than the working size: at the scale the network ran, the sigmas
            # shrunk alike (the upscaled fill is already smooth at the photo's scale, and
            # blurring a 12-MP crop would take seconds on a CPU).
            scale = size[0] / cw
            near, far, ramp = (v * scale for v in self.fill_smoothing)
            if far >= 0.25:
                # keep: the upscaling below reads 3 px around each hole pixel (LANCZOS)
                small = _smooth_fill(np.where(small_hole[..., None], small_out, small_rgb),
                                     small_hole, max(near, 0.25), far, max(ramp, 1.0), keep=4)
                smoothed = _resize_rgb_at(small, (cw, ch), paste)
        # Only the box is pasted: keep that much (finished crops wait to be pasted in order).
        rows, cols = slice(top - t, bottom - t), slice(left - lft, right - lft)
        return _Fill(slice(top, bottom), slice(left, right), paste[rows, cols].copy(),
                     out[rows, cols].copy(),
                     None if smoothed is None else smoothed[rows, cols].copy(), notices)

    @staticmethod
    def _paste(fill: _Fill, raw: np.ndarray, composite: np.ndarray, notices: list[str]) -> None:
        # copyto with ``where`` (not region[mask] = out[mask]): boolean indexing would build
        # two int64 index arrays, 16 bytes per hole pixel, on a photo of any size.
        np.copyto(raw[fill.rows, fill.cols], fill.out, where=fill.paste[..., None])
        np.copyto(composite[fill.rows, fill.cols],
                  fill.out if fill.smoothed is None else fill.smoothed,
                  where=fill.paste[..., None])
        for notice in fill.notices:
            if notice not in notices:
                notices.append(notice)

    def _passes_for(self, hole: np.ndarray, radius: int | None = None) -> int:
        """Network passes for a crop whose holes (at the network's scale) are ``hole``: the
        model's on a GPU; on a CPU only where the thickest hole is at least
        PASSES_MIN_RADIUS (``radius``, when already measured), else one."""
        if self.passes == 1 or self.device.type != "cpu":
            return self.passes
        if radius is None:
            radius = hole_radius(hole, limit=PASSES_MIN_RADIUS)
        return self.passes if radius >= PASSES_MIN_RADIUS else 1

    def _cluster_plan(
        self, hole: np.ndarray, box: tuple[int, int, int, int], context: int,
        own_cells: np.ndarray | None = None,
    ) -> _Cluster:
        """What ``_tiles`` needs of a cluster before it cuts windows: its context margin,
        smallest crop, scale and thickness (see there)."""
        top, left, bottom, right = box
        span = max(bottom - top, right - left)
        margin = context
        # with a ring of the known pixels around (a box wholly hole would never erode)
        ring = hole[max(0, top - 1) : bottom + 1, max(0, left - 1) : right + 1]
        thickness = None  # the thickest hole's radius, when measured below its limit
        limit = 0
        if span // 2 > context:
            per = max(1, int(self.context_per_thickness))
            limit = span // (2 * per) + 1
            measured = hole_thickness(ring, limit=limit)
            margin = max(context, min(span // 2, per * measured))
            thickness = measured if measured < limit else None
        floor = 0
        scale = 1.0  # the scale the thickest hole runs at (max_hole_radius), at most
        if self.max_hole_radius:
            # _fill_box shrinks a crop for max_hole_radius but keeps _MIN_SIDE px of it, so a
            # thick hole in a small crop could reach the network thicker than the model was
            # trained on: up to the working size (beyond it a crop is downscaled anyway), the
            # crop must be large enough to shrink that far. (Measured again for a compact box,
            # at most 2 * context wide, a thickness that stopped at its limit, or one measured
            # coarsely.)
            cap = self._thickness_cap
            if thickness is None or limit > cap:
                # (a limit above cap measured in blocks of limit / 32 px: up to 1.4x off, and
                # the tiles' scale below follows it)
                thickness = hole_thickness(ring, limit=cap)
            floor = min(self.work_size,
                        math.ceil(_MIN_SIDE * min(thickness, cap) / self.max_hole_radius))
            scale = min(1.0, self.max_hole_radius / max(1, thickness))
        return _Cluster(box, margin, floor, scale, thickness, own_cells)

    def _tiles(self, hole: np.ndarray, plan: _Cluster, shrink: float
               ) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """(box, window) pairs that fill the cluster ``plan`` measured: one crop window
        (top, bottom, left, right) with the holes plus context on every side,
        ``context_per_thickness`` times the thickest hole's radius (``_context`` at least;
        half the cluster's extent at most, which is all a compact hole gets: _cluster_plan);
        or, for a long cluster that crop would shrink below the scale its holes' thickness
        needs, tiles.

        Why thickness and not extent: the network fills a hole from a band around it about as
        wide as the hole is thick, whatever its length. Sized by its extent, a long brush
        stroke got a crop that was mostly context, shrunk 3-4x to the working size: a blurred
        fill (0.2-0.9 dB lower on the large validation photos, docs/evaluation/large_photos/)
        and more network work.

        Why tiles: a long thin stroke across a large photo still needs a crop wider than the
        working size, and shrinking it to fit blurs the fill as above (a 30 px stroke 2,000 px
        long ran at a quarter of its resolution). Tiles cut the cluster's box into cells
        small enough that each cell plus the same context fits the working size at the scale
        the thickest hole needs (``max_hole_radius``; no tiles without it), times ``shrink``
        (``tile_shrink``, or 1.0 within the budget: _plan_crops); each tile pastes its own
        cell's holes. Neighbouring tiles see each other's holes as holes and the same context
        around the cut, and no seam showed where strokes cross one
        (docs/evaluation/large_photos/). The plan's ``own_cells``
        (``_cluster_cells``' grid, True where this cluster has holes) keeps a cell that holds
        only another cluster's holes, which that cluster's own crop fills, from becoming a tile.
        """
        h, w = hole.shape
        box, margin, floor, scale, own_cells = (plan.box, plan.margin, plan.floor, plan.scale,
                                                plan.own_cells)
        top, left, bottom, right = box

        def window(sub: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
            # The hole plus its context (see _crop_side): a small hole needs no full
            # working-size pass around it.
            s_top, s_left, s_bottom, s_right = sub
            t, b = _expand(s_top, s_bottom,
                           self._crop_side(max(s_bottom - s_top + 2 * margin, floor)), h)
            lft, rgt = _expand(s_left, s_right,
                               self._crop_side(max(s_right - s_left + 2 * margin, floor)), w)
            return t, b, lft, rgt

        whole = window(box)
        if not shrink or plan.thickness is None or plan.thickness >= self._thickness_cap:
            # Without max_hole_radius the scale a thick hole needs is unknown, and a hole
            # thicker than cap is measured only as that: a solid blob, whose context is half
            # its extent, would make tiles of mostly context. No tiles.
            return [(box, whole)]
        largest = int(self.work_size / (scale * shrink))  # a tile's side, at most
        cell = largest - 2 * margin
        if max(whole[1] - whole[0], whole[3] - whole[2]) <= largest or cell < self.work_size // 4:
            return [(box, whole)]
        rows = _cells(top, bottom, cell)
        cols = _cells(left, right, cell)
        tiles = []
        for y0, y1 in rows:
            for x0, x1 in cols:
                mine = hole[y0:y1, x0:x1]
                if own_cells is not None:
                    grid = own_cells[y0 // _GRID : (y1 - 1) // _GRID + 1,
                                     x0 // _GRID : (x1 - 1) // _GRID + 1]
                    grid = np.repeat(np.repeat(grid, _GRID, axis=0), _GRID, axis=1)
                    oy, ox = y0 % _GRID, x0 % _GRID
                    mine = mine & grid[oy : oy + y1 - y0, ox : ox + x1 - x0]
                sub = _hole_box(mine)
                if sub is not None:
                    sub = (y0 + sub[0], x0 + sub[1], y0 + sub[2], x0 + sub[3])
                    tiles.append((sub, window(sub)))
        return tiles

    def _run(self, rgb: np.ndarray, hole: np.ndarray, notices: list[str],
             passes: int = 1) -> np.ndarray:
        """Pad to a multiple of 2**layers (mirrored), run the network, crop back."""
        h, w = hole.shape
        ph = math.ceil(h / self.multiple) * self.multiple - h
        pw = math.ceil(w / self.multiple) * self.multiple - w
        pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        img = np.pad(rgb, (*pad, (0, 0)), mode="symmetric")
        valid = np.pad(~hole, pad, mode="symmetric")
        image_t = torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255.0)
        valid_t = torch.from_numpy(valid.astype(np.float32))[None, None]

        def needed() -> torch.Tensor | None:
            """The hole pixels and those the resampling after the network reads around them,
            where the decoder computes only those (core.sparse_decoder: on a CPU)."""
            if not self.needed_only:
                return None
            return torch.from_numpy(grow_mask(np.pad(hole, pad), NEEDED_MARGIN))[None, None]

        needed_t = needed()
        try:
            out = self._forward(image_t, valid_t, passes, needed_t)
        except torch.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            notices.append(f"{self.device_name} ran out of memory; this run used the CPU")
            self.to("cpu")
            passes = min(passes, self._passes_for(hole))  # the CPU's rule for this crop
            needed_t = needed()  # and its sparse decoder, as for the crops after this one
            out = self._forward(image_t, valid_t, passes, needed_t)
        out = out[pad[0][0] : pad[0][0] + h, pad[1][0] : pad[1][0] + w]
        if needed_t is not None:
            # Not computed elsewhere (zeros): the photo there, so nothing later reads a zero.
            keep = needed_t[0, 0, pad[0][0] : pad[0][0] + h, pad[1][0] : pad[1][0] + w]
            out = np.where(keep.numpy()[..., None], out, rgb)
        return np.ascontiguousarray(out)

    def _forward(self, image_t: torch.Tensor, valid_t: torch.Tensor, passes: int = 1,
                 needed_t: torch.Tensor | None = None) -> np.ndarray:
        """One network run; with ``passes`` > 1 (``_fill_box`` asks for them on a GPU, and on a
        CPU for holes at least PASSES_MIN_RADIUS thick) the mean of the photo as it is,
        mirrored left to right and (3) top to bottom, each output mirrored back; with 3 passes
        the median.

        Why: the exact partial convolution closes a wide hole from its rim inwards on a
        stride-2 grid, and where a deep layer's window holds only a pixel or two of valid
        input its output is scaled up most; with little training that shows as a dark or bright
        spot in the middle of the widest holes. Mirroring moves the grid against the hole, so
        the spots land elsewhere or vanish, and the median of three drops them (measured in
        resources/MODEL_CARD.md). The passes run as one batch."""
        dtype = self.autocast_dtype
        flips = [(), (-1,), (-2,)][:passes]
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
        ):
            image_t = torch.cat([image_t.flip(f) if f else image_t for f in flips])
            valid_t = torch.cat([valid_t.flip(f) if f else valid_t for f in flips])
            if needed_t is not None:
                needed_t = torch.cat([needed_t.flip(f) if f else needed_t for f in flips])
                needed_t = needed_t.to(self.device)
            image_t = image_t.to(self.device).contiguous(memory_format=_memory_format(self.device))
            out = self.model(image_t, valid_t.to(self.device), needed_t).float()
            if len(flips) > 1:
                views = torch.stack([o.flip(f) if f else o for o, f in zip(out.unbind(0), flips)])
                # Three: the median, so a spot in one run is dropped rather than diluted to a
                # third (a faint blot that still shows); two: the mean.
                out = (views.median(0).values if len(flips) == 3 else views.mean(0))[None]
            out = out.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        return out[0].permute(1, 2, 0).cpu().numpy()
