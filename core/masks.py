"""Irregular hole masks: a seedable generator and binary loading/saving of mask images.

Convention here: ``hole_mask`` is a bool array, True = pixel to fill. Mask image files are
white = hole, and are always thresholded to binary (anti-aliased or JPEG masks are the most
common cause of seams and blobs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# The paper's six hole-to-image area buckets: (lo, hi].
BUCKETS: tuple[tuple[float, float], ...] = tuple(
    (round(0.1 * i, 1) if i else 0.01, round(0.1 * (i + 1), 1)) for i in range(6)
)


def bucket_name(bucket: tuple[float, float]) -> str:
    return f"({bucket[0]:g},{bucket[1]:g}]"


def bucket_of(ratio: float) -> tuple[float, float] | None:
    """The bucket a hole ratio falls in, or None outside (0.01, 0.6]."""
    for lo, hi in BUCKETS:
        if lo < ratio <= hi:
            return (lo, hi)
    return None


@dataclass
class MaskGenerator:
    """Random strokes of varying width (like a painted brush), blobs and random dilation.

    ``generate(h, w, bucket=(0.1, 0.2), border_margin=0)`` returns a bool hole mask whose
    hole ratio lies in the bucket; without a bucket the ratio is drawn from (0.01, 0.6].
    """

    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def generate(
        self,
        height: int,
        width: int,
        bucket: tuple[float, float] | None = None,
        border_margin: int = 0,
        max_tries: int = 40,
    ) -> np.ndarray:
        if height < 1 or width < 1:
            raise ValueError(f"mask size must be positive, got {height} x {width}")
        if bucket is None:
            lo, hi = BUCKETS[int(self.rng.integers(len(BUCKETS)))]
        else:
            lo, hi = bucket
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"bad bucket {bucket}")
        allowed = np.ones((height, width), dtype=bool)
        if border_margin > 0:
            allowed[:] = False
            m = border_margin
            allowed[m : height - m, m : width - m] = True
            if allowed.mean() <= lo:
                raise ValueError(f"border margin {m} leaves no room for a {hi:g} hole ratio")
        best: np.ndarray | None = None
        for _ in range(max_tries):
            mask = self._grow_to(height, width, lo, hi, allowed)
            ratio = mask.mean()
            if lo < ratio <= hi:
                return mask
            if best is None or abs(ratio - (lo + hi) / 2) < abs(best.mean() - (lo + hi) / 2):
                best = mask
        raise RuntimeError(  # pragma: no cover - not seen in practice
            f"could not generate a {height}x{width} mask in bucket ({lo}, {hi}]"
        )

    # -- internals -------------------------------------------------------------------------
    def _grow_to(
        self, height: int, width: int, lo: float, hi: float, allowed: np.ndarray
    ) -> np.ndarray:
        """Add shapes one at a time, rejecting any that overshoot ``hi``, until above ``lo``.

        Each shape is drawn on a blank scratch canvas, and only the region its bounding box
        covers is merged, counted (region histograms) and cleared again, so a shape costs in
        proportion to its own size (the small shapes that approach the target cost
        microseconds), not the canvas size.
        """
        target = self.rng.uniform(lo, hi)
        total = height * width
        allowed_img = None if allowed.all() else Image.fromarray(allowed.astype(np.uint8) * 255)
        canvas = Image.new("L", (width, height), 0)
        # At canvas coordinates, not in a small shifted region: Pillow's polygon fill is not
        # exactly shift-invariant, and the masks must stay as they were.
        scratch = Image.new("L", (width, height), 0)
        scratch_draw = ImageDraw.Draw(scratch)
        count = 0
        scale = math.sqrt(total)
        for _ in range(200):
            ratio = count / total
            if ratio > lo and (ratio >= target or ratio > hi * 0.98):
                break
            shape = self._shape(height, width, scale, target - ratio)
            box = _shape_box(shape, width, height)
            if box is None:  # entirely outside the canvas
                continue
            _draw(scratch_draw, shape)
            before = canvas.crop(box)
            region = ImageChops.lighter(before, scratch.crop(box))
            scratch.paste(0, box)
            if allowed_img is not None:
                region = ImageChops.multiply(region, allowed_img.crop(box))
            new_count = count + region.histogram()[255] - before.histogram()[255]
            if new_count <= hi * total:
                canvas.paste(region, box)
                count = new_count
        if count > lo * total and self.rng.random() < 0.3:
            radius = int(self.rng.integers(1, max(2, int(scale / 128) + 2)))
            dilated = canvas.filter(ImageFilter.MaxFilter(2 * radius + 1))
            if allowed_img is not None:
                dilated = ImageChops.multiply(dilated, allowed_img)
            if dilated.histogram()[255] <= hi * total:
                canvas = dilated
        return np.asarray(canvas) > 127

    def _shape(self, height: int, width: int, scale: float, remaining: float) -> list[_Primitive]:
        # Bigger shapes while far from the target, finer ones to approach it.
        size = scale * min(1.0, math.sqrt(max(remaining, 1e-4)) * 1.2)
        if self.rng.random() < 0.7:
            return self._stroke(height, width, size)
        return self._blob(height, width, size)

    def _stroke(self, height: int, width: int, size: float) -> list[_Primitive]:
        """A brush stroke: a random walk with smoothly varying direction and width."""
        x, y = self.rng.uniform(0, width), self.rng.uniform(0, height)
        angle = self.rng.uniform(0, 2 * math.pi)
        brush = max(1.0, self.rng.uniform(0.03, 0.12) * size)
        shape: list[_Primitive] = []
        for _ in range(int(self.rng.integers(3, 10))):
            angle += self.rng.normal(0, 0.6)
            step = self.rng.uniform(0.05, 0.25) * size
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            brush = min(max(brush * self.rng.uniform(0.7, 1.4), 1.0), 0.2 * size + 1)
            shape.append(("line", ((x, y), (nx, ny)), max(1, int(round(brush)))))
            r = brush / 2
            shape.append(("ellipse", ((nx - r, ny - r), (nx + r, ny + r)), 0))
            x, y = nx, ny
        return shape

    def _blob(self, height: int, width: int, size: float) -> list[_Primitive]:
        """An irregular polygon blob (like an occluding object)."""
        cx, cy = self.rng.uniform(0, width), self.rng.uniform(0, height)
        radius = self.rng.uniform(0.05, 0.2) * size
        n = int(self.rng.integers(5, 12))
        angles = np.sort(self.rng.uniform(0, 2 * math.pi, n))
        radii = radius * self.rng.uniform(0.5, 1.3, n)
        pts = tuple((cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii))
        return [("polygon", pts, 0)]


# A drawing primitive in canvas coordinates: (kind, points, line width).
_Primitive = tuple[str, tuple[tuple[float, float], ...], int]


def _shape_box(
    shape: list[_Primitive], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The canvas region (left, top, right, bottom) a shape can touch, with a safety margin
    wide enough for line caps and rasterisation rounding; None when it misses the canvas."""
    xs = [p[0] for _, points, _ in shape for p in points]
    ys = [p[1] for _, points, _ in shape for p in points]
    pad = max(line_width for _, _, line_width in shape) / 2 + 3
    left = max(0, math.floor(min(xs) - pad))
    top = max(0, math.floor(min(ys) - pad))
    right = min(width, math.ceil(max(xs) + pad) + 1)
    bottom = min(height, math.ceil(max(ys) + pad) + 1)
    if left >= right or top >= bottom:
        return None
    return left, top, right, bottom


