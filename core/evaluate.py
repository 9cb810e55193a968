"""Evaluate a checkpoint against classical inpainting, per hole-size bucket, like the paper.

``python -m core.evaluate --images DIR [--masks DIR | --per-bucket N --border-margin both]``

Every (image, mask) pair is filled by the network (``Inpainter.inpaint(...).composite``) and by
OpenCV's Telea and Navier-Stokes methods (``cv2.inpaint``, radius 5 px) on exactly the same
pixels, so the baselines give the numbers a scale. l1, PSNR and SSIM are computed on the whole
composite image (known pixels copied from the input) against the ground truth, as the paper
does; they are therefore lower-error than hole-only numbers and depend on the hole ratio,
which is why they are reported per bucket. l1 is the mean absolute error on the [0, 1] scale
(the table prints it x100, as the paper's %). PSNR of a pair is capped at 100 dB (identical
images would be infinite) so that means stay finite.

Images are centre-cropped to a square and resized to ``--size``; generated masks are drawn at
that size with seeds derived from (--seed, image, bucket, margin, n), so a run is repeatable.
Outputs under --out: metrics.json, psnr_by_bucket.png, examples/*.jpg; the markdown table
goes to stdout. cv2, scikit-image and matplotlib are imported only when used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core import metrics
from core.atomic import check_writable_folder
from core.checkpoint import CheckpointError, atomic_write
from core.data import DatasetError, border_margin_for, centre_crop, find_images, resize_hole
from core.imageio import ImageLoadError, atomic_save_pil, load_image
from core.inference import PRECISIONS, Inpainter, as_hole_mask, as_rgb8
from core.masks import BUCKETS, MaskGenerator, bucket_name, bucket_of, load_mask

METHODS: tuple[str, ...] = ("pconv", "telea", "navier_stokes")
METHOD_LABELS = {"pconv": "PConv", "telea": "Telea", "navier_stokes": "NS"}
CV_RADIUS = 5  # cv2.inpaint neighbourhood radius in pixels (OpenCV's examples use 3 to 5)
PSNR_CAP = 100.0  # dB; a pair's PSNR is capped here so that bucket means stay finite
OTHER_BUCKET = "other"  # hole ratios outside the paper's (0.01, 0.6]
ALL = "all"
METRIC_NOTE = (
    "l1 (mean absolute error on the [0,1] scale; x100 = the paper's %), PSNR (dB, data "
    f"range 255, capped at {PSNR_CAP:g}) and SSIM (skimage, 7x7, data range 255, channel "
    "mean) computed on the whole composite image (known pixels copied) vs the ground truth"
)


class UsageError(Exception):
    """A user mistake on the command line; the message is printed as one line, exit 2."""


# -- classical baselines -------------------------------------------------------------------
def _cv_inpaint(image: np.ndarray, hole_mask: np.ndarray, flag: int, radius: float) -> np.ndarray:
    import cv2

    rgb = as_rgb8(image)
    hole = as_hole_mask(hole_mask, rgb.shape[:2])
    if not hole.any():
        return rgb.copy()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, float(radius), flag)[..., ::-1]
    result = rgb.copy()
    result[hole] = out[hole]  # a composite, exactly like the network's
    return result


def telea(image: np.ndarray, hole_mask: np.ndarray, radius: float = CV_RADIUS) -> np.ndarray:
    """OpenCV fast-marching inpainting (Telea 2004); RGB uint8 in, composite RGB uint8 out."""
    import cv2

    return _cv_inpaint(image, hole_mask, cv2.INPAINT_TELEA, radius)


def navier_stokes(
    image: np.ndarray, hole_mask: np.ndarray, radius: float = CV_RADIUS
) -> np.ndarray:
    """OpenCV Navier-Stokes inpainting (Bertalmio 2001); RGB uint8 in, composite out."""
    import cv2

    return _cv_inpaint(image, hole_mask, cv2.INPAINT_NS, radius)


def run_baselines(
    image: np.ndarray, hole_mask: np.ndarray, radius: float = CV_RADIUS
) -> dict[str, np.ndarray]:
    """Both classical methods on one pair: {"telea": ..., "navier_stokes": ...}."""
    return {
        "telea": telea(image, hole_mask, radius),
        "navier_stokes": navier_stokes(image, hole_mask, radius),
    }


# -- scoring -------------------------------------------------------------------------------
def score(result: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """l1, PSNR (capped) and SSIM of one full-image composite against the ground truth."""
    return {
        "l1": metrics.l1(result, truth),
        "psnr": min(metrics.psnr(result, truth), PSNR_CAP),
        "ssim": metrics.ssim(result, truth),
    }


def _bucket_key(ratio: float) -> str:
    bucket = bucket_of(ratio)
    return bucket_name(bucket) if bucket is not None else OTHER_BUCKET


def bucket_order() -> list[str]:
    return [bucket_name(b) for b in BUCKETS] + [OTHER_BUCKET, ALL]


def summarise(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per-bucket (and 'all') counts, mean hole ratio and mean metrics of each method."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        grouped.setdefault(rec["bucket"], []).append(rec)
        grouped.setdefault(ALL, []).append(rec)
    summary: dict[str, Any] = {}
    for key in bucket_order():
        recs = grouped.get(key)
        if not recs:
            continue
        entry: dict[str, Any] = {
            "count": len(recs),
            "hole_ratio": float(np.mean([r["hole_ratio"] for r in recs])),
        }
        for method in methods:
            entry[method] = {
                name: float(np.mean([r[method][name] for r in recs]))
                for name in ("l1", "psnr", "ssim")
            }
        summary[key] = entry
    return summary


def evaluate(
    inpainter: Inpainter | None,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    groups: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    radius: float = CV_RADIUS,
    examples_dir: str | Path | None = None,
    example_pairs: Collection[int] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score every method on the pairs (images[i], masks[i]); the trainer reuses this.

    ``images`` are (H, W, 3) uint8 ground truths, ``masks`` hole masks (True = fill) of the
    same size. ``groups`` optionally labels each pair (e.g. border / no border) for extra
    per-group summaries. Pairs with an empty or full hole are skipped (listed in 'skipped').
    Returns {"methods", "count", "buckets": {bucket: {"count", "hole_ratio", method:
    {"l1", "psnr", "ssim"}}}, "groups", "pairs", "skipped", "seconds"}. Example grids for
    the indices in ``example_pairs`` are saved into ``examples_dir``. Note that building an
    Inpainter puts its model in eval mode.
    """
    methods = list(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if "pconv" in methods and inpainter is None:
        raise ValueError("the 'pconv' method needs an inpainter")
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks; they are paired")
    if groups is not None and len(groups) != len(images):
        raise ValueError(f"{len(groups)} group labels for {len(images)} pairs")
    out_dir = Path(examples_dir) if examples_dir is not None else None
    if out_dir is not None and example_pairs:
        out_dir.mkdir(parents=True, exist_ok=True)
    runners: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "pconv": lambda img, hole: inpainter.inpaint(img, hole).composite,  # type: ignore[union-attr]
        "telea": lambda img, hole: telea(img, hole, radius),
        "navier_stokes": lambda img, hole: navier_stokes(img, hole, radius),
    }
    seconds = dict.fromkeys(methods, 0.0)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    total = len(images)
    for i, (image, mask) in enumerate(zip(images, masks)):
        if progress is not None:
            progress(i, total)
        truth = as_rgb8(image)
        hole = as_hole_mask(mask, truth.shape[:2])
        ratio = float(hole.mean())
        if not hole.any() or hole.all():
            skipped.append({"index": i, "reason": "empty hole" if ratio == 0 else "all hole"})
            continue
        rec: dict[str, Any] = {"index": i, "hole_ratio": ratio, "bucket": _bucket_key(ratio)}
        if groups is not None:
            rec["group"] = groups[i]
        outputs: dict[str, np.ndarray] = {}
        for method in methods:
            start = time.perf_counter()
            outputs[method] = runners[method](truth, hole)
            seconds[method] += time.perf_counter() - start
            rec[method] = score(outputs[method], truth)
        records.append(rec)
        if out_dir is not None and i in example_pairs:
            name = f"{i:04d}_{_slug(rec['bucket'])}"
            if groups is not None:
                name += f"_{_slug(groups[i])}"
            save_grid(out_dir / f"{name}.jpg", truth, hole, outputs)
    if progress is not None:
        progress(total, total)
    result: dict[str, Any] = {
        "methods": methods,
        "count": len(records),
        "metrics": METRIC_NOTE,
        "radius": radius,
        "buckets": summarise(records, methods),
        "groups": {},
        "pairs": records,
        "skipped": skipped,
        "seconds": seconds,
    }
    if groups is not None:
        for label in dict.fromkeys(groups):
            recs = [r for r in records if r["group"] == label]
            if recs:
                result["groups"][label] = summarise(recs, methods)
    return result


