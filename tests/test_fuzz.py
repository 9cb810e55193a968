"""Issue #7, fuzzing: core.inference and the mask/photo loaders over shapes, dtypes and values.

The contract checked: the only exception is the documented ValueError (ImageLoadError for
photos, which is one), raised exactly when the input breaks a documented rule; otherwise
the outputs have the input's size and the composite equals the input outside the
(binarised) hole. Examples are derandomized so that CI runs are reproducible; arrays come
from a drawn seed rather than element by element, which keeps each example cheap.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.imageio import MAX_PIXELS, ImageLoadError, load_image
from core.inference import Inpainter
from core.masks import binarize_mask, load_mask
from core.model import PConvUNet

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SIDES = st.integers(1, 70)
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def inpainter() -> Inpainter:
    torch.manual_seed(0)
    return Inpainter(PConvUNet(layers=4, width=8), device="cpu", work_size=64)


# == core.inference ==========================================================================
IMAGE_LAYOUTS = ["hw3", "hw3", "hw3", "hw", "hw1", "hw4", "flipped", "transposed", "hw2"]
IMAGE_DTYPES = [np.uint8] * 6 + [np.float32, np.uint16, np.int32, np.bool_]
MASK_DTYPES = [np.bool_, np.uint8, np.float32, np.int32, np.uint16]
MASK_PATTERNS = ["empty", "full", "dots", "rect", "dense", "soft", "nan", "inf"]


def _image(rng: np.random.Generator, h: int, w: int, layout: str, dtype) -> np.ndarray:
    pixels = rng.integers(0, 256, (h, w, 3)).astype(dtype)
    if layout == "hw":
        return pixels[..., 0]
    if layout == "hw1":
        return pixels[..., :1]
    if layout == "hw2":  # not a documented layout
        return pixels[..., :2]
    if layout == "hw4":
        return np.concatenate([pixels, pixels[..., :1]], axis=2)
    if layout == "flipped":  # negative strides
        return pixels[::-1, ::-1]
    if layout == "transposed":  # a (w, h) view of an (h, w) buffer: shape (h, w) again
        return np.ascontiguousarray(rng.integers(0, 256, (w, h, 3)).astype(dtype)).transpose(
            1, 0, 2)
    return pixels


def _mask(rng: np.random.Generator, shape: tuple[int, int], dtype, pattern: str) -> np.ndarray:
    h, w = shape
    hole = np.zeros(shape, bool)
    if pattern == "full":
        hole[:] = True
    elif pattern == "dots":
        hole[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
    elif pattern in ("rect", "nan", "inf"):
        top, left = rng.integers(0, h), rng.integers(0, w)
        hole[top : top + rng.integers(1, h + 1), left : left + rng.integers(1, w + 1)] = True
    elif pattern == "dense":
        hole = rng.random(shape) < 0.7
    if pattern == "soft":  # anti-aliased values over the dtype's whole range
        if dtype == np.bool_:
            return rng.random(shape) < 0.5
        if dtype == np.float32:
            return rng.random(shape).astype(np.float32)
        if dtype == np.int32:
            return rng.integers(-300, 300, shape).astype(np.int32)
        top = 65535 if dtype == np.uint16 else 255
        return rng.integers(0, top + 1, shape).astype(dtype)
    if dtype == np.bool_:
        return hole
    if dtype == np.float32:
        values = hole.astype(np.float32) * rng.choice([1.0, 255.0])
        if pattern in ("nan", "inf"):
            values[rng.integers(0, h), rng.integers(0, w)] = np.nan if pattern == "nan" else np.inf
        return values
    scale = int(rng.choice([1, 255, 65535 if dtype == np.uint16 else 255]))
    return hole.astype(dtype) * dtype(scale)


def _expected_hole(mask: np.ndarray) -> np.ndarray:
    """The documented binarisation (core.inference.as_hole_mask), written out again."""
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind in "iu" and mask.min() >= 0 and mask.max() <= 1:
        return mask != 0
    if mask.dtype.kind == "f":
        return mask > 0.5
    if mask.dtype == np.uint16:
        return mask > 32767
    return mask.astype(np.int64) * 2 > 255


def _check(inpainter: Inpainter, image: np.ndarray, mask: np.ndarray, h: int, w: int) -> str:
    """Run the inpainter; ValueError exactly when a documented rule is broken, else the
    outputs' contract. Returns what happened."""
    image_before, mask_before = image.copy(), mask.copy()
    problems = []
    if image.dtype != np.uint8:
        problems.append("image dtype")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        problems.append("image layout")
    if mask.ndim != 2:
        problems.append("mask dims")
    elif mask.shape != (h, w):
        problems.append("mask size")
    elif mask.dtype.kind == "f" and not np.isfinite(mask).all():
        problems.append("mask not finite")
    elif _expected_hole(mask).all():
        problems.append("full mask")
    if problems:
        with pytest.raises(ValueError):
            inpainter.inpaint(image, mask)
        return f"ValueError: {problems[0]}"
    result = inpainter.inpaint(image, mask)
    hole = _expected_hole(mask)
    rgb = np.asarray(image)
    rgb = np.repeat(rgb[..., None], 3, 2) if rgb.ndim == 2 else rgb
    rgb = np.repeat(rgb, 3, 2) if rgb.shape[2] == 1 else rgb[..., :3]
    for out in (result.raw, result.composite):
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.array_equal(result.composite[~hole], rgb[~hole])
    assert np.array_equal(result.raw[~hole], rgb[~hole])
    if inpainter.fill_smoothing is None:
        assert np.array_equal(result.composite[hole], result.raw[hole])
    if not hole.any():
        assert result.notices
    assert np.array_equal(image, image_before) and np.array_equal(mask, mask_before, True)
    return "filled" if hole.any() else "empty mask"


