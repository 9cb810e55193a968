"""Training-sample cost on one CPU core: photo crop + generated mask, by --mask-reuse.

A GPU step of the trainer takes ~30 ms for 16 samples at 256 x 256 on an H200, so each of
its data-loader workers must make a sample in well under (workers x 30 / 16) ms. This prints
the milliseconds per sample (medians of rounds, interleaved) for each mask-reuse setting side
by side, with the ratio to the first, and the samples per second 14 workers would make.

    .venv/bin/python bench/data_speed.py --photos ../shared/data/photos/train
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from core.data import MASK_POOL, InpaintingDataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, default=Path("../shared/data/photos/train"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reuse", default="1,2,4,8", help="comma-separated --mask-reuse values")
    p.add_argument("--samples", type=int, default=200, help="timed samples per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=14, help="for the samples/s column")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    reuses = [float(r) for r in args.reuse.split(",")]
    sets = {r: InpaintingDataset(args.photos, image_size=args.size, seed=0, preload=True,
                                 mask_reuse=r) for r in reuses}
    for ds in sets.values():  # warm-up: fill each mask pool (the cost of a worker's start)
        for i in range(MASK_POOL + 10):
            ds[i % len(ds)]
    times: dict[float, list[float]] = {r: [] for r in reuses}
    for round_ in range(args.rounds):
        for r in reuses if round_ % 2 == 0 else reversed(reuses):
            ds = sets[r]
            start = time.perf_counter()
            for i in range(args.samples):
                ds[i % len(ds)]
            times[r].append((time.perf_counter() - start) / args.samples)
    base = statistics.median(times[reuses[0]])
    print(f"{'mask reuse':>10} {'ms/sample':>10} {'ratio':>7} {f'{args.workers} workers/s':>14}")
    rows = []
    for r in reuses:
        med = statistics.median(times[r])
        rows.append({"mask_reuse": r, "ms_per_sample": med * 1e3, "ratio": med / base,
                     "samples_per_s_workers": args.workers / med})
        print(f"{r:>10g} {med * 1e3:>10.2f} {med / base:>7.3f} {args.workers / med:>14.0f}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "rounds": args.rounds,
                                         "samples": args.samples, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
