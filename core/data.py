"""Training and validation data: photos plus irregular hole masks, as the network consumes them.

Every sample is ``{"image": float32 (3, S, S) in [0, 1], "valid_mask": float32 (1, S, S)}``
with 1 = known pixel (the spec's convention; hole files and MaskGenerator use True/white =
hole, so they are inverted here). Masks are binary at every stage: files are resized NEAREST
and thresholded again.

Randomness comes from one numpy generator per process, created lazily: in the main process it
is seeded from ``seed`` alone (reproducible with ``num_workers=0``), in a DataLoader worker from
``seed`` and ``torch.initial_seed()`` (which differs per worker and per epoch), so workers never
produce the same crops or masks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from core.imageio import IMAGE_SUFFIXES, ImageLoadError, load_image
from core.masks import BUCKETS, MaskGenerator, load_mask

# Border constraint used for half of the generated training masks (and the validation set):
# no hole within this fraction of the side from the image border. The paper does not give
# its margin; 1/16 of the side leaves room for the largest (0.5, 0.6] bucket.
BORDER_MARGIN_FRACTION = 1 / 16


class DatasetError(ValueError):
    """A dataset that cannot be used at all (no images, or none decodes); one-line message."""


class BrokenImageWarning(UserWarning):
    """An image (or mask) file that failed to decode and is skipped; issued once per file."""


def find_images(root: str | Path) -> list[Path]:
    """All photos under ``root`` (recursive), sorted so that runs see the same order.

    Hidden files and folders (names starting with '.', e.g. macOS ``._x.jpg`` resource forks,
    which carry an image suffix but are not images) are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    found = []
    for path in root.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        found.append(path)
    return sorted(found)


def border_margin_for(size: int) -> int:
    """The border margin (pixels) used for border-constrained masks at ``size``."""
    return max(1, int(round(size * BORDER_MARGIN_FRACTION)))


def _resize_rgb(arr: np.ndarray, size: int) -> np.ndarray:
    """Square (h, h, 3) uint8 -> (size, size, 3): bicubic (antialiased when shrinking)."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return np.ascontiguousarray(arr)
    img = Image.fromarray(np.ascontiguousarray(arr))
    # reducing_gap: a fast integer box-reduce first for big photos, then bicubic.
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0))


def resize_hole(hole: np.ndarray, size: int) -> np.ndarray:
    """Bool hole mask -> (size, size) with NEAREST, re-thresholded (always binary)."""
    if hole.shape == (size, size):
        return hole.copy()
    img = Image.fromarray(hole.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.Resampling.NEAREST)) > 127


def centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The centred square of side min(H, W), resized to ``size`` (validation/evaluation crop)."""
    h, w = arr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return _resize_rgb(arr[top : top + side, left : left + side], size)