# -- reporting -----------------------------------------------------------------------------
def markdown_table(summary: dict[str, Any], methods: Sequence[str]) -> str:
    """Rows = buckets (then 'all'), columns = l1 %, PSNR, SSIM of each method."""
    head = ["bucket", "n", "hole %"]
    for m in methods:
        label = METHOD_LABELS.get(m, m)
        head += [f"{label} l1 %", f"{label} PSNR", f"{label} SSIM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in bucket_order():
        if key not in summary:
            continue
        entry = summary[key]
        row = [key, str(entry["count"]), f"{100 * entry['hole_ratio']:.1f}"]
        for m in methods:
            s = entry[m]
            row += [f"{100 * s['l1']:.2f}", f"{s['psnr']:.2f}", f"{s['ssim']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_psnr_by_bucket(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Grouped bars of mean PSNR per bucket for each method (one panel per group, if any)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("all masks", result["buckets"])]
    panels += [(label, summ) for label, summ in result["groups"].items()]
    if len(panels) == 2:  # a single group repeats the overall panel
        panels = panels[:1]
    methods = result["methods"]
    fig = Figure(figsize=(9, 3.2 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(methods))
    for ax, (label, summary) in zip(axes, panels):
        keys = [k for k in bucket_order() if k in summary]
        x = np.arange(len(keys))
        for j, m in enumerate(methods):
            values = [summary[k][m]["psnr"] for k in keys]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width,
                   label=METHOD_LABELS.get(m, m))
        ax.set_xticks(x, [f"{k}\nn={summary[k]['count']}" for k in keys], fontsize=8)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{title} {label}".strip(), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(str(path), dpi=100)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def save_grid(
    path: str | Path, truth: np.ndarray, hole: np.ndarray, outputs: dict[str, np.ndarray]
) -> None:
    """Input (hole in white) | each method | ground truth, labelled, as one image.

    Written as JPEG (quality 92) unless ``path`` ends in .png: the grids are for looking at,
    the metrics come from the arrays, and PNG grids made the repository 4 MB heavier."""
    shown = truth.copy()
    shown[hole] = 255
    panels = [("input", shown)]
    panels += [(METHOD_LABELS.get(m, m), out) for m, out in outputs.items()]
    panels.append(("ground truth", truth))
    h, w = truth.shape[:2]
    gap, strip = 4, 14
    canvas = Image.new("RGB", (len(panels) * (w + gap) - gap, h + strip), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (label, arr) in enumerate(panels):
        x = k * (w + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(arr)), (x, strip))
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
    path = Path(path)
    if path.suffix.lower() == ".png":
        atomic_save_pil(canvas, path, format="PNG")
    else:
        atomic_save_pil(canvas, path, format="JPEG", quality=92)


# -- command line --------------------------------------------------------------------------
def _parse_margins(text: str, size: int) -> list[int]:
    if text == "both":
        return [0, border_margin_for(size)]
    try:
        margin = int(text)
    except ValueError:
        raise UsageError(
            f"--border-margin must be 'both', 0 or a pixel count, not '{text}'"
        ) from None
    if margin < 0:
        raise UsageError("--border-margin must not be negative")
    # The largest bucket needs more than half the image free of the margin.
    if ((size - 2 * margin) / size) ** 2 <= BUCKETS[-1][0] + 0.02:
        raise UsageError(
            f"--border-margin {margin} leaves no room for large holes at --size {size}"
        )
    return [margin]


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


def _load_crops(paths: list[Path], size: int) -> tuple[list[np.ndarray], list[Path]]:
    crops, kept = [], []
    for path in paths:
        try:
            crops.append(centre_crop(load_image(path).pixels, size))
            kept.append(path)
        except ImageLoadError as exc:
            print(f"warning: skipping {exc}", file=sys.stderr)
    return crops, kept


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.evaluate",
        description="Compare a PConv checkpoint with OpenCV Telea and Navier-Stokes inpainting "
        "per hole-size bucket (l1, PSNR, SSIM on the whole composite image).",
    )
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint or model file (default: the shipped model)")
    p.add_argument("--images", type=Path, required=True, help="folder of ground-truth photos")
    p.add_argument("--masks", type=Path, default=None,
                   help="folder of mask images (white = hole), paired with the images in sorted "
                   "order, cycling the shorter list; replaces generated masks")
    p.add_argument("--per-bucket", type=int, default=1,
                   help="generated masks per image per bucket and margin (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated masks")
    p.add_argument("--border-margin", default="both",
                   help="'both' (with and without a size/16 margin), 0 (none) or N pixels")
    p.add_argument("--size", type=int, default=512,
                   help="square evaluation size: centre crop resized to this (default 512)")
    p.add_argument("--radius", type=float, default=CV_RADIUS,
                   help=f"cv2.inpaint radius in pixels (default {CV_RADIUS})")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="output folder (default ./evaluation)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="network precision (default fp32: numbers that do not depend on the CPU)")
    p.add_argument("--passes", type=int, choices=[1, 2, 3],
                   help="mirrored network runs averaged per hole (default: the model's)")
    p.add_argument("--examples", type=int, default=6,
                   help="example grids to save, one per bucket (default 6, 0 = none)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for flag, folder in (("--images", args.images), ("--masks", args.masks)):
        if folder is not None and not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise UsageError(f"{flag} folder '{folder}' {what}")
    if args.size < 16:
        raise UsageError(f"--size must be at least 16, got {args.size}")
    if args.per_bucket < 1:
        raise UsageError(f"--per-bucket must be at least 1, got {args.per_bucket}")
    if not args.radius > 0:
        raise UsageError(f"--radius must be positive, got {args.radius}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out '{args.out}' exists and is not a folder")
    try:  # before minutes of scoring, not after them
        check_writable_folder(args.out)
    except OSError as exc:
        raise UsageError(f"--out '{args.out}': cannot write there ({_reason(exc)})") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _make_pairs(
    args: argparse.Namespace, crops: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], list[str] | None, list[int], dict[str, Any]]:
    """(images, masks, groups, image index per pair, settings) for the chosen mask source."""
    size = args.size
    images: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    owners: list[int] = []
    if args.masks is not None:
        try:
            mask_paths = find_images(args.masks)
        except DatasetError as exc:
            raise UsageError(str(exc)) from None
        loaded = []
        for path in mask_paths:
            try:
                loaded.append(resize_hole(load_mask(path), size))
            except ValueError as exc:
                print(f"warning: skipping {exc}", file=sys.stderr)
        if not loaded:
            raise UsageError(f"--masks folder '{args.masks}' holds no readable mask images")
        for k in range(max(len(crops), len(loaded))):
            images.append(crops[k % len(crops)])
            holes.append(loaded[k % len(loaded)])
            owners.append(k % len(crops))
        return images, holes, None, owners, {"masks": str(args.masks), "mask_files": len(loaded)}
    margins = _parse_margins(args.border_margin, size)
    groups: list[str] = []
    for i, crop in enumerate(crops):
        for b, bucket in enumerate(BUCKETS):
            for margin in margins:
                for n in range(args.per_bucket):
                    gen = MaskGenerator(seed=_seed_for(args.seed, i, b, margin, n))
                    holes.append(gen.generate(size, size, bucket=bucket, border_margin=margin))
                    images.append(crop)
                    owners.append(i)
                    groups.append("no border" if margin == 0 else f"border {margin}px")
    settings = {"per_bucket": args.per_bucket, "seed": args.seed, "border_margins": margins}
    return images, holes, groups, owners, settings


