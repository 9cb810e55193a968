"""Issue #7: bad inputs, hostile files, faults and interruptions lose nothing.

One section per row of the issue's table, through the public entry points: core.imageio,
core.masks, core.inference, core.checkpoint, ``python -m core.inpaint`` (in-process through
``core.inpaint.run``, plus one real subprocess for the formats batch) and ``python -m
core.train`` (in-process through ``core.train.main``). Rows already covered elsewhere are
named where they are, not repeated:

- cancel between steps: tests/test_inference.py::test_cancel_between_steps; cancel, close
  mid-run and racing runs in the app: tests/app/test_app_inpaint.py and
  tests/app/test_app_reliability.py;
- SIGINT / SIGTERM during training, NaN loss, broken training photos, resume:
  tests/test_train.py (signals, nan, broken, resume*), tests/test_data.py (broken*);
- empty / mismatched masks, mismatched checkpoint, pickled code (Path.touch payload):
  tests/test_inference.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageFile

import core.atomic
from core.atomic import atomic_write
from core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    save_model_file,
)
from core.imageio import MAX_PIXELS, ImageLoadError, load_image, save_image
from core.inference import Inpainter
from core.masks import load_mask, save_mask
from core.model import PConvUNet

ROOT = Path(__file__).resolve().parent.parent


# -- helpers --------------------------------------------------------------------------------
def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with mild noise (JPEG-friendly), (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(1, w - 1), y * 255 / max(1, h - 1), np.full(x.shape, 90.0)],
                    -1)
    return np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)


def _png(width: int, height: int, rows: bytes, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG written by hand: any IHDR (a 'bomb' header with one row of data), 16-bit RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG header claiming width x height, with a single row of pixel data (~100 B)."""
    return _png(width, height, b"\x00" * (1 + (width + 7) // 8), bit_depth=1)


def _png16(arr: np.ndarray) -> bytes:
    """(H, W, 3) uint16 as a 16-bit RGB PNG."""
    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return _png(w, h, rows, bit_depth=16, colour=2)


def _cmyk_icc() -> bytes:
    """An ICC profile that declares a CMYK colour space (a real one is large; the header is
    what matters to viewers and to load_image)."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20] = b"CMYK"
    return bytes(icc)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """``python -m core.inpaint`` in this process: (exit status, stderr)."""
    from core.inpaint import run

    code = run([str(a) for a in args])
    return code, capsys.readouterr().err


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class _DecodeStarted(Exception):
    """Raised by a spy on ImageFile.load: the pixels were about to be decoded."""


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self, *args, **kwargs):
        raise _DecodeStarted(f"decoding {self.size} started")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


class _OsWithFullDisk:
    """core.atomic's view of ``os`` in which every file it writes is /dev/full (ENOSPC)."""

    def __init__(self) -> None:
        self.opened = 0

    def fdopen(self, fd: int, mode: str = "r", *args, **kwargs):
        os.close(fd)  # the real temp file stays empty; atomic_write must remove it
        self.opened += 1
        return open("/dev/full", mode)  # noqa: SIM115 - atomic_write closes it

    def __getattr__(self, name: str):
        return getattr(os, name)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> _OsWithFullDisk:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    fake = _OsWithFullDisk()
    monkeypatch.setattr(core.atomic, "os", fake)
    return fake


@pytest.fixture
def inpainter(tiny_model_file: Path) -> Inpainter:
    return Inpainter.from_checkpoint(tiny_model_file, device="cpu")


def _centre_hole(h: int, w: int) -> np.ndarray:
    hole = np.zeros((h, w), bool)
    hole[h // 3 : max(h // 3 + 1, 2 * h // 3), w // 3 : max(w // 3 + 1, 2 * w // 3)] = True
    if hole.all():  # 1 x 1: nothing could be filled
        hole[:] = False
    return hole


# == missing, empty, truncated, non-image file, wrong extension =============================
def _bad_file(kind: str, folder: Path) -> Path:
    good = io.BytesIO()
    Image.fromarray(_photo(60, 80)).save(good, "PNG")
    jpeg = io.BytesIO()
    Image.fromarray(_photo(60, 80)).save(jpeg, "JPEG")
    path = folder / {"missing": "gone.png", "empty": "empty.png", "truncated_png": "cut.png",
                     "truncated_jpeg": "cut.jpg", "text": "notes.png", "folder": "album.jpg",
                     "html": "page.jpg"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_png":
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    elif kind == "truncated_jpeg":
        path.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    elif kind == "text":
        path.write_text("shopping list: eggs, milk\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "html":
        path.write_text("<html><body>404 not found</body></html>")
    return path


BAD_FILES = ["missing", "empty", "truncated_png", "truncated_jpeg", "text", "folder", "html"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_photo_and_mask_files_are_one_line_errors_naming_the_file(tmp_path, kind):
    path = _bad_file(kind, tmp_path)
    with pytest.raises(ImageLoadError) as photo_error:
        load_image(path)
    assert path.name in _one_line(str(photo_error.value))
    with pytest.raises(ValueError) as mask_error:
        load_mask(path)
    assert path.name in _one_line(str(mask_error.value))


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated_jpeg", "text"])
def test_cli_bad_photo_is_one_line_and_writes_nothing(tmp_path, capsys, tiny_model_file, kind):
    photo = _bad_file(kind, tmp_path)
    mask = tmp_path / "mask.png"
    Image.fromarray((_centre_hole(60, 80) * 255).astype(np.uint8)).save(mask)
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "out.png",
                     "--checkpoint", tiny_model_file, "--device", "cpu")
    assert code == 2
    line = _one_line(err)
    assert line.startswith("error: ") and photo.name in line
    assert not (tmp_path / "out.png").exists() and not _temp_files(tmp_path)


def test_wrong_extension_is_read_by_content(tmp_path, inpainter):
    pixels = _photo(30, 40)
    Image.fromarray(pixels).save(tmp_path / "really_png.jpg", format="PNG")
    Image.fromarray(pixels).save(tmp_path / "really_jpeg.png", format="JPEG", quality=95)
    assert np.array_equal(load_image(tmp_path / "really_png.jpg").pixels, pixels)
    assert load_image(tmp_path / "really_png.jpg").format == "PNG"
    loaded = load_image(tmp_path / "really_jpeg.png")
    assert loaded.format == "JPEG" and loaded.pixels.shape == (30, 40, 3)
    # and a PNG-in-.jpg mask is a mask like any other
    Image.fromarray((_centre_hole(30, 40) * 255).astype(np.uint8)).save(
        tmp_path / "mask.jpg", format="PNG")
    assert np.array_equal(load_mask(tmp_path / "mask.jpg"), _centre_hole(30, 40))


# == huge images ==============================================================================
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [20_000, 30_000])  # 400 MP (our limit), 900 MP (Pillow's)
def test_decompression_bomb_is_refused_before_decoding(tmp_path, no_decoding, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(side, side))
    assert path.stat().st_size < 1000
    with pytest.raises(ImageLoadError) as photo_error:
        load_image(path)
    message = _one_line(str(photo_error.value))
    assert "bomb.png" in message and f"{MAX_PIXELS // 1_000_000} MP limit" in message
    with pytest.raises(ValueError) as mask_error:
        load_mask(path)
    assert "bomb.png" in _one_line(str(mask_error.value))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_cli_refuses_a_bomb_with_one_line(tmp_path, capsys, tiny_model_file):
    photo = tmp_path / "bomb.png"
    photo.write_bytes(_bomb_png(20_000, 20_000))
    mask = tmp_path / "m.png"
    Image.new("L", (8, 8), 255).save(mask)
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "out.png",
                     "--checkpoint", tiny_model_file, "--device", "cpu")
    assert code == 2 and "400 MP" in _one_line(err)


def test_a_150_megapixel_photo_is_accepted_not_refused(tmp_path, no_decoding):
    """Between 100 and 200 MP the photo is decoded (the spy stops it before the pixels)."""
    path = tmp_path / "pano.png"
    path.write_bytes(_bomb_png(12_500, 12_000))
    with pytest.raises(_DecodeStarted):
        load_image(path)
    with pytest.raises(_DecodeStarted):
        load_mask(path)


def test_inference_memory_is_linear_in_the_photo_size(inpainter):
    """A big hole in a photo: the numpy work is a few bytes per pixel, never per crop pixel
    squared. Measured ~12 B/px (raw and composite copies, the upscaled crop); at 150 MP that
    is ~1.8 GB on top of the photo itself."""
    h, w = 1200, 1000
    image = _photo(h, w)
    hole = np.zeros((h, w), bool)
    hole[100:1100, 100:900] = True  # two thirds of the photo
    tracemalloc.start()
    try:
        result = inpainter.inpaint(image, hole)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.composite.shape == image.shape
    assert np.array_equal(result.composite[~hole], image[~hole])
    per_pixel = peak / (h * w)
    assert per_pixel < 16, f"{per_pixel:.1f} bytes per pixel"


# == formats: grey, grey+alpha, RGBA, 16-bit, CMYK, palette, EXIF, 1 x N, 8 x 8 ================
def _orientation_jpeg(path: Path, orientation: int) -> None:
    stored = _photo(24, 40)
    stored[:8, :8] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())


def _format_files(folder: Path) -> dict[str, tuple[Path, tuple[int, int]]]:
    """name -> (file, upright (h, w)) for every odd kind of photo in the issue."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _photo(30, 40)
    files: dict[str, tuple[Path, tuple[int, int]]] = {}

    def add(name: str, suffix: str, shape: tuple[int, int]) -> Path:
        path = folder / f"{name}{suffix}"
        files[name] = (path, shape)
        return path

    Image.fromarray(rgb).convert("L").save(add("grey", ".png", (30, 40)))
    Image.fromarray(rgb).convert("LA").save(add("grey_alpha", ".png", (30, 40)))
    rgba = np.dstack([rgb, np.linspace(0, 255, 40, dtype=np.uint8)[None].repeat(30, 0)])
    Image.fromarray(rgba).save(add("rgba", ".png", (30, 40)))
    grey16 = (np.arange(30 * 40).reshape(30, 40) * 54).astype(np.uint16)
    Image.fromarray(grey16).save(add("grey16", ".png", (30, 40)))
    Image.fromarray(grey16).save(add("grey16_tiff", ".tif", (30, 40)))
    add("rgb16", ".png", (30, 40)).write_bytes(_png16(rgb.astype(np.uint16) * 257))
    Image.fromarray(rgb).convert("CMYK").save(add("cmyk", ".jpg", (30, 40)), quality=95,
                                              icc_profile=_cmyk_icc())
    palette = Image.fromarray(rgb).convert("P")
    palette.save(add("palette", ".png", (30, 40)), transparency=0)
    _orientation_jpeg(add("exif6", ".jpg", (40, 24)), 6)
    _orientation_jpeg(add("exif8", ".jpg", (40, 24)), 8)
    Image.fromarray(_photo(1, 40)).save(add("row", ".png", (1, 40)))
    Image.fromarray(_photo(40, 1)).save(add("column", ".png", (40, 1)))
    Image.fromarray(_photo(8, 8)).save(add("eight", ".png", (8, 8)))
    return files


def test_odd_photos_load_upright_as_rgb_and_inpaint_exactly(tmp_path, inpainter):
    for name, (path, (h, w)) in _format_files(tmp_path).items():
        loaded = load_image(path)
        assert loaded.pixels.shape == (h, w, 3) and loaded.pixels.dtype == np.uint8, name
        hole = _centre_hole(h, w)
        result = inpainter.inpaint(loaded.pixels, hole)
        assert result.composite.shape == (h, w, 3), name
        assert np.array_equal(result.composite[~hole], loaded.pixels[~hole]), name
        if loaded.icc_profile is not None:
            assert loaded.icc_profile[16:20] == b"RGB ", name  # never a CMYK/grey profile


def test_exif_rotation_direction_and_metadata(tmp_path):
    for orientation, corner in ((6, (slice(0, 8), slice(-8, None))),
                                (8, (slice(-8, None), slice(0, 8)))):
        path = tmp_path / f"o{orientation}.jpg"
        _orientation_jpeg(path, orientation)
        loaded = load_image(path)
        assert loaded.pixels.shape == (40, 24, 3)
        red = loaded.pixels[corner].astype(int)
        assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60, orientation
        # saved results are not rotated a second time by viewers
        exif = Image.Exif()
        exif.load(loaded.exif)
        assert exif.get(0x0112, 1) == 1


def test_sixteen_bit_and_cmyk_keep_their_tones(tmp_path):
    # A dark 16-bit photo whose values all happen to be < 256 (0.4% of full scale) stays
    # dark: it is not mistaken for 8-bit data.
    dark = (np.arange(30 * 40).reshape(30, 40) % 250).astype(np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    Image.fromarray(dark).save(tmp_path / "dark16.tif")
    assert load_image(tmp_path / "dark16.png").pixels.max() <= 1
    assert load_image(tmp_path / "dark16.tif").pixels.max() <= 1
    rgb = _photo(30, 40)
    (tmp_path / "rgb16.png").write_bytes(_png16(rgb.astype(np.uint16) * 257))
    assert np.array_equal(load_image(tmp_path / "rgb16.png").pixels, rgb)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = load_image(tmp_path / "cmyk.jpg").pixels.astype(int)
    assert np.abs(cmyk - rgb).mean() < 8
    transparent = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    transparent.save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png").pixels == 255).all()  # on white


def test_cli_folder_of_odd_photos_keeps_size_orientation_and_pixels(tmp_path, tiny_model_file):
    """One real ``python -m core.inpaint`` run over every odd kind, plus a JPEG mask."""
    files = _format_files(tmp_path / "photos")
    masks = tmp_path / "masks"
    masks.mkdir()
    holes = {}
    for name, (_path, (h, w)) in files.items():
        holes[name] = _centre_hole(h, w)
        Image.fromarray(holes[name].astype(np.uint8) * 255).save(masks / f"{name}.png")
    # an anti-aliased mask saved as JPEG for the RGBA photo (replaces its PNG mask)
    (masks / "rgba.png").unlink()
    soft = np.zeros((30, 40), np.uint8)
    soft[8:20, 10:30] = 255
    soft[7, 10:30] = 100  # anti-aliased edges, below half: kept
    soft[20, 10:30] = 200  # above half: filled
    Image.fromarray(soft).save(masks / "rgba.jpg", quality=90)
    holes["rgba"] = load_mask(masks / "rgba.jpg")
    assert holes["rgba"][20, 15] and not holes["rgba"][7, 15]

    out, raw = tmp_path / "out", tmp_path / "raw"
    r = subprocess.run(
        [sys.executable, "-m", "core.inpaint", tmp_path / "photos", masks, "-o", out,
         "--raw-out", raw, "--checkpoint", tiny_model_file, "--device", "cpu"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for name, (path, (h, w)) in files.items():
        source = load_image(path).pixels
        for folder in (out, raw):
            with Image.open(folder / path.name) as saved:
                assert saved.size == (w, h), name  # upright: rotated once, not twice
                assert saved.getexif().get(0x0112, 1) == 1, name
                icc = saved.info.get("icc_profile")
                assert icc is None or icc[16:20] == b"RGB ", name
        result = load_image(out / path.name).pixels
        keep = ~holes[name]
        if path.suffix == ".jpg":  # re-encoded: close, not exact
            assert np.abs(result[keep].astype(int) - source[keep]).mean() < 6, name
        else:
            assert np.array_equal(result[keep], source[keep]), name


# == masks: empty, full, another size, non-binary ============================================
def _mask_files(folder: Path) -> dict[str, Path]:
    """The same hole (rows 5-14, cols 10-29 of 20 x 40) in every way a mask file comes."""
    folder.mkdir(parents=True, exist_ok=True)
    hole = np.zeros((20, 40), bool)
    hole[5:15, 10:30] = True
    grey = hole.astype(np.uint8) * 255
    soft = grey.copy()
    soft[4, 10:30] = 127  # anti-aliased fringe: not a hole
    soft[15, 10:30] = 64
    soft[5, 10:30] = 128  # just over half: a hole
    paths = {}

    def path(name: str) -> Path:
        paths[name] = folder / name
        return paths[name]

    Image.fromarray(hole).save(path("bilevel.png"))
    Image.fromarray(soft).save(path("antialiased.png"))
    Image.fromarray(grey).save(path("grey.jpg"), quality=75)
    Image.fromarray(grey).save(path("grey.bmp"))
    Image.fromarray(grey).convert("P").save(path("palette.png"))
    red = np.zeros((20, 40, 3), np.uint8)
    red[hole] = (255, 0, 0)
    Image.fromarray(red).save(path("red_stroke.png"))
    painted = np.zeros((20, 40, 4), np.uint8)
    painted[hole] = (255, 255, 255, 255)
    painted[0:3, 0:5] = (255, 255, 255, 0)  # white but transparent: kept
    Image.fromarray(painted).save(path("painted.png"))
    Image.merge("LA", (Image.fromarray(grey), Image.new("L", (40, 20), 255))).save(
        path("la.png"))
    Image.fromarray(hole.astype(np.uint16) * 65535).save(path("sixteen.png"))
    Image.fromarray(hole.astype(np.float32)).save(path("float01.tif"))
    Image.fromarray(hole.astype(np.float32) * 255).save(path("float255.tif"))
    return paths


def test_every_kind_of_mask_file_is_binarised_to_the_same_hole(tmp_path):
    hole = np.zeros((20, 40), bool)
    hole[5:15, 10:30] = True
    for name, path in _mask_files(tmp_path).items():
        loaded = load_mask(path)
        assert loaded.dtype == bool and loaded.shape == (20, 40), name
        if name.endswith(".jpg"):
            assert (loaded != hole).sum() <= 8, name  # JPEG ringing thresholded away
        else:
            assert np.array_equal(loaded, hole), name


def test_cli_full_and_mismatched_masks_are_one_line(tmp_path, capsys, tiny_model_file):
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.new("L", (40, 30), 255).save(tmp_path / "full.png")
    Image.new("L", (30, 40), 255).save(tmp_path / "turned.png")  # rotated mask: 30 x 40
    for mask, expected in (("full.png", "whole image"), ("turned.png", "30 x 40")):
        code, err = _cli(capsys, tmp_path / "p.png", tmp_path / mask, "-o", tmp_path / "o.png",
                         "--checkpoint", tiny_model_file, "--device", "cpu")
        assert code == 2 and expected in _one_line(err)
        assert not (tmp_path / "o.png").exists()


def test_cli_never_overwrites_its_inputs(tmp_path, capsys, tiny_model_file):
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for out, raw, expected in (("m.png", None, "input mask"), ("p.png", None, "input photo"),
                               ("o.png", "o.png", "same file")):
        args = [tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / out, "--overwrite",
                "--checkpoint", tiny_model_file, "--device", "cpu"]
        if raw:
            args += ["--raw-out", tmp_path / raw]
        code, err = _cli(capsys, *args)
        assert code == 2 and expected in _one_line(err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# == corrupt, truncated or mismatched checkpoints ============================================
def _bad_checkpoint(kind: str, folder: Path) -> Path:
    from safetensors.torch import save as save_safetensors

    torch.manual_seed(0)
    model = PConvUNet(layers=4, width=8)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    good = folder / "good.pt"
    save_checkpoint(good, {"model": state, "model_config": config})
    data = good.read_bytes()
    good_st = folder / "good.safetensors"
    save_model_file(good_st, model, half=False)
    st = good_st.read_bytes()

    def st_file(name: str, cfg: object, tensors: dict = state, extra: dict | None = None) -> Path:
        import json

        path = folder / name
        metadata = {"model_config": json.dumps(cfg), "extra": json.dumps(extra or {})}
        path.write_bytes(save_safetensors(tensors, metadata=metadata))
        return path

    if kind == "truncated_pt":
        (folder / "cut.pt").write_bytes(data[: len(data) // 2])
        return folder / "cut.pt"
    if kind == "flipped_bytes_pt":  # damage inside the tensor data: only the CRCs tell
        damaged = bytearray(data)
        start = _largest_zip_member_offset(good) + 100
        damaged[start : start + 16] = bytes(b ^ 0xFF for b in damaged[start : start + 16])
        (folder / "damaged.pt").write_bytes(bytes(damaged))
        return folder / "damaged.pt"
    if kind == "truncated_safetensors":
        (folder / "cut.safetensors").write_bytes(st[: len(st) // 2])
        return folder / "cut.safetensors"
    if kind == "empty":
        (folder / "empty.ckpt").write_bytes(b"")
        return folder / "empty.ckpt"
    if kind == "text":
        (folder / "readme.pt").write_text("not a checkpoint")
        return folder / "readme.pt"
    if kind == "header_too_large":
        (folder / "hdr.safetensors").write_bytes((10**15).to_bytes(8, "little") + b"{}")
        return folder / "hdr.safetensors"
    if kind == "other_width":
        return st_file("width4.safetensors", {**config, "width": 4})
    if kind == "huge_config":  # would need TBs if the model were built before the check
        return st_file("huge.safetensors", {**config, "width": 10**6})
    if kind == "negative_width":
        return st_file("negative.safetensors", {**config, "width": -3})
    if kind == "too_deep":
        return st_file("deep.safetensors", {**config, "layers": 60})
    if kind == "nan_weights":
        return st_file("nan.safetensors", config,
                       {**state, "encoder.0.conv.weight": state["encoder.0.conv.weight"] * np.nan})
    if kind == "bad_work_size":  # inference settings come from the file too
        return st_file("worksize.safetensors", config, extra={"work_size": "all of it"})
    if kind == "negative_hole_radius":
        return st_file("radius.safetensors", config, extra={"max_hole_radius": -5})
    if kind == "bad_smoothing":
        return st_file("smooth.safetensors", config, extra={"fill_smoothing": [4.0, 1.0, 12]})
    if kind == "smoothing_not_numbers":
        return st_file("smooth2.safetensors", config, extra={"fill_smoothing": "soft"})
    if kind == "bad_passes":
        return st_file("passes.safetensors", config, extra={"flip_passes": 7})
    if kind == "not_tensors":
        save_checkpoint(folder / "ints.pt", {"model": {k: 1 for k in state},
                                             "model_config": config})
        return folder / "ints.pt"
    if kind == "no_config":
        torch.save({"model": state}, folder / "noconfig.pt")
        return folder / "noconfig.pt"
    raise KeyError(kind)


def _largest_zip_member_offset(path: Path) -> int:
    """Where the data of the biggest tensor record of a torch.save zip starts."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


BAD_CHECKPOINTS = ["truncated_pt", "flipped_bytes_pt", "truncated_safetensors", "empty", "text",
                   "header_too_large", "other_width", "huge_config", "negative_width",
                   "too_deep", "nan_weights", "bad_work_size", "negative_hole_radius",
                   "bad_smoothing", "smoothing_not_numbers", "bad_passes", "not_tensors",
                   "no_config"]


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_one_line_errors_naming_the_file(tmp_path, kind):
    path = _bad_checkpoint(kind, tmp_path)
    with pytest.raises(CheckpointError) as error:
        Inpainter.from_checkpoint(path, device="cpu")
    message = _one_line(str(error.value))
    assert message.startswith(str(path)), message
    assert len(message) < 500


def test_cli_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    path = _bad_checkpoint("flipped_bytes_pt", tmp_path)
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                     "--checkpoint", path, "--device", "cpu")
    assert code == 2 and "damaged.pt" in _one_line(err)
    assert not (tmp_path / "o.png").exists()


# == a checkpoint whose pickle would run code ==============================================
class _Payload:
    """Unpickling this calls os.mkdir(target): the marker proves whether code ran."""

    target = ""

    def __reduce__(self):
        return (os.mkdir, (_Payload.target,))


def _evil_checkpoint(kind: str, folder: Path) -> Path:
    if kind == "zip_ckpt":
        path = folder / "evil.ckpt"
        torch.save({"model": {}, "model_config": {}, "x": _Payload()}, path)
    elif kind == "legacy_pth":
        path = folder / "evil.pth"
        torch.save({"model": {}, "model_config": {}, "x": _Payload()}, path,
                   _use_new_zipfile_serialization=False)
    elif kind == "raw_pickle":
        path = folder / "evil.pt"
        path.write_bytes(pickle.dumps({"model": _Payload(), "model_config": {}}, protocol=2))
    elif kind == "inside_weights":  # a valid-looking checkpoint with one poisoned entry
        torch.manual_seed(0)
        model = PConvUNet(layers=4, width=8)
        state = dict(model.state_dict())
        state["encoder.0.bias"] = _Payload()
        path = folder / "poisoned.pt"
        torch.save({"model": state, "model_config": model.config.to_dict()}, path)
    elif kind == "named_safetensors":
        path = folder / "evil.safetensors"
        torch.save({"model": {}, "model_config": {}, "x": _Payload()}, path)
    else:
        raise KeyError(kind)
    return path


EVIL = ["zip_ckpt", "legacy_pth", "raw_pickle", "inside_weights", "named_safetensors"]


@pytest.mark.parametrize("kind", EVIL)
def test_pickled_code_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    _Payload.target = str(marker)
    path = _evil_checkpoint(kind, tmp_path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as error:
        model_from_checkpoint(path)
    assert path.name in _one_line(str(error.value))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    # the trainer's --resume / --init read through the same function
    with pytest.raises(CheckpointError):
        Inpainter.from_checkpoint(path, device="cpu")
    assert not marker.exists()


def test_cli_refuses_pickled_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _Payload.target = str(marker)
    path = _evil_checkpoint("zip_ckpt", tmp_path)
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                     "--checkpoint", path, "--device", "cpu")
    assert code == 2
    line = _one_line(err)
    assert "evil.ckpt" in line and "pickled code" in line
    assert not marker.exists()


# == CUDA out of memory (simulated) ==========================================================
def test_cuda_out_of_memory_is_retried_on_the_cpu_with_a_notice(fake_cuda_oom, inpainter):
    calls = fake_cuda_oom(inpainter)
    image = _photo(200, 260)
    hole = np.zeros((200, 260), bool)
    hole[10:20, 10:20] = True
    hole[170:190, 220:250] = True  # far away: a second crop, run on the CPU directly
    result = inpainter.inpaint(image, hole)
    assert calls == ["cuda", "cpu", "cpu"]
    assert fake_cuda_oom.sparse == [False, True, True]  # the retry too: the CPU's decoder
    assert len(result.notices) == 1
    assert "out of memory" in result.notices[0] and "CPU" in result.notices[0]
    assert result.device.startswith("CPU") and inpainter.device.type == "cpu"
    assert np.array_equal(result.composite[~hole], image[~hole])


def test_cli_reports_cpu_memory_exhaustion_in_one_line(monkeypatch, tmp_path, capsys,
                                                       tiny_model_file):
    """torch's CPU allocator raises RuntimeError, not MemoryError: still one line, exit 1."""
    def exhausted(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 96000000000 bytes.")

    monkeypatch.setattr(Inpainter, "inpaint", exhausted)
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                     "--checkpoint", tiny_model_file)
    assert code == 1 and err.strip() == "error: out of memory (the photo is too large for " \
        "this computer)"
    assert not (tmp_path / "o.png").exists()


def test_cli_reports_the_cpu_fallback(monkeypatch, tmp_path, capsys, tiny_model_file,
                                      fake_cuda_oom):
    real = Inpainter.from_checkpoint.__func__
    calls: list[list[str]] = []

    def from_checkpoint(cls, path=None, device="auto", precision="auto", passes=None):
        inpainter = real(cls, path, device="cpu", precision=precision, passes=passes)
        calls.append(fake_cuda_oom(inpainter))
        return inpainter

    monkeypatch.setattr(Inpainter, "from_checkpoint", classmethod(from_checkpoint))
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                     "--checkpoint", tiny_model_file)
    assert code == 0, err
    assert "note:" in err and "CPU" in err and calls == [["cuda", "cpu"]]
    assert (tmp_path / "o.png").is_file()