def to_sample(image: np.ndarray, hole: np.ndarray) -> dict[str, torch.Tensor]:
    """(S, S, 3) uint8 + bool hole mask -> the dataset dict (valid_mask 1 = known)."""
    # np.require copies only arrays torch cannot wrap (read-only PIL buffers, flipped views).
    pixels = np.require(image, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
    image_t = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
    valid = torch.from_numpy((~np.asarray(hole, dtype=bool)).astype(np.float32))[None]
    return {"image": image_t.contiguous(), "valid_mask": valid}


class _FileCache:
    """Decodes files through ``loader``; a failing file warns once and is remembered as broken.

    The broken flags live in a shared-memory tensor, so DataLoader workers (forked or spawned)
    see each other's findings: a broken file is warned about once in total (best effort under
    a simultaneous first hit) and not decoded again.
    """

    def __init__(self, paths: list[Path], loader, what: str, preload: bool,
                 folder: str | Path | None = None) -> None:
        self.paths = paths
        self.loader = loader
        self.what = what
        self.prefix = f"{Path(folder)}: " if folder is not None else ""  # for the errors below
        self.broken = torch.zeros(len(paths), dtype=torch.uint8)
        if len(paths):
            self.broken.share_memory_()
        self.cache: list[np.ndarray | None] | None = None
        if preload:
            self.cache = [self.load(i) for i in range(len(paths))]
            if not self.usable():
                raise DatasetError(f"{self.prefix}none of the {len(paths)} {what} files could "
                                   "be decoded")

    def usable(self) -> bool:
        return bool(len(self.paths)) and not bool(self.broken.all())

    def load(self, index: int) -> np.ndarray | None:
        """The decoded array, or None (after one warning per file) when it cannot be read."""
        if self.broken[index]:
            return None
        if self.cache is not None:
            return self.cache[index]
        try:
            return self.loader(self.paths[index])
        except (ImageLoadError, ValueError, OSError) as exc:
            if not self.broken[index]:
                self.broken[index] = 1
                warnings.warn(f"skipping unreadable {self.what}: {exc}", BrokenImageWarning,
                              stacklevel=3)
            return None

    def load_any(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """``index`` if it decodes, else another random file; DatasetError if none does."""
        arr = self.load(index)
        n = len(self.paths)
        tries = 0
        while arr is None:
            if tries < 16:
                index = int(rng.integers(n))
            else:  # unlucky or mostly broken: walk every file once, then give up
                order = rng.permutation(n)
                for candidate in order:
                    arr = self.load(int(candidate))
                    if arr is not None:
                        return arr
                raise DatasetError(f"{self.prefix}none of the {n} {self.what} files could be "
                                   "decoded")
            tries += 1
            arr = self.load(index)
        return arr


def _load_rgb(path: Path) -> np.ndarray:
    return load_image(path).pixels


MASK_POOL = 64  # generated masks kept per worker process for mask_reuse > 1


def bucket_probabilities(weights: Sequence[float] | None, count: int) -> np.ndarray | None:
    """Relative ``weights`` of ``count`` hole buckets as probabilities (None: equal)."""
    if weights is None:
        return None
    values = np.asarray([float(w) for w in weights], dtype=np.float64)
    if values.shape != (count,):
        raise ValueError(f"hole_weights needs one weight per hole bucket ({count}), "
                         f"got {values.size}")
    with np.errstate(over="ignore"):
        total = values.sum()
    if not np.isfinite(values).all() or (values < 0).any() or not 0 < total < np.inf:
        raise ValueError("hole_weights must be non-negative numbers, not all zero, of finite sum")
    return values / total


class InpaintingDataset(Dataset):
    """Random training crops (scale jitter, flip) with random irregular hole masks.

    ``hole_buckets`` restricts generated masks to some of the paper's area buckets (default:
    all six, drawn uniformly); ``hole_weights`` (one relative weight per bucket) draws them
    unevenly, e.g. large holes more often where they are what falls short. Half of the
    generated masks keep a border margin. With
    ``mask_dir``, masks are random files from it (white = hole), resized NEAREST, randomly
    rotated by multiples of 90 degrees and flipped. ``preload`` decodes every image once up
    front and keeps it as uint8 (only for small sets).

    ``mask_reuse`` > 1 makes each generated mask serve that many samples on average, each time
    under a random one of the eight rotations and flips, from a pool of ``MASK_POOL`` masks per
    worker process. Generating a mask costs about four times the rest of a sample, so this is
    what keeps a fast GPU fed; the paper likewise drew from a fixed set of 55k masks under
    random augmentation. The default 1 generates every mask afresh (draws unchanged).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 256,
        mask_dir: str | Path | None = None,
        seed: int = 0,
        preload: bool = False,
        scale_jitter: tuple[float, float] = (0.6, 1.0),
        hole_buckets: Sequence[tuple[float, float]] | None = None,
        mask_reuse: float = 1.0,
        hole_weights: Sequence[float] | None = None,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        if not mask_reuse >= 1.0:
            raise ValueError(f"mask_reuse must be at least 1, got {mask_reuse}")
        self.mask_reuse = float(mask_reuse)
        lo, hi = (float(v) for v in scale_jitter)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale_jitter must satisfy 0 < lo <= hi <= 1, got {scale_jitter}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.scale_jitter = (lo, hi)
        self.hole_buckets = tuple(tuple(b) for b in (hole_buckets or BUCKETS))
        if not self.hole_buckets:
            raise ValueError("hole_buckets must not be empty")
        self.hole_p = bucket_probabilities(hole_weights, len(self.hole_buckets))
        if self.hole_p is not None and mask_dir is not None:
            raise ValueError("hole_weights applies to generated masks, not to mask_dir")
        self.border_margin = border_margin_for(self.image_size)
        paths = find_images(self.root)
        if not paths:
            raise DatasetError(f"{self.root}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        self.paths = paths
        self._images = _FileCache(paths, _load_rgb, "image", preload, self.root)
        self._masks: _FileCache | None = None
        if mask_dir is not None:
            mask_paths = find_images(mask_dir)
            if not mask_paths:
                raise DatasetError(f"{mask_dir}: no mask images found")
            self._masks = _FileCache(mask_paths, load_mask, "mask", preload, mask_dir)
        self._rng: np.random.Generator | None = None
        self._mask_gen: MaskGenerator | None = None
        self._rng_owner: tuple[int, int] | None = None
        self._mask_pool: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.paths)

    # -- randomness ------------------------------------------------------------------------
    def _generator(self) -> np.random.Generator:
        """This process's generator, made on first use (see module docstring)."""
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), info.id if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            entropy = [self.seed] if info is None else [self.seed, torch.initial_seed() % 2**63]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._mask_gen = MaskGenerator(seed=int(self._rng.integers(2**63)))
            self._rng_owner = owner
            self._mask_pool = []
        return self._rng

    # -- samples ---------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._generator()
        arr = self._images.load_any(int(index), rng)
        image = self._random_crop(arr, rng)
        hole = self._random_hole(rng)
        return to_sample(image, hole)

    def _random_crop(self, arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = arr.shape[:2]
        scale = rng.uniform(*self.scale_jitter)
        side = int(np.clip(round(scale * min(h, w)), 1, min(h, w)))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = arr[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return _resize_rgb(crop, self.image_size)

    def _random_hole(self, rng: np.random.Generator) -> np.ndarray:
        size = self.image_size
        if self._masks is None:
            pool = self._mask_pool
            if self.mask_reuse > 1.0 and len(pool) >= MASK_POOL \
                    and rng.random() >= 1.0 / self.mask_reuse:
                hole = np.rot90(pool[int(rng.integers(len(pool)))], k=int(rng.integers(4)))
                if rng.random() < 0.5:
                    hole = hole[:, ::-1]
                return hole.copy()  # contiguous, and never a view into the pool
            if self.hole_p is None:  # (the draws of runs before hole_weights existed)
                bucket = self.hole_buckets[int(rng.integers(len(self.hole_buckets)))]
            else:
                bucket = self.hole_buckets[int(rng.choice(len(self.hole_buckets), p=self.hole_p))]
            margin = self.border_margin if rng.random() < 0.5 else 0
            assert self._mask_gen is not None
            hole = self._mask_gen.generate(size, size, bucket=bucket, border_margin=margin)
            if self.mask_reuse > 1.0:
                if len(pool) < MASK_POOL:
                    pool.append(hole)
                else:
                    pool[int(rng.integers(MASK_POOL))] = hole
                hole = hole.copy()  # the pool's copy stays untouched by the caller
            return hole
        hole = self._masks.load_any(int(rng.integers(len(self._masks.paths))), rng)
        hole = np.rot90(resize_hole(hole, size), k=int(rng.integers(4)))
        if rng.random() < 0.5:
            hole = hole[:, ::-1]
        return np.ascontiguousarray(hole).astype(bool)


class ValidationSet(Dataset):
    """A fixed list of (centre crop, seeded mask) pairs so that numbers compare across runs.

    Item ``k`` uses bucket ``BUCKETS[k % 6]``; every other round of six has the border
    constraint. Masks are seeded by (seed, k), so they do not depend on anything else.
    Unreadable images are skipped with one warning. ``pairs()`` gives the uint8 images and
    bool hole masks for ``core.evaluate.evaluate``.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 256,
        seed: int = 1234,
        per_image: int = 2,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        if per_image < 1:
            raise ValueError(f"per_image must be at least 1, got {per_image}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.per_image = int(per_image)
        paths = find_images(self.root)
        if not paths:
            raise DatasetError(f"{self.root}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        files = _FileCache(paths, _load_rgb, "image", preload=False)
        margin = border_margin_for(self.image_size)
        self.images: list[np.ndarray] = []
        self.paths: list[Path] = []
        self.holes: list[np.ndarray] = []
        self.image_index: list[int] = []
        self.buckets: list[tuple[float, float]] = []
        self.border: list[bool] = []
        for i in range(len(paths)):
            arr = files.load(i)
            if arr is None:
                continue
            self.images.append(centre_crop(arr, self.image_size))
            self.paths.append(paths[i])
            for _ in range(self.per_image):
                k = len(self.holes)
                bucket = BUCKETS[k % len(BUCKETS)]
                border = (k // len(BUCKETS)) % 2 == 1
                state = np.random.SeedSequence([self.seed, k]).generate_state(2, np.uint64)
                gen = MaskGenerator(seed=int(state[0]))
                self.holes.append(
                    gen.generate(self.image_size, self.image_size, bucket=bucket,
                                 border_margin=margin if border else 0)
                )
                self.image_index.append(len(self.images) - 1)
                self.buckets.append(bucket)
                self.border.append(border)
        if not self.images:
            raise DatasetError(f"{self.root}: none of the {len(paths)} images could be decoded")

    def __len__(self) -> int:
        return len(self.holes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return to_sample(self.images[self.image_index[index]], self.holes[index])

    def pairs(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(images, hole masks) as uint8 (S, S, 3) and bool (S, S), one entry per item."""
        return [self.images[i] for i in self.image_index], list(self.holes)


def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader with the settings that matter for throughput.

    Workers persist across epochs (their generators keep advancing, so epochs differ) and
    batches are pinned when CUDA is present. ``num_workers`` None means min(8, CPUs). A
    ``sampler`` replaces shuffling. ``drop_last`` is turned off when the data holds less than
    one batch, since it would otherwise give empty epochs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    workers = default_num_workers() if num_workers is None else max(0, int(num_workers))
    count = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
    if count < batch_size:
        drop_last = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
