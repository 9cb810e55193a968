"""Batch inpainting from the command line.

    python -m core.inpaint IMAGE MASK -o OUT [--raw-out PATH] [--checkpoint PATH]
                           [--device auto|cpu|cuda] [--precision auto|fp32|bf16]
                           [--passes 1|2|3] [--full-resolution] [--overwrite]

IMAGE and MASK may also be folders (masks matched to images by file stem); OUT is then a
folder, and a photo or mask that cannot be used is reported and skipped (exit 2 at the end).
MASK images are white = hole. User mistakes print one line to stderr and exit 2;
an input that cannot be read (no permission) is a user mistake too; a failure to write (disk
full, no permission) or to find memory prints one line and exits 1.
Nothing is overwritten without --overwrite, and the input photo and mask never are.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from PIL import Image

from core.imageio import IMAGE_SUFFIXES, ImageLoadError, load_image, save_image


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.inpaint",
        description="Fill the white areas of MASK in IMAGE with the PConv U-Net.",
    )
    p.add_argument("image", type=Path, help="photo, or a folder of photos")
    p.add_argument("mask", type=Path, help="mask (white = hole), or a folder of masks")
    p.add_argument("-o", "--out", type=Path, required=True, help="output file or folder")
    p.add_argument("--raw-out", type=Path, help="also save the raw network output here")
    p.add_argument("--checkpoint", type=Path, help="model file (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bfloat16 on CPUs that compute it natively, else float32")
    p.add_argument("--passes", type=int, choices=[1, 2, 3],
                   help="network runs per hole, mirrored and averaged (default: the model's; "
                        "1 is fastest)")
    p.add_argument("--full-resolution", action="store_true",
                   help="fill long strokes tile by tile at the scale their thickness needs, "
                        "never shrunk to fit (a GPU always does; slower on a CPU, which by "
                        "default lets them shrink up to 2x in large jobs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")  # painted masks are sometimes GIFs


def _images_in(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Images by file stem; two with one stem (a.jpg, a.png) cannot be told apart."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if p.stem in found:
            raise UsageError(
                f"{folder}: {found[p.stem].name} and {p.name} have the same name; rename one "
                "(photos and masks are matched by name)"
            )
        found[p.stem] = p
    return found


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path, Path, Path | None]]:
    """(image, mask, out, raw_out) for each photo to process."""
    if not args.image.exists():
        raise UsageError(f"{args.image}: not found")
    if not args.mask.exists():
        raise UsageError(f"{args.mask}: not found")
    if args.mask.resolve() == args.image.resolve():
        # binarised, a photo's bright half would be filled (93 % of a test photo)
        what = "folder" if args.image.is_dir() else "file"
        raise UsageError(f"{args.mask}: IMAGE and MASK are the same {what}; the mask is a "
                         "separate image, white where to fill")
    if args.image.is_dir():
        if not args.mask.is_dir():
            raise UsageError(f"{args.mask}: must be a folder when IMAGE is a folder")
        images, masks = _images_in(args.image), _images_in(args.mask, MASK_SUFFIXES)
        if not images:
            raise UsageError(f"{args.image}: no images found")
        missing = sorted(set(images) - set(masks))
        if missing:
            raise UsageError(f"{args.mask}: no mask for {', '.join(missing[:5])}")
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"{args.out}: must be a folder when IMAGE is a folder")
        if args.raw_out is not None and args.raw_out.exists() and not args.raw_out.is_dir():
            raise UsageError(f"{args.raw_out}: must be a folder when IMAGE is a folder")
        jobs = []
        for stem, image in images.items():
            out = args.out / image.name
            raw = args.raw_out / image.name if args.raw_out is not None else None
            jobs.append((image, masks[stem], out, raw))
        return jobs
    if args.mask.is_dir():
        raise UsageError(f"{args.mask}: is a folder but IMAGE is a single file")
    return [(args.image, args.mask, args.out, args.raw_out)]


def _check_outputs(
    jobs: list[tuple[Path, Path, Path, Path | None]], overwrite: bool, folder_mode: bool
) -> None:
    """Every output problem that can be known before any work is done."""
    for image, mask, out, raw in jobs:
        if raw is not None and raw.resolve() == out.resolve():
            raise UsageError(f"{raw}: --raw-out and -o name the same file")
        for target in (out, raw):
            if target is None:
                continue
            if target.resolve() == image.resolve():
                raise UsageError(f"{target}: refusing to overwrite the input photo")
            if target.resolve() == mask.resolve():
                raise UsageError(f"{target}: refusing to overwrite the input mask")
            if target.is_dir():
                raise UsageError(f"{target}: is a folder; name the output file")
            if target.exists() and not overwrite:
                raise UsageError(f"{target}: already exists (use --overwrite to replace it)")
            folder = target.parent
            if folder.exists() and not folder.is_dir():
                raise UsageError(f"{folder}: is not a folder")
            if not folder.exists() and not folder_mode:
                raise UsageError(f"{target}: folder {folder} does not exist")
            if folder.is_dir() and not os.access(folder, os.W_OK):
                raise UsageError(f"{folder}: no permission to write there")
            if target.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{target}: unsupported output extension; use one of "
                    f"{', '.join(IMAGE_SUFFIXES)}"
                )


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        # Pillow's warnings (a large image, odd EXIF) are either followed by our own one-line
        # error or harmless; they would only add stack-trace-like lines to the output.
        warnings.filterwarnings("ignore", module=r"PIL\.")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return _run(args)
        except KeyboardInterrupt:  # also while torch is still being imported
            print("error: interrupted", file=sys.stderr)
            return 130


def _run(args: argparse.Namespace) -> int:
    from core.checkpoint import CheckpointError
    from core.inference import Inpainter
    from core.masks import load_mask, looks_like_mask_image, looks_like_photo

    writing: Path | None = None  # the file being saved, for the message if that fails
    try:
        jobs = _jobs(args)
        folder_mode = args.image.is_dir()
        _check_outputs(jobs, args.overwrite, folder_mode)
        inpainter = Inpainter.from_checkpoint(
            args.checkpoint, device=args.device, precision=args.precision, passes=args.passes
        )
        if args.full_resolution:
            inpainter.tile_shrink = 1.0
        if folder_mode:
            for writing in (args.out, args.raw_out):
                if writing is not None:
                    writing.mkdir(parents=True, exist_ok=True)
            writing = None
        failed = 0
        for image_path, mask_path, out, raw in jobs:
            try:
                photo = load_image(image_path)
                hole = load_mask(mask_path)
                if looks_like_mask_image(photo.pixels) and looks_like_photo(
                        load_image(mask_path).pixels):
                    raise UsageError(
                        f"{image_path} looks like a mask and {mask_path} like a photo: the "
                        "photo comes first (python -m core.inpaint IMAGE MASK -o OUT)"
                    )
                h, w = photo.pixels.shape[:2]
                if hole.shape != (h, w):
                    raise UsageError(
                        f"{mask_path}: mask is {hole.shape[1]} x {hole.shape[0]} but the photo "
                        f"is {w} x {h}"
                    )
                if not hole.any():
                    raise UsageError(f"{mask_path}: mask is empty (no white pixels to fill)")
                result = inpainter.inpaint(photo.pixels, hole)
            except (UsageError, ImageLoadError, ValueError) as exc:
                if not folder_mode:
                    raise
                # A folder goes on past a bad photo or mask: the others are still filled.
                text = str(exc)
                named = str(image_path) in text or str(mask_path) in text
                print(f"error: {text if named else f'{image_path}: {text}'}", file=sys.stderr)
                failed += 1
                continue
            for notice in result.notices:
                print(f"note: {notice}", file=sys.stderr)
            for note in photo.notes:
                print(f"note: {image_path}: {note}", file=sys.stderr)
            metadata = photo.save_metadata()
            for writing, pixels in ((out, result.composite), (raw, result.raw)):
                if writing is not None:
                    for note in save_image(writing, pixels, **metadata):
                        print(f"note: {writing}: {note}", file=sys.stderr)
            writing = None
            print(f"{image_path} -> {out}")
        if failed:
            print(f"error: {failed} of {len(jobs)} photos were not filled (see above)",
                  file=sys.stderr)
            return 2
    except (UsageError, ImageLoadError, CheckpointError, ValueError) as exc:
        text = str(exc)
        if writing is not None and str(writing) not in text:  # e.g. an encoder's own words
            text = f"{writing}: cannot save ({text})"
        print(f"error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied...: the target is left as it was
        reason = exc.strerror or str(exc) or type(exc).__name__
        if writing is None:  # reading an input (a folder without permission, say)
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}cannot read ({reason})", file=sys.stderr)
            return 2
        print(f"error: {writing}: cannot write ({reason})", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        # torch's CPU allocator reports exhaustion as a RuntimeError, not a MemoryError
        if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
            raise
        print("error: out of memory (the photo is too large for this computer)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(marker in text for marker in
               ("DefaultCPUAllocator", "can't allocate", "not enough memory", "out of memory"))


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