# == disk full while saving; kills and interrupts mid-write ===================================
def test_full_disk_keeps_the_previous_image_mask_and_checkpoint(tmp_path, full_disk):
    torch.manual_seed(0)
    model = PConvUNet(layers=4, width=8)
    targets = {
        "photo.jpg": lambda p: save_image(p, _photo(30, 40)),
        "photo.png": lambda p: save_image(p, _photo(30, 40)),
        "mask.png": lambda p: save_mask(p, _centre_hole(30, 40)),
        "latest.pt": lambda p: save_checkpoint(p, {"model": model.state_dict(),
                                                   "model_config": model.config.to_dict()}),
        "model.safetensors": lambda p: save_model_file(p, model),
    }
    for name, write in targets.items():
        path = tmp_path / name
        path.write_bytes(b"the previous, good version of " + name.encode())
        before = path.read_bytes()
        with pytest.raises(OSError) as error:
            write(path)
        assert error.value.errno == errno.ENOSPC, name
        assert name in str(error.value), name  # the message names the file, not the temp
        assert path.read_bytes() == before, name
        assert not _temp_files(tmp_path), name
    assert full_disk.opened == len(targets)


def test_cli_full_disk_is_one_line_exit_1_and_keeps_the_old_output(tmp_path, capsys,
                                                                   tiny_model_file, full_disk):
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    (tmp_path / "o.png").write_bytes(b"yesterday's result")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                     "--overwrite", "--checkpoint", tiny_model_file, "--device", "cpu")
    assert code == 1
    line = _one_line(err)
    assert "o.png" in line and "No space left" in line
    assert (tmp_path / "o.png").read_bytes() == b"yesterday's result"
    assert not _temp_files(tmp_path)


