"""Experiment: fill, then keep the fill's rim (within D px of the known pixels) as known and
fill the rest again (peeling the hole like an onion). Only the pairs over 20 % hole; bf16,
one thread per process. summary_seed0.json: per-bucket differences from the shipped fill
(resources/MODEL_CARD.md, Inference).

    mkdir -p runs/onion
    PYTHONPATH=. python docs/evaluation/onion/onion.py 0 2 0 &   # part, parts, seed
    PYTHONPATH=. python docs/evaluation/onion/onion.py 1 2 0
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from scipy import ndimage

from core.evaluate import _bucket_key, score
from core.inference import Inpainter
from docs.evaluation.experiment import val_pairs

torch.set_num_threads(1)
part, parts, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
inp = Inpainter.from_checkpoint(None, device="cpu", precision="bf16")
rows = []
t0 = time.time()
for k, im, h in val_pairs(seed, part, parts, over=0.2):
    first = inp.inpaint(im, h).composite
    dist = ndimage.distance_transform_edt(h)
    variants = {"base": first}

    def again(src: np.ndarray, d: float, h: np.ndarray = h, dist: np.ndarray = dist
              ) -> np.ndarray:
        inner = h & (dist > d)
        return inp.inpaint(src, inner).composite if inner.any() else src

    def mean(*arrs: np.ndarray) -> np.ndarray:
        return np.clip(sum(a.astype(np.float32) for a in arrs) / len(arrs) + 0.5, 0, 255
                       ).astype(np.uint8)

    s3 = again(first, 3)
    variants["d3"], variants["d3avg"] = s3, mean(first, s3)
    s6 = again(first, 6)
    s12 = again(s6, 12)
    variants["d6"], variants["d6avg"] = s6, mean(first, s6)
    s16 = again(first, 16)
    variants["d16"], variants["d16avg"] = s16, mean(first, s16)
    variants["d6d12"] = s12
    variants["avg3"] = mean(first, s6, s12)
    s18 = again(s12, 18)
    variants["d6d12d18"] = s18
    variants["avg4"] = mean(first, s6, s12, s18)
    row = {"k": k, "bucket": _bucket_key(float(h.mean()))}
    for name, v in variants.items():
        row[name] = score(v, im)
    rows.append(row)
    print(k, round(time.time() - t0), {n: round(row[n]["psnr"], 2) for n in variants}, flush=True)
json.dump(rows, open(f"runs/onion/rows_s{seed}_{part}.json", "w"))
