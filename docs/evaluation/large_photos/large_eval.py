"""Experiment: how core.inference fills brush strokes in large photos, against the truth.

    python docs/evaluation/large_photos/large_eval.py --photos runs/val_originals \
        --json docs/evaluation/large_photos/results.json

The photos are the full-size originals of the validation photos (``scripts/fetch_val_originals.sh``
fetches the eight that are 1920 px or larger from their Debian packages): the evaluation set of
the model card holds them shrunk to 512 px, where every crop is the whole photo; here the crops
of a large photo are what is measured. Holes are ``bench/app_latency.py``'s 2 % brush strokes
(brush 1/100 of the short side: 30 px on a 12-MP photo), ``scattered`` over the photo and in one
``cluster``. For each variant: PSNR and l1 over the hole pixels of the composite (the rest is
the photo, bit-exact), and the ``inpaint()`` time on one CPU thread. OpenCV Telea (radius 5) on
the same pairs for reference.

Variants: ``thick`` is the crop rule of core.inference (context from the holes' thickness;
``thickN``: N times the thickness instead of ``Inpainter.context_per_thickness``);
``span`` the rule before it (context half the cluster's extent); suffix ``-p1`` for one network
pass instead of the model's, ``-pall`` for the model's passes on every crop (not only where the
holes are thick), ``-tN`` for ``Inpainter.tile_shrink`` N / 100 (``-t0``: a long cluster from one
crop shrunk to the working size, no tiles; without it the CPU's default, which takes full
scale when the job's work there is within ``Inpainter.full_scale_budget``).

Layouts: ``scattered``, ``cluster`` and ``long`` (long strokes across the photo), from
``bench/app_latency.py``'s ``stroke_mask``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from app_latency import stroke_mask  # noqa: E402

from core import inference  # noqa: E402
from core.inference import Inpainter  # noqa: E402


class SpanRule(Inpainter):
    """The crop rule before the thickness one: context half the cluster's extent."""

    def _tiles(self, hole, plan, shrink):  # noqa: ANN001, ANN202
        from core.inference import _expand

        h, w = hole.shape
        box = plan.box
        top, left, bottom, right = box
        margin = max(self._context, max(bottom - top, right - left) // 2)
        t, b = _expand(top, bottom, self._crop_side(bottom - top + 2 * margin), h)
        lft, rgt = _expand(left, right, self._crop_side(right - left + 2 * margin), w)
        return [(box, (t, b, lft, rgt))]


def hole_scores(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, l1 in levels) over the hole pixels."""
    diff = filled[hole].astype(np.float64) - truth[hole].astype(np.float64)
    mse = float((diff**2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12)), float(np.abs(diff).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--layouts", default="scattered,cluster")
    p.add_argument("--seeds", default="0")
    p.add_argument("--hole", type=float, default=0.02, help="hole fraction of each photo")
    p.add_argument("--variants", default="span,thick,span-p1,thick-p1")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = Inpainter.from_checkpoint(None, device="cpu", precision=args.precision)
    variants = args.variants.split(",")
    passes_min_radius = inference.PASSES_MIN_RADIUS
    rows = []
    for path in sorted(args.photos.iterdir()):
        photo = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        h, w = photo.shape[:2]
        for layout in args.layouts.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                hole = stroke_mask(w, h, args.hole, layout, seed)
                row = {"photo": path.name, "size": [w, h], "layout": layout, "seed": seed}
                bgr = np.ascontiguousarray(photo[..., ::-1])
                start = time.perf_counter()
                telea = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
                row["telea"] = {"s": time.perf_counter() - start,
                                **dict(zip(("psnr", "l1"),
                                           hole_scores(telea[..., ::-1], photo, hole)))}
                for variant in variants:
                    rule, *opts = variant.split("-")
                    base.__class__ = SpanRule if rule == "span" else Inpainter
                    # thickN: N times the thickness as context (thick: the default)
                    base.context_per_thickness = int(rule[5:] or Inpainter.context_per_thickness
                                                     ) if rule.startswith("thick") else 0
                    base.passes = 1 if "p1" in opts else 3
                    tiles = [int(o[1:]) / 100 for o in opts if o[:1] == "t" and o[1:].isdigit()]
                    base._tile_shrink = tiles[0] if tiles else None  # None: the device's
                    # pall: the mirrored passes for every crop, however thin its holes
                    inference.PASSES_MIN_RADIUS = 0 if "pall" in opts else passes_min_radius
                    calls = []
                    original = base._run
                    base._run = lambda rgb, hl, n, ps=1, o=original, c=calls: (  # noqa: E731
                        c.append((hl.shape, ps)) or o(rgb, hl, n, ps))
                    start = time.perf_counter()
                    result = base.inpaint(photo, hole)
                    took = time.perf_counter() - start
                    del base._run
                    psnr, l1 = hole_scores(result.composite, photo, hole)
                    row[variant] = {"s": took, "psnr": psnr, "l1": l1,
                                    "crops": [[*s, n] for s, n in calls]}
                rows.append(row)
                print(path.name, layout, seed, " ".join(
                    f"{k}={row[k]['psnr']:.2f}dB/{row[k]['s']:.2f}s"
                    for k in ["telea", *variants]), flush=True)
    summary = {}
    for layout in args.layouts.split(","):
        sel = [r for r in rows if r["layout"] == layout]
        summary[layout] = {
            k: {"mean_psnr": statistics.mean(r[k]["psnr"] for r in sel),
                "mean_l1": statistics.mean(r[k]["l1"] for r in sel),
                "median_s": statistics.median(r[k]["s"] for r in sel)}
            for k in ["telea", *variants]}
        for k, v in summary[layout].items():
            print(f"{layout:9s} {k:10s} PSNR {v['mean_psnr']:.3f} l1 {v['mean_l1']:.3f} "
                  f"time {v['median_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows, "hole": args.hole,
                                         "torch_threads": args.threads,
                                         "device": base.device_name}, indent=1))


if __name__ == "__main__":
    main()
