"""Reading photos the way users have them, and writing results without ever losing a file.

Everything becomes (H, W, 3) uint8 RGB with EXIF orientation applied: grey, grey+alpha, RGBA
(composited on white), palette, CMYK and 16-bit images included. Writes go to a temporary file
in the target folder and are renamed into place, so a crash or a full disk never leaves a
half-written image behind.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from core.atomic import atomic_write

# Refuse decompression bombs with a message instead of exhausting memory (about 8 GB of
# float work for the largest photo we accept).
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
JPEG_EXIF_LIMIT = 65533  # bytes of EXIF one JPEG APP1 segment can hold
INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's 16/32-bit integer grey


class ImageLoadError(ValueError):
    """A file that cannot be used as a photo; the message is one line and names the file."""


@dataclass
class LoadedImage:
    """Pixels plus the metadata worth carrying into a saved result."""

    pixels: np.ndarray
    exif: bytes | None = None
    icc_profile: bytes | None = None
    format: str | None = None
    info: dict = field(default_factory=dict)
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)  # what the conversion to RGB changed

    def save_metadata(self) -> dict[str, Any]:
        """What ``save_image`` should carry into a result made from these pixels."""
        return {"exif": self.exif, "icc_profile": self.icc_profile, "dpi": self.dpi}


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries transparency (an alpha channel or a transparent palette)."""
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow image to (H, W, 3) uint8 RGB."""
    mode = img.mode
    if mode in INTEGER_MODES:
        arr = np.asarray(img).astype(np.float64)
        # 16-bit data is scaled from its full range (a dark 16-bit photo stays dark); only
        # 32-bit "I" images, which hold either range, are guessed from their values.
        top = 65535.0 if mode != "I" or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "RGB":
        return np.array(img)
    return np.array(img.convert("RGB"))


def load_image(path: str | Path) -> LoadedImage:
    """Load a photo as RGB uint8 with EXIF orientation applied; ImageLoadError on failure."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: file is empty")
    try:
        with Image.open(path) as img:
            fmt = img.format
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageLoadError(
                    f"{path}: image is {w} x {h} ({w * h / 1e6:.0f} MP), larger than the "
                    f"{MAX_PIXELS / 1e6:.0f} MP limit"
                )
            deep = _high_bit_depth(img)  # before load(): Pillow reduces 16-bit RGB on load
            img.load()
            exif = img.info.get("exif")
            icc = img.info.get("icc_profile")
            dpi = _dpi(img.info.get("dpi"))
            oriented = upright(img)
            if dpi and oriented is not img and _orientation(img) in (5, 6, 7, 8):
                dpi = (dpi[1], dpi[0])  # turned a quarter: x and y resolution trade places
            notes = []
            if _has_transparency(oriented):
                notes.append("its transparent areas were flattened onto white")
            if deep:
                notes.append("its high bit depth (16-bit or more) is saved as 8-bit")
            pixels = to_rgb8(oriented)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:
        raise ImageLoadError(
            f"{path}: image is larger than the {MAX_PIXELS / 1e6:.0f} MP limit"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageLoadError(f"{path}: not a readable image ({reason})") from None
    except MemoryError:
        raise ImageLoadError(f"{path}: image too large to load into memory") from None
    if exif:
        exif = _exif_without_orientation(exif)
    if icc and bytes(icc[16:20]) != b"RGB ":
        # A CMYK or grey profile does not describe the RGB pixels made from it; keeping it
        # would make colour-managed viewers misread the saved result.
        icc = None
    return LoadedImage(pixels=pixels, exif=exif, icc_profile=icc, format=fmt, dpi=dpi,
                       notes=notes)


def upright(img: Image.Image) -> Image.Image:
    """The image as displayed (EXIF orientation applied); as stored when its EXIF is damaged,
    since the pixels are still good."""
    try:
        return ImageOps.exif_transpose(img)
    except (SyntaxError, OSError, ValueError, KeyError, TypeError, struct.error):
        return img


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when missing or unreadable)."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (SyntaxError, OSError, ValueError, KeyError, TypeError, struct.error):
        return 1


