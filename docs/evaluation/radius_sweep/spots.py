"""Experiment: far-off hole pixels in the largest holes vs max_hole_radius (fp32, val pairs).

    python docs/evaluation/radius_sweep/spots.py 20,16,12 > spots.log
"""
import sys

import numpy as np
import torch

from core.evaluate import seeded_pairs
from core.inference import Inpainter
from core.metrics import psnr

torch.set_num_threads(2)
radii = [int(r) for r in sys.argv[1].split(",")]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 10**9
images, holes = seeded_pairs("../shared/data/photos/val", 512)
pairs = [(im, h) for im, h in zip(images, holes) if h.mean() > 0.5][:limit]
print(len(pairs), "pairs with > 50 % hole")
for r in radii:
    inp = Inpainter.from_checkpoint(None, device="cpu", precision="fp32")
    inp.max_hole_radius = r
    ps, far = [], []
    for im, h in pairs:
        comp = inp.inpaint(im, h).composite
        err = np.abs(comp.astype(int) - im.astype(int)).max(axis=2)[h]
        far.append(float((err > 100).mean()))
        ps.append(psnr(comp, im))
    print(f"radius {r}: PSNR {np.mean(ps):.3f}  hole pixels off by >100 levels "
          f"{100 * np.mean(far):.3f} %  (worst pair {100 * max(far):.2f} %)", flush=True)
