"""Experiment: blend the fill run at the photo's scale (no max_hole_radius) into the shipped
fill (thick holes run coarser) near the holes' edges, by distance from the nearest known pixel.

    PRECISION=bf16 [NATIVE_PASSES=1] python docs/evaluation/scale_blend/blend_eval.py SEED [STEP]
Weight of the shipped (coarse) fill: clip(distance / D, 0, 1); D = 0 is the shipped fill.
Pairs where both runs are identical (no hole thicker than the cap) are scored as they are.
"""
import json
import os
import sys

import cv2
import numpy as np
import torch

from core.evaluate import _bucket_key, score, seeded_pairs
from core.inference import Inpainter

torch.set_num_threads(1)
seed = sys.argv[1] if len(sys.argv) > 1 else "0"
step = int(sys.argv[2]) if len(sys.argv) > 2 else 1
images, holes = seeded_pairs("../shared/data/photos/val", 512, seed)
precision = os.environ.get("PRECISION", "fp32")
shipped = Inpainter.from_checkpoint(None, device="cpu", precision=precision)
native = Inpainter.from_checkpoint(None, device="cpu", precision=precision)
native.max_hole_radius = None
native_passes = int(os.environ.get("NATIVE_PASSES", "0"))  # 0: the model's (as shipped)
if native_passes:
    native.passes = native_passes
DS = (0, 4, 8, 16, 32, 64)
rows = {d: {} for d in DS}
changed = 0
for k in range(0, len(images), step):
    im, h = images[k], holes[k]
    coarse = shipped.inpaint(im, h).composite
    fine = native.inpaint(im, h).composite
    changed += int(not np.array_equal(coarse, fine))
    dist = cv2.distanceTransform((h * 255).astype(np.uint8), cv2.DIST_L2, 3)
    key = _bucket_key(float(h.mean()))
    for d in DS:
        if d == 0:
            out = coarse
        else:
            w = np.clip(dist / d, 0, 1)[..., None]
            mix = np.clip(w * coarse + (1 - w) * fine + 0.5, 0, 255).astype(np.uint8)
            out = np.where(h[..., None], mix, im)
        for b in (key, "all"):
            rows[d].setdefault(b, []).append(score(out, im))
    if k % 24 == 0:
        print(k, changed, flush=True)
summary = {str(d): {b: {m: float(np.mean([r[m] for r in v])) for m in ("psnr", "ssim", "l1")}
                    for b, v in sorted(rows[d].items())} for d in DS}
for d, s in summary.items():
    print(f"D={d:>3}", " ".join(f"{v['psnr']:.2f}/{v['ssim']:.4f}" for b, v in s.items()))
print("pairs where the two runs differ:", changed)
tag = f"_p{native_passes}" if native_passes else ""
json.dump(summary, open(f"runs/blend_seed{seed}_{precision}{tag}.json", "w"), indent=1)
