"""Mask generator buckets, border margin, binary loading, grow/shrink."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.masks import (
    BUCKETS,
    MaskGenerator,
    _draw,
    _shape_box,
    bucket_of,
    grow_mask,
    load_mask,
    save_mask,
)


@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("margin", [0, 16])
def test_masks_land_in_requested_bucket(bucket, margin):
    gen = MaskGenerator(seed=3)
    for _ in range(3):
        hole = gen.generate(128, 160, bucket=bucket, border_margin=margin)
        assert hole.dtype == bool and hole.shape == (128, 160)
        assert bucket_of(hole.mean()) == bucket
        if margin:
            assert not hole[:margin].any() and not hole[-margin:].any()
            assert not hole[:, :margin].any() and not hole[:, -margin:].any()


def test_generator_is_seedable():
    a = MaskGenerator(seed=5).generate(64, 64, bucket=(0.2, 0.3))
    b = MaskGenerator(seed=5).generate(64, 64, bucket=(0.2, 0.3))
    c = MaskGenerator(seed=6).generate(64, 64, bucket=(0.2, 0.3))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_loaded_masks_are_binary(tmp_path):
    grey = np.zeros((20, 30), np.uint8)
    grey[5:10, 5:20] = 255
    grey[12, 3] = 128  # anti-aliased edge value just above half
    grey[13, 3] = 127
    Image.fromarray(grey).save(tmp_path / "m.jpg", quality=60)
    Image.fromarray(grey).save(tmp_path / "m.png")
    hole = load_mask(tmp_path / "m.png")
    assert hole.dtype == bool and hole.sum() == 5 * 15 + 1
    jpg = load_mask(tmp_path / "m.jpg")
    assert jpg.dtype == bool and abs(int(jpg.sum()) - 76) <= 6  # JPEG noise thresholded away
    save_mask(tmp_path / "out.png", hole)
    assert np.array_equal(load_mask(tmp_path / "out.png"), hole)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out.png")))) <= {0, 255}


def test_rgba_painted_mask_uses_alpha(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[2:4, 2:4] = (255, 255, 255, 255)
    rgba[6:8, 6:8] = (255, 255, 255, 0)  # white but transparent: not a hole
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").sum() == 4


def test_bad_mask_file_is_clear(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        load_mask(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="not found"):
        load_mask(tmp_path / "missing.png")


def test_grow_and_shrink():
    hole = np.zeros((21, 21), bool)
    hole[10, 10] = True
    grown = grow_mask(hole, 2)
    assert grown.sum() == 25
    assert np.array_equal(grow_mask(grown, -2), hole)
    assert grow_mask(hole, -1).sum() == 0


def test_seeded_masks_never_change():
    """Validation and evaluation masks are seeded: a generator change that moves a single pixel
    would silently change every reported metric. Digest of masks from the original generator."""
    digest = hashlib.sha256()
    for seed in range(12):
        for bucket in BUCKETS:
            for margin in (0, 16):
                hole = MaskGenerator(seed=seed).generate(256, 256, bucket=bucket,
                                                         border_margin=margin)
                digest.update(np.packbits(hole).tobytes())
    assert digest.hexdigest() == (
        "a0bef23676477d9576433f8aa2b72038e3a4d1e211aa04e28f3fd957ccc84dca"
    )


def test_shape_box_holds_every_drawn_pixel():
    """Shapes are counted inside their bounding box only; a pixel drawn outside it would make
    the hole count (and the bucket) wrong."""
    for seed in range(400):
        gen = MaskGenerator(seed=seed)
        height, width = (256, 256) if seed % 2 else (97, 300)
        shape = gen._shape(height, width, math.sqrt(height * width), gen.rng.uniform(0, 0.6))
        full = Image.new("L", (width, height), 0)
        _draw(ImageDraw.Draw(full), shape)
        drawn = np.asarray(full).copy()
        box = _shape_box(shape, width, height)
        if box is not None:
            drawn[box[1] : box[3], box[0] : box[2]] = 0
        assert drawn.max() == 0, f"seed {seed}: pixels outside {box}"


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
def test_zero_one_mask_files_mark_ones_as_holes(tmp_path, mode):
    """A mask saved straight from a 0/1 array must not load as empty."""
    hole = np.zeros((20, 30), bool)
    hole[5:9, 10:20] = True
    values = hole.astype(np.uint16 if mode == "I;16" else np.uint8)
    if mode == "RGB":  # a 0/1 mask written as colour, the 1 in one channel only
        values = np.stack([np.zeros_like(values), values, np.zeros_like(values)], -1)
    Image.fromarray(values).save(tmp_path / "m.png")
    assert np.array_equal(load_mask(tmp_path / "m.png"), hole)


def test_jpeg_noise_in_a_black_mask_is_not_a_hole(tmp_path):
    noisy = np.zeros((32, 32), np.uint8)
    noisy[3, 4] = 1
    Image.fromarray(noisy).save(tmp_path / "m.jpg", quality=100)
    assert not load_mask(tmp_path / "m.jpg").any()