@FUZZ
@given(h=SIDES, w=SIDES, seed=SEEDS,
       layout=st.sampled_from(["hw3", "hw3", "hw", "hw1", "hw4", "flipped", "transposed"]),
       mask_dtype=st.sampled_from(MASK_DTYPES),
       pattern=st.sampled_from(["dots", "rect", "dense", "soft", "dots", "rect", "empty"]),
       flip_mask=st.booleans(), max_hole_radius=st.sampled_from([None, 1, 3]),
       smoothing=st.sampled_from([None, (1.2, 4.0, 12.0)]))
def test_inpaint_valid_inputs_keep_size_and_exact_composite(inpainter, h, w, seed, layout,
                                                           mask_dtype, pattern, flip_mask,
                                                           max_hole_radius, smoothing):
    """Also with the coarse pass for thick holes and the fill smoothing (both as the shipped
    model uses them)."""
    rng = np.random.default_rng(seed)
    image = _image(rng, h, w, layout, np.uint8)
    mask = _mask(rng, (h, w), mask_dtype, pattern)
    inpainter.max_hole_radius = max_hole_radius
    inpainter.fill_smoothing = smoothing
    try:
        event(_check(inpainter, image, mask[::-1] if flip_mask else mask, h, w))
    finally:
        inpainter.max_hole_radius = None
        inpainter.fill_smoothing = None


@FUZZ
@given(h=SIDES, w=SIDES, seed=SEEDS, layout=st.sampled_from(IMAGE_LAYOUTS),
       image_dtype=st.sampled_from(IMAGE_DTYPES), mask_dtype=st.sampled_from(MASK_DTYPES),
       pattern=st.sampled_from(MASK_PATTERNS),
       mask_offset=st.sampled_from([(0, 0)] * 3 + [(1, 0), (0, -1), (3, 3)]),
       mask_3d=st.booleans())
def test_inpaint_raises_value_error_exactly_for_documented_bad_inputs(
        inpainter, h, w, seed, layout, image_dtype, mask_dtype, pattern, mask_offset, mask_3d):
    rng = np.random.default_rng(seed)
    image = _image(rng, h, w, layout, image_dtype)
    mh, mw = max(1, h + mask_offset[0]), max(1, w + mask_offset[1])
    mask = _mask(rng, (mh, mw), mask_dtype, pattern)
    event(_check(inpainter, image, mask[..., None] if mask_3d else mask, h, w))


@FUZZ
@given(seed=SEEDS, dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.int8]),
       h=SIDES, w=SIDES)
