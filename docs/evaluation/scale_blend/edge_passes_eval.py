"""Experiment: core.evaluate with the edge band's second run given N passes (argv[1]), as a
GPU runs it (3) instead of the CPU's one.

    python docs/evaluation/scale_blend/edge_passes_eval.py 3 --images ../shared/data/photos/val \
        --size 512 --out runs/eval-edge-p3
"""
import sys

import core.inference as inf

passes = int(sys.argv.pop(1))
orig = inf.Inpainter.__init__


def patched(self, *a, **k):
    orig(self, *a, **k)
    self.edge_passes = passes


inf.Inpainter.__init__ = patched
from core.evaluate import main  # noqa: E402

sys.exit(main())
