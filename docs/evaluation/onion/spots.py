"""Experiment: hole pixels far off the truth (more than 100 and 60 levels in some channel) on
the 48 seed-0 pairs over 50 % hole: the shipped fill, peeled at 3 px, and peeled at 6 px
averaged with the first fill (onion.py). Writes runs/onion/spots_PART.json.

    PYTHONPATH=. python docs/evaluation/onion/spots.py 0 2 &
    PYTHONPATH=. python docs/evaluation/onion/spots.py 1 2
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from scipy import ndimage

from core.inference import Inpainter
from docs.evaluation.experiment import val_pairs

torch.set_num_threads(1)
part, parts = int(sys.argv[1]), int(sys.argv[2])
inp = Inpainter.from_checkpoint(None, device="cpu", precision="bf16")
rows = []


def far(c: np.ndarray, im: np.ndarray, h: np.ndarray) -> tuple[float, float]:
    e = np.abs(c.astype(int) - im.astype(int)).max(axis=2)[h]
    return float((e > 100).mean()), float((e > 60).mean())
for k, im, h in val_pairs(0, part, parts, over=0.5):
    first = inp.inpaint(im, h).composite
    dist = ndimage.distance_transform_edt(h)
    s3 = inp.inpaint(first, h & (dist > 3)).composite
    s6 = inp.inpaint(first, h & (dist > 6)).composite
    avg6 = np.clip((first.astype(np.float32) + s6) / 2 + 0.5, 0, 255).astype(np.uint8)
    r = {"k": k, "base": far(first, im, h), "d3": far(s3, im, h), "d6avg": far(avg6, im, h)}
    rows.append(r)
    print(r, flush=True)
json.dump(rows, open(f"runs/onion/spots_{part}.json", "w"))
