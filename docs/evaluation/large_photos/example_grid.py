"""Experiment: one large photo's cluster of strokes, filled by Telea, by the crop rule before
(context from the cluster's extent) and as shipped, side by side at full resolution.

    python docs/evaluation/large_photos/example_grid.py runs/val_originals/mate-yellow-flower.jpg \
        docs/evaluation/large_photos/example_cluster.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from large_eval import SpanRule, hole_scores, stroke_mask  # noqa: E402

from core.inference import Inpainter, hole_clusters  # noqa: E402

torch.set_num_threads(1)
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
photo = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
h, w = photo.shape[:2]
hole = stroke_mask(w, h, 0.02, "cluster", 0)
shipped = Inpainter.from_checkpoint(None, device="cpu")
before = Inpainter.from_checkpoint(None, device="cpu")
before.__class__ = SpanRule
telea = cv2.inpaint(np.ascontiguousarray(photo[..., ::-1]), hole.astype(np.uint8) * 255, 5,
                    cv2.INPAINT_TELEA)[..., ::-1]
fills = {"Telea": telea, "before": before.inpaint(photo, hole).composite,
         "shipped": shipped.inpaint(photo, hole).composite}
top, left, bottom, right = hole_clusters(hole, 64)[0]
side = 400  # a window in the middle of the cluster, at full resolution
cy, cx = (top + bottom) // 2, (left + right) // 2
y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
window = np.s_[y0 : y0 + side, x0 : x0 + side]
masked = photo.copy()
masked[hole] = 255
tiles = [("truth", photo), ("hole", masked)] + list(fills.items())
grid = Image.new("RGB", (side * len(tiles), side + 24), "white")
draw = ImageDraw.Draw(grid)
for i, (name, img) in enumerate(tiles):
    grid.paste(Image.fromarray(np.ascontiguousarray(img[window])), (i * side, 24))
    label = name
    if name in fills:
        psnr, _ = hole_scores(img, photo, hole)
        label = f"{name}: {psnr:.2f} dB (whole hole)"
    draw.text((i * side + 6, 6), label, fill="black")
grid.save(dst, quality=88)
print(dst, {k: round(hole_scores(v, photo, hole)[0], 2) for k, v in fills.items()})