def test_interrupt_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "latest.pt"
    target.write_bytes(b"good")

    def interrupted(fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_bytes() == b"good" and not _temp_files(tmp_path)


def test_kill_9_mid_write_keeps_the_previous_file(tmp_path):
    """A process killed outright cannot clean up: the old file is intact, and the leftover
    temp file is hidden (a dot-file ending in .tmp) so no loader picks it up."""
    target = tmp_path / "latest.pt"
    target.write_bytes(b"good")
    script = (
        "import os, signal, sys\n"
        "from core.atomic import atomic_write\n"
        "def write(fh):\n"
        "    fh.write(b'half'); fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"good"
    assert all(name.startswith(".latest.pt.") for name in _temp_files(tmp_path))
    atomic_write(target, lambda fh: fh.write(b"next"))  # and the next save works
    assert target.read_bytes() == b"next"


def test_a_read_only_folder_names_the_target_not_the_temp_file(tmp_path, monkeypatch):
    class _ReadOnlyFolder:
        @staticmethod
        def mkstemp(prefix: str = "", suffix: str = "", dir: Path | None = None):
            raise PermissionError(errno.EACCES, "Permission denied",
                                  f"{dir}/{prefix}x1y2z3{suffix}")

    monkeypatch.setattr(core.atomic, "tempfile", _ReadOnlyFolder)
    with pytest.raises(PermissionError) as error:
        save_image(tmp_path / "out.png", _photo(10, 10))
    assert error.value.filename == str(tmp_path / "out.png")
    assert str(error.value).endswith("Permission denied: '" + str(tmp_path / "out.png") + "'")


def test_overwriting_keeps_a_private_file_private(tmp_path):
    path = tmp_path / "private.png"
    save_image(path, _photo(10, 10))
    path.chmod(0o600)
    save_image(path, _photo(10, 10, seed=1))
    assert path.stat().st_mode & 0o777 == 0o600


# == training: disk full and SIGINT while saving; broken photos ==============================
TRAIN = ["--image-size", "32", "--layers", "4", "--width", "8", "--batch-size", "2",
         "--workers", "0", "--device", "cpu", "--perceptual", "none", "--val-every", "0",
         "--log-every", "1"]


@pytest.fixture
def train_data(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_photo(40, 48, seed=i)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture
def trainer_main():
    """core.train.main in this process; the trainer's signal handlers are undone after."""
    import core.train

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def run(args: list[str]) -> int:
        try:
            core.train.main([str(a) for a in args])
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    yield run
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class _FailSecondSave:
    """core.atomic's ``os``: the first file written is real, every later one is /dev/full."""

    def __init__(self, watch: Path) -> None:
        self.opened = 0
        self.watch = watch
        self.before_failure: bytes | None = None

    def fdopen(self, fd: int, mode: str = "r", *args, **kwargs):
        self.opened += 1
        if self.opened == 1:
            return os.fdopen(fd, mode, *args, **kwargs)
        self.before_failure = self.watch.read_bytes()
        os.close(fd)
        return open("/dev/full", mode)  # noqa: SIM115

    def __getattr__(self, name: str):
        return getattr(os, name)


def _run_until_disk_full(tmp_path, train_data, trainer_main, monkeypatch) -> _FailSecondSave:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out = tmp_path / "run"
    fake = _FailSecondSave(out / "latest.pt")
    monkeypatch.setattr(core.atomic, "os", fake)
    try:
        code = trainer_main([*TRAIN, "--data", train_data, "--out", out, "--max-steps", "4",
                             "--save-every", "1"])
    except OSError as exc:  # pragma: no cover - must not escape core.train.main
        raise AssertionError(f"OSError escaped core.train: {exc}") from None
    assert code == 1
    monkeypatch.setattr(core.atomic, "os", os)
    return fake


def test_training_disk_full_keeps_the_last_good_checkpoint_and_resume_continues(
        tmp_path, train_data, trainer_main, monkeypatch, capsys):
    fake = _run_until_disk_full(tmp_path, train_data, trainer_main, monkeypatch)
    out = tmp_path / "run"
    assert fake.opened == 2 and fake.before_failure is not None
    assert (out / "latest.pt").read_bytes() == fake.before_failure  # byte-identical
    assert load_checkpoint(out / "latest.pt")["step"] == 1
    assert not _temp_files(out)
    code = trainer_main([*TRAIN, "--data", train_data, "--out", out, "--max-steps", "3",
                         "--resume", out / "latest.pt"])
    assert code == 0, capsys.readouterr().err
    payload = load_checkpoint(out / "latest.pt")
    assert payload["step"] == 3
    assert {float(s["step"]) for s in payload["optimizer"]["state"].values()} == {3.0}


def test_training_disk_full_is_a_one_line_error(tmp_path, train_data, trainer_main,
                                                monkeypatch, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out = tmp_path / "run"
    monkeypatch.setattr(core.atomic, "os", _FailSecondSave(out / "latest.pt"))
    code = trainer_main([*TRAIN, "--data", train_data, "--out", out, "--max-steps", "4",
                         "--save-every", "1"])
    assert code == 1
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "latest.pt" in line[0] and "No space left" in line[0]


def test_sigint_while_a_checkpoint_is_written_finishes_it_then_stops(
        tmp_path, train_data, trainer_main, monkeypatch, capsys):
    out = tmp_path / "run"
    sent: list[int] = []

    class _Interrupting:
        """A checkpoint file whose first write is interrupted by SIGINT half-way."""

        def __init__(self, fh) -> None:
            self._fh = fh

        def write(self, data) -> int:
            view = memoryview(data).cast("B")
            if sent:
                return self._fh.write(view)
            written = self._fh.write(view[:16])
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler takes it
            return written + self._fh.write(view[16:])

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._fh.close()

        def __getattr__(self, name: str):
            return getattr(self._fh, name)

    class _SignalMidWrite:
        def fdopen(self, fd: int, mode: str = "r", *args, **kwargs):
            fh = os.fdopen(fd, mode, *args, **kwargs)
            return fh if sent else _Interrupting(fh)

        def __getattr__(self, name: str):
            return getattr(os, name)

    monkeypatch.setattr(core.atomic, "os", _SignalMidWrite())
    code = trainer_main([*TRAIN, "--data", train_data, "--out", out, "--max-steps", "1000",
                         "--save-every", "2"])
    assert sent and code == 128 + signal.SIGINT
    assert "interrupted by signal 2" in capsys.readouterr().out
    payload = load_checkpoint(out / "latest.pt")
    assert payload["step"] == 2  # the save in progress completed; nothing trained after it
    model_from_checkpoint(out / "latest.pt")
    assert not _temp_files(out)


@pytest.mark.parametrize("kind", ["truncated", "pickled_code"])
@pytest.mark.parametrize("flag", ["--resume", "--init"])
def test_training_from_a_bad_checkpoint_is_one_line(tmp_path, train_data, trainer_main, capsys,
                                                    kind, flag):
    marker = tmp_path / "pwned"
    _Payload.target = str(marker)
    path = (_bad_checkpoint("truncated_pt", tmp_path) if kind == "truncated"
            else _evil_checkpoint("zip_ckpt", tmp_path))
    code = trainer_main([*TRAIN, "--data", train_data, "--out", tmp_path / "run",
                         "--max-steps", "1", flag, path])
    assert code == 2
    assert path.name in _one_line(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "run" / "latest.pt").exists()


def test_training_resume_from_a_mismatched_checkpoint_is_one_line(tmp_path, train_data,
                                                                  trainer_main, capsys):
    path = _bad_checkpoint("other_width", tmp_path)
    resumable = tmp_path / "resume.pt"
    save_checkpoint(resumable, {**load_checkpoint(path), "step": 1})
    code = trainer_main([*TRAIN, "--data", train_data, "--out", tmp_path / "run",
                         "--max-steps", "2", "--resume", resumable])
    assert code == 2 and "resume.pt" in _one_line(capsys.readouterr().err)


def test_more_kinds_of_broken_training_photos_are_skipped_with_a_warning(tmp_path, train_data):
    """Beyond tests/test_data.py's garbage/empty files: truncated, bomb, text and HTML."""
    from core.data import BrokenImageWarning, InpaintingDataset, ValidationSet

    _bad_file("truncated_png", train_data)
    _bad_file("truncated_jpeg", train_data)
    _bad_file("html", train_data)
    (train_data / "bomb.png").write_bytes(_bomb_png(20_000, 20_000))
    (train_data / "sub.jpg").mkdir()  # a folder with an image name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = InpaintingDataset(train_data, image_size=32, preload=True)
        samples = [dataset[i] for i in range(len(dataset))]
        val = ValidationSet(train_data, image_size=32, per_image=1)
    assert all(s["image"].shape == (3, 32, 32) for s in samples)
    assert len(val.images) == 3
    broken = [str(w.message) for w in caught if issubclass(w.category, BrokenImageWarning)]
    for name in ("cut.png", "cut.jpg", "page.jpg", "bomb.png"):
        assert sum(name in m for m in broken) == 2, (name, broken)  # dataset + validation


# == found by exploratory testing: orientation, folders, formats, read errors ================
def _cli_inputs(folder: Path, h: int = 30, w: int = 40) -> tuple[Path, Path]:
    Image.fromarray(_photo(h, w)).save(folder / "p.png")
    Image.fromarray(_centre_hole(h, w).astype(np.uint8) * 255).save(folder / "m.png")
    return folder / "p.png", folder / "m.png"


def test_mask_follows_its_exif_orientation_like_the_photo(tmp_path):
    """Photo and mask stored upside down with Orientation=3 look identical in a viewer; the
    mask must land where the user sees the hole, not mirrored."""
    stored = np.zeros((30, 40), bool)
    stored[2:8, 3:12] = True  # top-left as stored: bottom-right as displayed
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(stored.astype(np.uint8) * 255).save(tmp_path / "m.png", exif=exif.tobytes())
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png", exif=exif.tobytes())
    hole = load_mask(tmp_path / "m.png")
    assert np.array_equal(hole, stored[::-1, ::-1])
    assert load_image(tmp_path / "p.png").pixels.shape[:2] == hole.shape


def test_cli_folder_with_one_photo_creates_the_output_folder(tmp_path, capsys, tiny_model_file):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    _cli_inputs(tmp_path / "img")
    with Image.open(tmp_path / "img" / "m.png") as mask:
        mask.save(tmp_path / "msk" / "p.gif")  # a GIF mask is found in folder mode too
    (tmp_path / "img" / "m.png").unlink()
    code, err = _cli(capsys, tmp_path / "img", tmp_path / "msk", "-o", tmp_path / "out" / "a",
                     "--raw-out", tmp_path / "raw", "--checkpoint", tiny_model_file)
    assert code == 0, err
    assert (tmp_path / "out" / "a" / "p.png").is_file() and (tmp_path / "raw" / "p.png").is_file()


def test_cli_folder_refuses_two_photos_with_one_name(tmp_path, capsys, tiny_model_file):
    for folder in ("img", "msk"):
        (tmp_path / folder).mkdir()
    Image.fromarray(_photo(30, 40)).save(tmp_path / "img" / "a.png")
    Image.fromarray(_photo(30, 40)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "msk" / "a.png")
    code, err = _cli(capsys, tmp_path / "img", tmp_path / "msk", "-o", tmp_path / "out",
                     "--checkpoint", tiny_model_file)
    assert code == 2 and "a.jpg and a.png have the same name" in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_webp_output_is_lossless(tmp_path):
    pixels = _photo(40, 50)
    save_image(tmp_path / "o.webp", pixels)
    assert np.array_equal(load_image(tmp_path / "o.webp").pixels, pixels)


def test_jpeg_output_drops_an_exif_block_too_long_for_it(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: more than one JPEG APP1 segment holds
    notes = save_image(tmp_path / "o.jpg", _photo(20, 30), exif=exif.tobytes())
    with Image.open(tmp_path / "o.jpg") as saved:
        assert saved.size == (30, 20) and "exif" not in saved.info
    assert len(notes) == 1 and "too long for a JPEG" in notes[0]  # said, not silent


def test_save_image_says_which_metadata_a_format_cannot_hold(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    kept = save_image(tmp_path / "o.png", _photo(8, 8), exif=exif.tobytes(), icc_profile=icc)
    assert kept == []
    lost = save_image(tmp_path / "o.bmp", _photo(8, 8), exif=exif.tobytes(), icc_profile=icc)
    assert lost == ["BMP cannot hold the photo's colour profile or EXIF data; left out"]
    assert save_image(tmp_path / "p.bmp", _photo(8, 8)) == []  # nothing to lose, no note
    # WebP has no resolution field: a DPI only EXIF could carry is said to be left out ...
    dpi_lost = save_image(tmp_path / "o.webp", _photo(8, 8), dpi=(300, 300))
    assert dpi_lost == ["WEBP cannot hold the photo's resolution (300 dpi); left out"]
    # ... but not when the photo's EXIF (kept in the WebP) states it.
    exif[282] = 300
    exif[283] = 300
    assert save_image(tmp_path / "q.webp", _photo(8, 8), exif=exif.tobytes(), dpi=(300, 300)) == []
    with Image.open(tmp_path / "q.webp") as saved:
        assert float(saved.getexif()[282]) == 300


@pytest.mark.parametrize("height", [20, 30])  # 30 x 30: a square turns without changing size
def test_dpi_follows_a_quarter_turn(tmp_path, height):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: stored x resolution becomes the shown y
    Image.fromarray(_photo(height, 30)).save(tmp_path / "p.jpg", exif=exif.tobytes(),
                                             dpi=(100, 300))
    loaded = load_image(tmp_path / "p.jpg")
    assert loaded.pixels.shape[:2] == (30, height)
    assert tuple(round(v) for v in loaded.dpi) == (300, 100)


def test_atomic_write_takes_a_name_that_is_not_utf8(tmp_path):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/photo\xff.png"))
    save_image(path, _photo(8, 8))
    assert os.listdir(bytes(tmp_path)) == [b"photo\xff.png"]


def test_atomic_write_takes_a_name_near_the_file_system_limit(tmp_path):
    path = tmp_path / ("n" * 250 + ".png")  # 254 bytes: a temp name beside it must be shorter
    save_image(path, _photo(8, 8))
    assert load_image(path).pixels.shape == (8, 8, 3)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_cli_checks_the_output_folder_before_any_work(tmp_path, capsys, monkeypatch,
                                                       tiny_model_file):
    def never(*args, **kwargs):
        raise AssertionError("the network ran although the output cannot be written")

    monkeypatch.setattr(Inpainter, "inpaint", never)
    photo, mask = _cli_inputs(tmp_path)
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "nope" / "o.png",
                     "--checkpoint", tiny_model_file)
    assert code == 2 and "folder" in err and "does not exist" in _one_line(err)
    (tmp_path / "dir.png").mkdir()
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "dir.png", "--overwrite",
                     "--checkpoint", tiny_model_file)
    assert code == 2 and "is a folder" in _one_line(err)


def test_cli_unreadable_input_is_a_read_error(tmp_path, capsys, monkeypatch, tiny_model_file):
    import core.inpaint

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(core.inpaint, "load_image", denied)
    photo, mask = _cli_inputs(tmp_path)
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "o.png", "--checkpoint",
                     tiny_model_file)
    assert code == 2 and _one_line(err) == f"error: {photo}: cannot read (Permission denied)"


def test_checkpoint_format_is_recognised_by_content(tmp_path, tiny_model_file):
    upper = tmp_path / "MODEL.SAFETENSORS"
    upper.write_bytes(tiny_model_file.read_bytes())
    bare = tmp_path / "model"
    bare.write_bytes(tiny_model_file.read_bytes())
    for path in (upper, bare):
        assert Inpainter.from_checkpoint(path, device="cpu").model.config.layers == 4
    # a safetensors header whose length starts with byte 0x80, like a legacy pickle
    from safetensors.torch import save as save_safetensors

    model = PConvUNet(layers=4, width=8)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    for pad in range(300):
        meta = {"model_config": json.dumps(model.config.to_dict()), "pad": "x" * pad}
        data = save_safetensors(tensors, metadata=meta)
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    renamed = tmp_path / "renamed.pt"
    renamed.write_bytes(data)
    assert load_checkpoint(renamed)["model_config"]["layers"] == 4
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="not a checkpoint") as error:
        load_checkpoint(noise)
    assert "pickled" not in str(error.value)


def test_safetensors_with_non_mapping_extra_metadata_is_one_line(tmp_path):
    from safetensors.torch import save as save_safetensors

    model = PConvUNet(layers=4, width=8)
    data = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()},
                            metadata={"model_config": json.dumps(model.config.to_dict()),
                                      "extra": "[1, 2]"})
    path = tmp_path / "list.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a mapping"):
        load_checkpoint(path)


