"""Experiment: smoothing of the fill inside holes, fixed and distance-adaptive, per bucket.

    python docs/evaluation/smoothing/smooth_sweep.py STEP SEED [more]   # e.g. 1 0, 1 1
The network runs once per pair (fill_smoothing off), then each variant blurs the composite
(OpenCV, whole 512 image) inside the holes. sweep_seed0.json came from an earlier version of
this script with more variants (fixed sigma 1.2 / 1.8 / 2.5 / 3.5 and adaptive 1-3-16,
1-5-24, 1.2-4-12); sweep_seed1.json checks the chosen one on masks of another seed.
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
step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
seed = sys.argv[2] if len(sys.argv) > 2 else "0"
images, holes = seeded_pairs("../shared/data/photos/val", 512, seed)
# PRECISION=bf16 for a quicker sweep (the variants are compared on the same network outputs)
inp = Inpainter.from_checkpoint(None, device="cpu", precision=os.environ.get("PRECISION", "fp32"))
inp.fill_smoothing = None


def fixed(s):
    return lambda comp, h, dist: cv2.GaussianBlur(comp, (0, 0), s)


def adaptive(s1, s2, d):
    def f(comp, h, dist):
        a = cv2.GaussianBlur(comp, (0, 0), s1).astype(np.float32)
        b = cv2.GaussianBlur(comp, (0, 0), s2).astype(np.float32)
        w = np.clip(dist / d, 0, 1)[..., None]
        return np.clip((1 - w) * a + w * b + 0.5, 0, 255).astype(np.uint8)
    return f


variants = {"none": None, "g1.8": fixed(1.8), "a1.2-4-12": adaptive(1.2, 4.0, 12)}
if len(sys.argv) > 3 and sys.argv[3] == "more":  # re-check for a better-trained model
    variants.update({"g1.2": fixed(1.2), "a0.8-3-12": adaptive(0.8, 3.0, 12),
                     "a1-3-16": adaptive(1.0, 3.0, 16), "a1.2-5-12": adaptive(1.2, 5.0, 12)})
rows = {v: {} for v in variants}
for k in range(0, len(images), step):
    im, h = images[k], holes[k]
    comp = inp.inpaint(im, h).composite
    dist = cv2.distanceTransform((h * 255).astype(np.uint8), cv2.DIST_L2, 3)
    key = _bucket_key(float(h.mean()))
    for name, f in variants.items():
        out = comp if f is None else np.where(h[..., None], f(comp, h, dist), im)
        for b in (key, "all"):
            rows[name].setdefault(b, []).append(score(out, im))
    if k % 24 == 0:
        print(k, flush=True)
summary = {n: {b: {m: float(np.mean([r[m] for r in v])) for m in ("psnr", "ssim", "l1")}
               for b, v in sorted(rows[n].items())} for n in variants}
for n, s in summary.items():
    print(f"{n:>10}", " ".join(f"{v['psnr']:.2f}/{v['ssim']:.4f}" for b, v in s.items()))
tag = "_more" if len(variants) > 3 else ""
json.dump(summary, open(f"runs/smooth_seed{seed}{tag}.json", "w"), indent=1)
