"""Experiment: the smallest crop run around a small hole (``Inpainter._crop_side``'s floor).

    python docs/evaluation/large_photos/crop_floor.py 0.75,0.5 --photos runs/val_originals \
        --json docs/evaluation/large_photos/crop_floor.json

Small "blemish" holes: 15 discs (``--count``) of radius 6-30 px at random places in each
full-size val original (``scripts/fetch_val_originals.sh``; or any folder of photos), two
seeds. Each is filled with the crop floor at
each given fraction of the working size (the first is the reference); PSNR over the hole
pixels of the composite and the ``inpaint()`` time on one CPU thread. Brush strokes are
``large_eval.py``'s business; run it with ``Inpainter.crop_floor`` set the same way to compare
them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT)]

from core import inference  # noqa: E402


def blemishes(w: int, h: int, seed: int, count: int = 15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        r = rng.uniform(6, 30)
        x, y = rng.uniform(r + 40, w - r - 40), rng.uniform(r + 40, h - r - 40)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(canvas) > 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("floors", help="comma-separated fractions of the working size")
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--count", type=int, default=15, help="discs per photo")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    floors = [float(f) for f in args.floors.split(",")]
    inp = inference.Inpainter.from_checkpoint(None, device="cpu")
    rows = []
    for path in sorted(args.photos.iterdir()):
        photo = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        h, w = photo.shape[:2]
        for seed in (int(s) for s in args.seeds.split(",")):
            hole = blemishes(w, h, seed, args.count)
            row = {"photo": path.name, "seed": seed}
            for floor in floors:
                inp.crop_floor = floor
                start = time.perf_counter()
                out = inp.inpaint(photo, hole).composite
                took = time.perf_counter() - start
                diff = out[hole].astype(np.float64) - photo[hole].astype(np.float64)
                row[str(floor)] = {"psnr": 10 * math.log10(255.0**2 / float((diff**2).mean())),
                                   "s": took}
            rows.append(row)
            print(path.name, seed, " ".join(f"{f}: {row[str(f)]['psnr']:.2f} dB "
                                            f"{row[str(f)]['s']:.2f} s" for f in floors),
                  flush=True)
    summary = {}
    for floor in floors:
        key = str(floor)
        diffs = [r[key]["psnr"] - r[str(floors[0])]["psnr"] for r in rows]
        summary[key] = {"mean_psnr": statistics.mean(r[key]["psnr"] for r in rows),
                        "median_s": statistics.median(r[key]["s"] for r in rows),
                        "better": sum(d > 1e-6 for d in diffs),
                        "worse": sum(d < -1e-6 for d in diffs)}
        print(f"floor {floor}: PSNR {summary[key]['mean_psnr']:.3f} dB, "
              f"{summary[key]['median_s']:.2f} s; against {floors[0]}: "
              f"{summary[key]['better']} better, {summary[key]['worse']} worse")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows,
                                         "device": inp.device_name}, indent=1))


if __name__ == "__main__":
    main()
