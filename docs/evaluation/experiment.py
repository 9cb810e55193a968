"""What the experiment scripts under docs/evaluation share: the val pairs they score.

Run those scripts from the repository root with ``PYTHONPATH=.``; they import this module as
``docs.evaluation.experiment``.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core.evaluate import seeded_pairs

VAL_PHOTOS = "../shared/data/photos/val"


def val_pairs(seed: int | str = 0, part: int = 0, parts: int = 1, over: float = 0.0
              ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(pair index, photo, hole_mask) of the 512 px evaluation's pairs of ``seed``: every
    ``parts``-th from ``part`` (to split a run over processes), with more than ``over`` of
    the photo in the hole."""
    photos, holes = seeded_pairs(VAL_PHOTOS, 512, seed)
    for k in range(part, len(photos), parts):
        if holes[k].mean() > over:
            yield k, photos[k], holes[k]