def test_binarize_mask_matches_the_int64_rule(seed, dtype, h, w):
    """binarize_mask avoids an int64 copy of the mask; it must agree with the formula."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    values = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), (h, w),
                          endpoint=True).astype(dtype)
    maxval = 65535 if dtype == np.uint16 else 255
    assert np.array_equal(binarize_mask(values), values.astype(np.int64) * 2 > maxval)


# == the mask loader ==========================================================================
# (mode, format): every mode in a lossless format that stores it as it is.
MASK_FILES = [("1", "PNG"), ("L", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"),
              ("LA", "PNG"), ("I;16", "PNG"), ("L", "TIFF"), ("RGB", "TIFF"), ("I;16", "TIFF"),
              ("F", "TIFF"), ("L", "BMP"), ("1", "BMP"), ("RGB", "WEBP"), ("RGBA", "WEBP")]


def _mask_image(rng: np.random.Generator, hole: np.ndarray, mode: str) -> Image.Image:
    """An image of ``mode`` whose (anti-aliased, coloured) values threshold to ``hole``."""
    shape = hole.shape
    if mode == "1":
        return Image.fromarray(hole)
    low = rng.integers(0, 128, (*shape, 3))  # every channel at most 127: kept
    high = low.copy()
    channel = rng.integers(0, 3, shape)
    np.put_along_axis(high, channel[..., None], rng.integers(128, 256, (*shape, 1)), axis=2)
    rgb = np.where(hole[..., None], high, low).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "L":
        return Image.fromarray(rgb.max(axis=2))
    if mode == "P":
        palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
        bright = palette.max(axis=1) > 127
        index = np.where(hole, rng.choice(np.flatnonzero(bright), shape),
                         rng.choice(np.flatnonzero(~bright), shape)).astype(np.uint8)
        img = Image.frombytes("P", (shape[1], shape[0]), np.ascontiguousarray(index).tobytes())
        img.putpalette(palette.tobytes())
        return img
    if mode in ("RGBA", "LA"):
        # holes: bright and opaque; kept: dark, or bright but transparent
        alpha = np.where(hole, rng.integers(128, 256, shape), rng.integers(0, 256, shape))
        colour = np.where((~hole & (alpha > 127))[..., None], low, high).astype(np.uint8)
        if mode == "RGBA":
            return Image.fromarray(np.dstack([colour, alpha.astype(np.uint8)]))
        return Image.merge("LA", (Image.fromarray(colour.max(axis=2)),
                                  Image.fromarray(alpha.astype(np.uint8))))
    if mode == "I;16":
        values = np.where(hole, rng.integers(32768, 65536, shape), rng.integers(0, 32768, shape))
        values[0, 0] = 65535 if hole[0, 0] else 300  # 16-bit range, never 0..255 only
        return Image.fromarray(values.astype(np.uint16))
    if mode == "F":
        values = np.where(hole, rng.uniform(0.51, 1.0, shape), rng.uniform(0.0, 0.49, shape))
        return Image.fromarray(values.astype(np.float32))
    raise KeyError(mode)


@FUZZ
@given(h=SIDES, w=SIDES, seed=SEEDS, kind=st.sampled_from(MASK_FILES),
       pattern=st.sampled_from(["dots", "rect", "dense", "empty", "full"]))
def test_load_mask_binarises_every_kind_of_file(h, w, seed, kind, pattern):
    mode, fmt = kind
    rng = np.random.default_rng(seed)
    hole = _mask(rng, (h, w), np.bool_, pattern)
    img = _mask_image(rng, hole, mode)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"mask.{fmt.lower()}"
        img.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        loaded = load_mask(path)
    assert loaded.dtype == bool and loaded.shape == (h, w)
    assert np.array_equal(loaded, hole), (mode, fmt)


# == hostile bytes ===========================================================================
def _encoded(fmt: str) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"]
ENCODED = {fmt: _encoded(fmt) for fmt in FORMATS}


@FUZZ
@given(fmt=st.sampled_from(FORMATS), cut=st.floats(0.0, 1.0),
       edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=8)),
                      max_size=6))
def test_damaged_files_load_or_fail_with_the_documented_error(fmt, cut, edits):
    data = bytearray(ENCODED[fmt])
    for where, patch in edits:
        start = int(where * (len(data) - 1))
        data[start : start + len(patch)] = patch
    if cut < 0.5:  # half the examples are truncated as well
        data = data[: max(1, int(cut * 2 * len(data)))]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"photo.{fmt.lower()}"
        path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like
            try:
                loaded = load_image(path)
            except ImageLoadError as exc:
                event("photo refused")
                assert "photo." in str(exc) and len(str(exc).splitlines()) == 1
            else:
                event("photo loaded")
                h, w, c = loaded.pixels.shape
                assert c == 3 and loaded.pixels.dtype == np.uint8 and h * w <= MAX_PIXELS
            try:
                mask = load_mask(path)
            except ValueError as exc:
                assert "photo." in str(exc) and len(str(exc).splitlines()) == 1
            else:
                assert mask.dtype == bool and mask.ndim == 2
