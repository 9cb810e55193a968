"""Experiment: core.evaluate with the shipped model's max_hole_radius overridden (argv[1]).

    python docs/evaluation/radius_sweep/radius_eval.py 16 --images ../shared/data/photos/val \
        --size 512 --out runs/eval-r16
(metrics_radius12/16.json here are those runs' summaries, per-pair rows left out.)"""
import sys

import core.inference as inf

radius = int(sys.argv.pop(1))
orig = inf.Inpainter.__init__


def patched(self, *a, **k):
    k["max_hole_radius"] = radius
    orig(self, *a, **k)


inf.Inpainter.__init__ = patched
from core.evaluate import main  # noqa: E402

sys.exit(main())
