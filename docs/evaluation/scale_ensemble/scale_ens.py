"""Experiment: average the composites of several max_hole_radius settings (a scale ensemble).

    mkdir -p runs/scale_ens
    PYTHONPATH=. python docs/evaluation/scale_ensemble/scale_ens.py 0 2 0 &   # part, parts, seed
    PYTHONPATH=. python docs/evaluation/scale_ensemble/scale_ens.py 1 2 0

Only the pairs with over 20 % hole (where the radius matters); bf16, one thread per process.
summary_seed0.json: the per-bucket means of those runs (resources/MODEL_CARD.md, Inference).
"""
import json
import sys
import time

import numpy as np
import torch

from core.evaluate import _bucket_key, score
from core.inference import Inpainter
from docs.evaluation.experiment import val_pairs

torch.set_num_threads(1)
part, parts, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
inp = Inpainter.from_checkpoint(None, device="cpu", precision="bf16")
radii = (20, 24, 28)
rows = []
t0 = time.time()
for k, im, h in val_pairs(seed, part, parts, over=0.2):
    comps = {}
    for r in radii:
        inp.max_hole_radius = r
        comps[r] = inp.inpaint(im, h).composite.astype(np.float32)
    variants = {
        "r24": comps[24],
        "mean20-28": (comps[20] + comps[28]) / 2,
        "mean20-24-28": (comps[20] + comps[24] + comps[28]) / 3,
        "median3": np.median(np.stack([comps[r] for r in radii]), 0),
    }
    row = {"k": k, "bucket": _bucket_key(float(h.mean()))}
    for name, v in variants.items():
        out = np.clip(v + 0.5, 0, 255).astype(np.uint8)
        row[name] = score(out, im)
    rows.append(row)
    print(k, round(time.time() - t0), {n: round(row[n]["psnr"], 2) for n in variants}, flush=True)
json.dump(rows, open(f"runs/scale_ens/rows_s{seed}_{part}.json", "w"))