def _draw(draw: ImageDraw.ImageDraw, shape: list[_Primitive]) -> None:
    for kind, points, line_width in shape:
        if kind == "line":
            draw.line(list(points), fill=255, width=line_width)
        elif kind == "ellipse":
            (x0, y0), (x1, y1) = points
            draw.ellipse([x0, y0, x1, y1], fill=255)
        else:
            draw.polygon(list(points), fill=255)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by ``radius`` pixels (a square; pixels outside count as not set):
    separable, 4 * radius boolean passes, 50x faster than a rank filter of the same window on a
    512 px mask (core.inference grows every crop's holes with it)."""
    if radius <= 0:
        return mask
    rows = mask.copy()
    for step in range(1, radius + 1):
        rows[:, step:] |= mask[:, :-step]
        rows[:, :-step] |= mask[:, step:]
    out = rows.copy()
    for step in range(1, radius + 1):
        out[step:] |= rows[:-step]
        out[:-step] |= rows[step:]
    return out


def grow_mask(hole_mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (pixels < 0) a hole mask by a square structuring element."""
    if pixels == 0:
        return hole_mask.copy()
    if pixels > 0:
        return _dilate(hole_mask, pixels)
    return ~_dilate(~hole_mask, -pixels)


def binarize_mask(values: np.ndarray) -> np.ndarray:
    """Threshold a grey/RGB(A) mask array (white = hole) to a bool hole mask."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.copy() if arr.ndim == 2 else arr.any(axis=-1)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        # 0..1, or 0..255 when any value is above 2 (as load_mask reads float images): a
        # 0..255 float mask's faint noise (1.0, 2.0) is not a hole, and a 0..1 mask that a
        # bicubic or Lanczos resize overshot to 1.15 keeps its holes.
        top = 1.0 if np.nanmax(arr, initial=0.0) <= 2.0 else 255.0
        return arr * 2 > top
    maxval = 65535 if arr.dtype == np.uint16 else 255
    return arr > maxval // 2  # = value * 2 > maxval, without an int64 copy of a huge mask


def _sample(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Every 4th pixel (enough for the verdicts below, fast on 12 MP): its brightest channel,
    and its spread across the first three channels (None for a 2-D array)."""
    sample = np.asarray(rgb)[::4, ::4]
    if sample.ndim != 3:
        return sample, None
    return sample.max(axis=-1), np.ptp(sample[..., :3].astype(np.int16), axis=-1)


_MIN_VERDICT_PIXELS = 1024  # below that (about 128 x 128 sampled every 4th pixel): no verdict


def looks_like_mask_image(rgb: np.ndarray) -> bool:
    """Grey, with all but 1 % of the pixels within 24 levels of black or white: what a mask
    file decodes to (JPEG noise included) and a photo almost never does (a scanned page can).
    With ``looks_like_photo`` it tells a photo and a mask given the wrong way round."""
    grey, spread = _sample(rgb)
    if spread is not None and spread.max() > 24:
        return False  # coloured
    if grey.size < _MIN_VERDICT_PIXELS:
        return False
    return bool(((grey <= 24) | (grey >= 231)).mean() >= 0.99)


def looks_like_photo(rgb: np.ndarray) -> bool:
    """In colour (a tenth of the pixels with channels 25+ levels apart) and a quarter mid-tone
    (25..230): never a mask file. Grey images get no verdict: a feathered mask is a quarter
    mid-tone too."""
    if np.ndim(rgb) != 3 or np.shape(rgb)[-1] < 3:
        return False
    grey, spread = _sample(rgb)
    if grey.size < _MIN_VERDICT_PIXELS or (spread > 24).mean() < 0.1:
        return False
    return bool(((grey > 24) & (grey < 231)).mean() >= 0.25)


def _zero_one(arr: np.ndarray) -> bool:
    """A mask holding only 0 and 1 (saved straight from a bool or 0/1 array)."""
    return arr.size > 0 and int(arr.max()) == 1 and int(arr.min()) == 0


def load_mask(path: str | Path) -> np.ndarray:
    """Load a mask image (white = hole) as a bool hole mask, always binarised."""
    from core.imageio import INTEGER_MODES, MAX_PIXELS, has_alpha, upright

    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:  # checked before decoding: a mask can be a bomb too
                raise ValueError(
                    f"{path}: mask is {w} x {h} ({w * h / 1e6:.0f} MP), larger than the "
                    f"{MAX_PIXELS / 1e6:.0f} MP limit"
                )
            img.load()
            lossless = img.format in ("PNG", "BMP", "PPM", "TGA") or (
                img.format == "TIFF" and "jpeg" not in str(img.info.get("compression", ""))
            )
            # Upright like the photo (core.imageio applies the photo's EXIF orientation): a
            # mask saved with the photo's orientation tag lines up with what the user sees.
            img = upright(img)
            if has_alpha(img):
                # A painted layer: transparent = keep, opaque non-black = hole.
                rgba = np.asarray(img.convert("RGBA"))
                return binarize_mask(rgba[..., :3]) & (rgba[..., 3] > 127)
            # (lossless, above: only such files can mean 0/1 literally; JPEG noise in a black
            # mask reaches 1.)
            if img.mode in INTEGER_MODES:
                arr = np.asarray(img)
                if lossless and _zero_one(arr):
                    return arr == 1
                return arr > (65535 if arr.max() > 255 else 255) // 2
            if img.mode == "F":  # float masks: 0..1, or 0..255 (binarize_mask's rule)
                return binarize_mask(np.asarray(img))
            if img.mode in ("1", "L"):
                arr = np.asarray(img.convert("L"))
                if lossless and img.mode != "1" and _zero_one(arr):
                    return arr == 1  # a 0/1 mask written from an array: 1 = hole
                return binarize_mask(arr)
            # Colour: the brightest channel decides, as for painted (RGBA) masks and
            # binarize_mask, so a red or green stroke is a hole too.
            rgb = np.asarray(img.convert("RGB"))
            if lossless and _zero_one(rgb):
                return rgb.max(axis=2) == 1  # a 0/1 mask saved as colour: 1 = hole
            return binarize_mask(rgb)
    except FileNotFoundError:
        raise ValueError(f"{path}: mask file not found") from None
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a readable mask image ({reason})") from None


def save_mask(path: str | Path, hole_mask: np.ndarray) -> None:
    """Save a hole mask as a lossless 8-bit PNG (white = hole), atomically."""
    from core.imageio import atomic_save_pil

    img = Image.fromarray(np.asarray(hole_mask, dtype=bool).astype(np.uint8) * 255)
    atomic_save_pil(img, Path(path), format="PNG")