def test_cli_keeps_dpi_and_says_when_transparency_is_flattened(tmp_path, capsys,
                                                               tiny_model_file):
    rgba = np.dstack([_photo(30, 40), np.full((30, 40), 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "p.png", dpi=(300, 300))
    Image.fromarray(_centre_hole(30, 40).astype(np.uint8) * 255).save(tmp_path / "m.png")
    code, err = _cli(capsys, tmp_path / "p.png", tmp_path / "m.png", "-o", tmp_path / "o.jpg",
                     "--checkpoint", tiny_model_file)
    assert code == 0, err
    assert "p.png: its transparent areas were flattened onto white" in err
    with Image.open(tmp_path / "o.jpg") as saved:
        assert tuple(round(v) for v in saved.info["dpi"]) == (300, 300)
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([_photo(30, 40), np.full((30, 40), 255, np.uint8)])).save(opaque)
    assert load_image(opaque).notes == []


def test_cli_says_which_metadata_the_output_format_left_out(tmp_path, capsys, tiny_model_file):
    photo, mask = _cli_inputs(tmp_path)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_photo(30, 40)).save(photo, icc_profile=icc)
    code, err = _cli(capsys, photo, mask, "-o", tmp_path / "o.bmp", "--raw-out", tmp_path / "r.png",
                     "--checkpoint", tiny_model_file)
    assert code == 0, err
    assert f"note: {tmp_path / 'o.bmp'}: BMP cannot hold the photo's colour profile" in err
    assert "r.png:" not in err  # the PNG kept it