def seeded_pairs(
    images: str | Path, size: int = 512, seed: int | str = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The (photo, hole_mask) pairs that ``--images IMAGES --size SIZE --seed SEED`` scores,
    in its order: for experiment scripts that score variants on exactly the same pairs."""
    args = build_parser().parse_args(["--images", str(images), "--size", str(size),
                                      "--seed", str(seed)])
    crops, _ = _load_crops(find_images(args.images), args.size)
    photos, holes, *_ = _make_pairs(args, crops)
    return photos, holes


def _example_indices(
    holes: list[np.ndarray], owners: list[int], wanted: int
) -> set[int]:
    """The first pair of each bucket, preferring the first image."""
    chosen: dict[str, int] = {}
    for first_image_only in (True, False):
        for k, hole in enumerate(holes):
            key = _bucket_key(float(hole.mean()))
            if key not in chosen and (owners[k] == 0 or not first_image_only):
                chosen[key] = k
    order = sorted(chosen.items(), key=lambda kv: bucket_order().index(kv[0]))
    return {k for _, k in order[: max(0, wanted)]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    _check_args(args)
    try:
        paths = find_images(args.images)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    if not paths:
        raise UsageError(f"--images folder '{args.images}' holds no images")
    crops, kept = _load_crops(paths, args.size)
    if not crops:
        raise UsageError(f"none of the {len(paths)} images in '{args.images}' could be read")
    images, holes, groups, owners, mask_settings = _make_pairs(args, crops)
    try:
        inpainter = Inpainter.from_checkpoint(
            args.checkpoint, device=args.device, precision=args.precision, passes=args.passes
        )
    except (CheckpointError, ValueError) as exc:
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    total = len(images)
    print(
        f"evaluating {total} pairs ({len(crops)} images) at {args.size} x {args.size} on "
        f"{inpainter.device_name} with {inpainter.source}",
        file=sys.stderr,
    )
    step = max(1, total // 10)

    def progress(done: int, count: int) -> None:
        if done and (done % step == 0 or done == count):
            print(f"  {done}/{count}", file=sys.stderr)

    result = evaluate(
        inpainter, images, holes, groups=groups, radius=args.radius,
        examples_dir=out / "examples",
        example_pairs=_example_indices(holes, owners, args.examples), progress=progress,
    )
    for rec in result["pairs"]:
        rec["image"] = str(kept[owners[rec["index"]]])
    result["checkpoint"] = inpainter.source
    result["settings"] = {
        "images": str(args.images), "image_count": len(crops), "size": args.size,
        "crop": "centre square of the shorter side, resized bicubic to size",
        "radius": args.radius, "device": inpainter.device_name, "precision": args.precision,
        "passes": inpainter.passes, "fill_smoothing": inpainter.fill_smoothing,
        "max_hole_radius": inpainter.max_hole_radius, "edge_band": inpainter.edge_band,
        **mask_settings,
    }
    text = json.dumps(result, indent=2, allow_nan=False)
    atomic_write(out / "metrics.json", lambda fh: fh.write(text.encode("utf-8")))
    plot_psnr_by_bucket(result, out / "psnr_by_bucket.png")
    return result


def report(result: dict[str, Any]) -> str:
    """The markdown tables printed to stdout: all pairs, then each group when there are two+."""
    methods = result["methods"]
    parts = ["### all masks", "", markdown_table(result["buckets"], methods)]
    if len(result["groups"]) > 1:
        for label, summary in result["groups"].items():
            parts += ["", f"### {label}", "", markdown_table(summary, methods)]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a disk that filled up while scoring
        print(f"error: {exc.filename or args.out}: {_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(report(result))
    if result["skipped"]:
        print(f"\n{len(result['skipped'])} pairs skipped (empty or full hole)")
    print(f"\nwrote {args.out / 'metrics.json'}, {args.out / 'psnr_by_bucket.png'}, "
          f"{args.out / 'examples'}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