def _high_bit_depth(img: Image.Image) -> bool:
    """More than 8 bits per sample in the file (checked before the pixels are decoded)."""
    if img.mode in (*INTEGER_MODES, "F"):
        return True
    if any(";16" in str(tile[3:]) for tile in getattr(img, "tile", []) or []):
        return True  # e.g. a 48-bit PNG: raw mode RGB;16B, decoded to 8-bit RGB
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max((int(b) for b in bits), default=8) > 8
    return False


def _dpi(value: object) -> tuple[float, float] | None:
    """The file's resolution if it is a pair of sane numbers (it is often missing or 0)."""
    try:
        x, y = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (x, y) if 0 < x < 1e6 and 0 < y < 1e6 else None


def _has_transparency(img: Image.Image) -> bool:
    """Whether any pixel is less than opaque (not just whether the mode could say so)."""
    if not has_alpha(img):
        return False
    alpha = (img.convert("RGBA") if img.mode == "P" else img).getchannel("A")
    return alpha.getextrema()[0] < 255


def _exif_without_orientation(exif: bytes) -> bytes | None:
    """The pixels are already upright, so a saved copy must not be rotated twice."""
    try:
        data = Image.Exif()
        data.load(exif)
        data[0x0112] = 1
        return data.tobytes()
    except Exception:  # noqa: BLE001 - unreadable EXIF is dropped, never fatal
        return None


def _format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    formats = {
        ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
        ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
    }
    if suffix not in formats:
        raise ValueError(
            f"{path}: unsupported output extension '{suffix or '(none)'}'; "
            f"use one of {', '.join(sorted(set(formats)))}"
        )
    return formats[suffix]


def atomic_save_pil(img: Image.Image, path: Path, format: str, **params) -> None:
    """Save through a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{path}: folder {folder} does not exist")
    atomic_write(path, lambda fh: img.save(fh, format=format, **params))


def _exif_has_resolution(exif: bytes | None) -> bool:
    """Whether an EXIF block states the resolution (XResolution, tag 282)."""
    if not exif:
        return False
    try:
        parsed = Image.Exif()
        parsed.load(exif)
    except Exception:  # unreadable EXIF is kept as bytes; it states nothing we can read
        return False
    return 282 in parsed


def save_image(
    path: str | Path,
    pixels: np.ndarray,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    quality: int = 95,
    dpi: tuple[float, float] | None = None,
) -> list[str]:
    """Save RGB uint8 pixels, format by extension, keeping EXIF and ICC where the format can.
    JPEG is the only lossy output (quality ``quality``); WebP is written lossless.

    Returns notes on the EXIF data or colour profile the output format could not keep (empty
    when both were kept), so callers can tell the user instead of losing them silently."""
    path = Path(path)
    fmt = _format_for(path)
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {arr.dtype} {arr.shape}")
    img = Image.fromarray(np.ascontiguousarray(arr))
    params: dict = {}
    notes: list[str] = []
    dropped = []
    holds_metadata = fmt in ("JPEG", "PNG", "WEBP", "TIFF")  # EXIF and ICC alike
    if icc_profile:
        if holds_metadata:
            params["icc_profile"] = icc_profile
        else:
            dropped.append("colour profile")
    if exif:
        if not holds_metadata:
            dropped.append("EXIF data")
        elif fmt == "JPEG" and len(exif) > JPEG_EXIF_LIMIT:
            # A JPEG's EXIF must fit one 64 KB APP1 segment; a longer block (from a PNG or
            # TIFF original) is dropped rather than losing the result.
            notes.append(f"its EXIF data ({len(exif) // 1024} KB) is too long for a JPEG and "
                         "was left out")
        else:
            params["exif"] = exif
    if dropped:
        notes.append(f"{fmt} cannot hold the photo's {' or '.join(dropped)}; left out")
    if dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        params["dpi"] = dpi
    elif dpi and fmt == "WEBP" and not _exif_has_resolution(params.get("exif")):
        # WebP has no resolution field of its own; only EXIF resolution tags carry it there.
        notes.append(f"WEBP cannot hold the photo's resolution ({round(dpi[0])} dpi); left out")
    if fmt == "JPEG":
        params["quality"] = quality
    if fmt == "WEBP":
        # Lossless, like PNG and TIFF: the pixels outside the hole stay exactly the input's.
        # Fastest effort: the default takes ~17x longer (3.4 s for 1.5 MP) for ~10 % smaller.
        params.update(lossless=True, method=0, quality=0)
    atomic_save_pil(img, path, fmt, **params)
    return notes