def test_high_bit_depth_is_noted(tmp_path):
    values = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(values).save(tmp_path / "deep.png")
    (tmp_path / "rgb48.png").write_bytes(_png16(np.dstack([values] * 3)))
    for name in ("deep.png", "rgb48.png"):
        assert load_image(tmp_path / name).notes == [
            "its high bit depth (16-bit or more) is saved as 8-bit"
        ], name
    Image.fromarray(_photo(20, 30)).save(tmp_path / "plain.png")
    assert load_image(tmp_path / "plain.png").notes == []


def test_damaged_exif_keeps_mask_and_photo_usable(tmp_path):
    hole = _centre_hole(30, 40)
    damaged = b"Exif\x00\x00\xccM\x00*" + b"\x00" * 20
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "m.png", exif=damaged)
    Image.fromarray(_photo(30, 40)).save(tmp_path / "p.png", exif=damaged)
    assert np.array_equal(load_mask(tmp_path / "m.png"), hole)
    assert load_image(tmp_path / "p.png").pixels.shape == (30, 40, 3)


def test_min_crop_is_a_multiple_of_the_model(tmp_path):
    seven = Inpainter(PConvUNet(layers=7, width=4), device="cpu", work_size=512)
    eight = Inpainter(PConvUNet(layers=8, width=4), device="cpu", work_size=512)
    assert seven.min_crop == 256 and eight.min_crop == 256
    wide = Inpainter(PConvUNet(layers=7, width=4), device="cpu", work_size=640)
    assert wide.min_crop == 384  # half of 640 is 320, rounded up to a multiple of 128
