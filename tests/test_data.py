"""Training/validation data: shapes, binary masks, buckets, broken files, seeding, mask files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import (
    BrokenImageWarning,
    DatasetError,
    InpaintingDataset,
    ValidationSet,
    default_num_workers,
    find_images,
    make_loader,
)
from core.masks import BUCKETS, bucket_of

torch.set_num_threads(1)

S = 64


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_photo(90, 120, 0)).save(root / "a.png")
    Image.fromarray(_photo(40, 30, 1)).save(root / "sub" / "b.JPG", quality=95)  # upscaled
    Image.fromarray(_photo(70, 70, 2)[..., 0]).save(root / "c.bmp")  # grey
    (root / "notes.txt").write_text("not an image")
    (root / "._a.png").write_bytes(b"macOS resource fork")
    return root


def _check_sample(sample: dict[str, torch.Tensor], size: int = S) -> float:
    image, valid = sample["image"], sample["valid_mask"]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert valid.shape == (1, size, size) and valid.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(torch.unique(valid).tolist()) <= {0.0, 1.0}
    hole_ratio = 1.0 - float(valid.mean())
    assert 0.0 < hole_ratio < 1.0
    return hole_ratio


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "valid_mask"))


def test_find_images_recursive_sorted_case_insensitive(photos: Path) -> None:
    found = find_images(photos)
    assert [p.relative_to(photos).as_posix() for p in found] == ["a.png", "c.bmp", "sub/b.JPG"]
    with pytest.raises(DatasetError):
        find_images(photos / "missing")


def test_dataset_shapes_ranges_and_binary_masks(photos: Path) -> None:
    ds = InpaintingDataset(photos, image_size=S, seed=3)
    assert len(ds) == 3
    ratios = [_check_sample(ds[i % 3]) for i in range(24)]
    buckets = {bucket_of(r) for r in ratios}
    assert None not in buckets
    assert len(buckets) >= 4  # drawn over all six buckets


def test_hole_buckets_are_respected(photos: Path) -> None:
    ds = InpaintingDataset(photos, image_size=S, seed=1, hole_buckets=[(0.3, 0.4)])
    for i in range(8):
        assert bucket_of(_check_sample(ds[i % 3])) == (0.3, 0.4)


def test_same_seed_reproducible_other_seed_differs(photos: Path) -> None:
    a = InpaintingDataset(photos, image_size=S, seed=5)
    b = InpaintingDataset(photos, image_size=S, seed=5)
    c = InpaintingDataset(photos, image_size=S, seed=6)
    sa, sb, sc = [a[i] for i in range(3)], [b[i] for i in range(3)], [c[i] for i in range(3)]
    assert all(_same(x, y) for x, y in zip(sa, sb))
    assert not all(_same(x, y) for x, y in zip(sa, sc))


def test_preload_gives_the_same_samples(photos: Path) -> None:
    lazy = InpaintingDataset(photos, image_size=S, seed=9)
    eager = InpaintingDataset(photos, image_size=S, seed=9, preload=True)
    assert eager._images.cache is not None
    assert all(a.dtype == np.uint8 for a in eager._images.cache if a is not None)
    for i in range(6):
        assert _same(lazy[i % 3], eager[i % 3])


def test_broken_image_skipped_with_one_warning(photos: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    ds = InpaintingDataset(photos, image_size=S, seed=0)
    assert len(ds) == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for i in range(len(ds)):
                _check_sample(ds[i])
    broken = [w for w in caught if issubclass(w.category, BrokenImageWarning)]
    assert len(broken) == 1
    assert "broken.jpg" in str(broken[0].message)


def test_broken_image_with_preload_warns_once(photos: Path) -> None:
    (photos / "zero.png").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = InpaintingDataset(photos, image_size=S, preload=True)
        for i in range(len(ds)):
            _check_sample(ds[i])
    assert sum(issubclass(w.category, BrokenImageWarning) for w in caught) == 1


def test_all_images_broken_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("x.png", "y.jpg"):
        (tmp_path / name).write_bytes(b"garbage")
    ds = InpaintingDataset(tmp_path, image_size=S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrokenImageWarning)
        with pytest.raises(DatasetError, match="none of the 2"):
            ds[0]
        with pytest.raises(DatasetError, match="none of the 2"):
            InpaintingDataset(tmp_path, image_size=S, preload=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        InpaintingDataset(empty)


def test_mask_dir_masks_are_binary_rotated_and_flipped(photos: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    half = np.zeros((50, 40), np.uint8)
    half[:, :20] = 255  # left half is the hole
    Image.fromarray(half).save(masks / "half.png")
    Image.fromarray(half).save(masks / "half.jpg", quality=30)  # lossy: must re-binarise
    ds = InpaintingDataset(photos, image_size=S, mask_dir=masks, seed=2)
    orientations = set()
    for i in range(24):
        valid = ds[i % 3]["valid_mask"][0].numpy()
        assert set(np.unique(valid).tolist()) <= {0.0, 1.0}
        hole = valid == 0
        assert abs(hole.mean() - 0.5) < 0.03
        # A half-plane hole: which side it is on tells the rotation/flip.
        sides = (hole[:, 0].all(), hole[:, -1].all(), hole[0].all(), hole[-1].all())
        assert sum(sides) == 1
        orientations.add(sides)
    assert len(orientations) >= 3


def test_workers_get_different_random_streams(tmp_path: Path) -> None:
    for i in range(4):
        Image.fromarray(_photo(64, 64, 7)).save(tmp_path / f"same{i}.png")
    ds = InpaintingDataset(tmp_path, image_size=32, seed=0)
    loader = make_loader(ds, batch_size=1, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 4
    # Index 0 went to worker 0 and index 1 to worker 1: each is its worker's first draw.
    assert not torch.equal(batches[0]["valid_mask"], batches[1]["valid_mask"])


def test_make_loader_batches_and_defaults(photos: Path) -> None:
    ds = InpaintingDataset(photos, image_size=32)
    loader = make_loader(ds, batch_size=2, num_workers=0)
    batches = list(loader)
    assert len(batches) == 1  # drop_last
    assert batches[0]["image"].shape == (2, 3, 32, 32)
    assert batches[0]["valid_mask"].shape == (2, 1, 32, 32)
    assert len(list(make_loader(ds, batch_size=8, num_workers=0))) == 1  # set < one batch
    assert 1 <= default_num_workers() <= 8


def test_validation_set_is_fixed_and_cycles_buckets(photos: Path) -> None:
    (photos / "broken.png").write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = ValidationSet(photos, image_size=S, per_image=4)
    assert sum(issubclass(w.category, BrokenImageWarning) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrokenImageWarning)
        b = ValidationSet(photos, image_size=S, per_image=4)
    assert len(a) == len(b) == 12
    for k in range(len(a)):
        assert _same(a[k], b[k])
        ratio = _check_sample(a[k])
        assert bucket_of(ratio) == BUCKETS[k % 6]
    assert a.border == [False] * 6 + [True] * 6
    images, holes = a.pairs()
    assert len(images) == len(holes) == 12
    assert images[0].shape == (S, S, 3) and holes[0].dtype == bool
    assert images[0].dtype == np.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrokenImageWarning)
        c = ValidationSet(photos, image_size=S, per_image=4, seed=99)
    assert not all(_same(a[k], c[k]) for k in range(len(a)))


def _dihedral(hole: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(hole, k) for k in range(4)]
    return turns + [t[:, ::-1] for t in turns]


def test_mask_reuse_serves_pooled_masks_rotated_and_flipped(photos: Path, monkeypatch) -> None:
    import core.data
    from core.masks import MaskGenerator

    monkeypatch.setattr(core.data, "MASK_POOL", 8)
    made: list[np.ndarray] = []
    generate = MaskGenerator.generate

    def counting(self, *args, **kwargs):
        hole = generate(self, *args, **kwargs)
        made.append(hole.copy())
        return hole

    monkeypatch.setattr(MaskGenerator, "generate", counting)
    ds = InpaintingDataset(photos, image_size=32, seed=0, mask_reuse=4)
    holes = []
    for _ in range(200):
        holes.append(ds._random_hole(ds._generator()))
        pool_before = [m.copy() for m in ds._mask_pool]
        holes[-1] ^= True  # a caller writing into its mask must not change the pool...
        assert all(np.array_equal(a, b) for a, b in zip(pool_before, ds._mask_pool))
        holes[-1] ^= True
    # 8 to fill the pool, then about one in four fresh: 8 + 192 / 4 = 56 expected.
    assert 35 <= len(made) <= 80, len(made)
    fresh = {m.tobytes() for m in made}
    reused = [h for h in holes if h.tobytes() not in fresh]
    assert len(reused) > 100
    for hole in holes:
        assert hole.dtype == bool and hole.shape == (32, 32)
        assert any(t.tobytes() in fresh for t in _dihedral(hole))
    # Turned or flipped, not only served as generated.
    assert any(h.tobytes() not in fresh for h in holes)
    assert all(m.tobytes() in fresh for m in ds._mask_pool)  # ...which holds masks as made


def test_mask_reuse_one_generates_every_mask(photos: Path, monkeypatch) -> None:
    from core.masks import MaskGenerator

    calls = []
    generate = MaskGenerator.generate
    monkeypatch.setattr(MaskGenerator, "generate",
                        lambda self, *a, **k: calls.append(1) or generate(self, *a, **k))
    ds = InpaintingDataset(photos, image_size=32, seed=0)
    for i in range(100):
        _check_sample(ds[i % len(ds)], size=32)
    assert len(calls) == 100
    with pytest.raises(ValueError, match="mask_reuse"):
        InpaintingDataset(photos, image_size=32, mask_reuse=0.5)


def test_hole_weights_draw_buckets_by_weight(photos: Path) -> None:
    only_large = InpaintingDataset(photos, image_size=S, seed=1,
                                   hole_weights=[0, 0, 0, 0, 1, 0])
    for i in range(6):
        assert bucket_of(_check_sample(only_large[i % 3])) == (0.4, 0.5)
    mostly_large = InpaintingDataset(photos, image_size=S, seed=2,
                                     hole_weights=[1, 0, 0, 0, 0, 9])
    drawn = [bucket_of(_check_sample(mostly_large[i % 3])) for i in range(30)]
    assert set(drawn) == {(0.01, 0.1), (0.5, 0.6)}
    assert drawn.count((0.5, 0.6)) >= 20  # 27 expected of 30


def test_hole_weights_are_checked(photos: Path) -> None:
    with pytest.raises(ValueError, match="one weight per hole bucket"):
        InpaintingDataset(photos, image_size=S, hole_weights=[1, 2])
    with pytest.raises(ValueError, match="not all zero"):
        InpaintingDataset(photos, image_size=S, hole_weights=[0] * 6)
    with pytest.raises(ValueError, match="non-negative"):
        InpaintingDataset(photos, image_size=S, hole_weights=[1, 1, 1, 1, 1, float("nan")])


def test_hole_weights_refuse_overflow_and_mask_files(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not all zero"):
        InpaintingDataset(photos, image_size=S, hole_weights=[1e308] * 6)  # the sum is inf
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / "m.png")
    with pytest.raises(ValueError, match="not to mask_dir"):
        InpaintingDataset(photos, image_size=S, mask_dir=masks, hole_weights=[1] * 6)
