"""Experiment: core.evaluate with a fourth mirrored view (left-right and top-bottom at once)
and, of the four runs per pixel, the mean of the middle two (a median for an even count).

    python docs/evaluation/passes/four_views.py RADIUS --images ../shared/data/photos/val \
        --size 512 --precision bf16 --out runs/eval-4views
RADIUS overrides the model's max_hole_radius (0: keep it). Crops that get three passes in the
shipped rule get these four instead; the rest stay one pass.
"""
import sys

import torch

import core.inference as inf

radius = int(sys.argv.pop(1))
orig_init = inf.Inpainter.__init__


def patched_init(self, *a, **k):
    if radius:
        k["max_hole_radius"] = radius
    orig_init(self, *a, **k)


def forward4(self, image_t, valid_t, passes=1, needed_t=None):
    if passes < 3:
        return orig_forward(self, image_t, valid_t, passes, needed_t)
    dtype = self.autocast_dtype
    flips = [(), (-1,), (-2,), (-1, -2)]
    with torch.inference_mode(), torch.autocast(
        self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
    ):
        x = torch.cat([image_t.flip(f) if f else image_t for f in flips])
        v = torch.cat([valid_t.flip(f) if f else valid_t for f in flips])
        x = x.to(self.device).contiguous(memory_format=inf._memory_format(self.device))
        out = self.model(x, v.to(self.device)).float()
        views = torch.stack([o.flip(f) if f else o for o, f in zip(out.unbind(0), flips)])
        middle = views.sort(0).values[1:3].mean(0)[None]
        out = middle.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return out[0].permute(1, 2, 0).cpu().numpy()


orig_forward = inf.Inpainter._forward
inf.Inpainter.__init__ = patched_init
inf.Inpainter._forward = forward4
from core.evaluate import main  # noqa: E402

sys.exit(main())
