"""Experiment: core.evaluate with the renormalisation sum(1)/sum(M) capped at CAP in every layer.

    PYTHONPATH=. CAP=3 python docs/evaluation/batchnorm/cap_eval.py --images \
        ../shared/data/photos/val --size 512 --precision bf16 --examples 0 --out OUT_DIR

The network was trained with the exact ratio, so this only asks whether the rare windows with
few known pixels (large ratios) cause the spots in the largest holes (summary_seed0.json).
"""
from __future__ import annotations

import os
import sys

import torch

import core.model as M
import core.pconv as P
from core.evaluate import main

cap = float(os.environ["CAP"])
orig = P.scale_and_mask


def capped(window_sum: torch.Tensor, numerator: float) -> tuple[torch.Tensor, torch.Tensor]:
    s, m = orig(window_sum, numerator)
    return s.clamp(max=cap), m


P.scale_and_mask = capped
M.scale_and_mask = capped  # core.model imported it by name
sys.exit(main(sys.argv[1:]))
