"""Which decoder levels should gather only their needed pixels (core.sparse_decoder)?

    python bench/needed_rules.py --threads 1,2 --json bench/results/needed_rules.json

Runs the 12-MP photo of bench/app_latency.py with its three hole layouts through
core.inference once to capture every network input (crop, mask, needed pixels), then times the
network alone on those inputs (median of ``--runs`` per crop, summed over the crops) under
several rules side by side: every level dense, the shipped GATHER_MAX_FRACTION, and
alternatives. Prints ms and the ratio to the dense decoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from app_latency import load_inpainter, stroke_mask, synth_photo  # bench/ is sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import core.sparse_decoder as sparse  # noqa: E402

# name: per-level fractions (level 0 first, the last for deeper levels); None: never gather
RULES: dict[str, tuple[float, ...] | None] = {
    "dense": None,
    "shipped": sparse.GATHER_MAX_FRACTION,
    "0.5 everywhere": (0.5,),
    "0.1/0.5/0.7": (0.1, 0.5, 0.7),
    "0.1/0.7/1": (0.1, 0.7, 1.0),
    "0.2/0.5/1": (0.2, 0.5, 1.0),
}


def capture(inpainter, photo, hole) -> list[tuple]:
    """Every (image, valid, needed) the inpainter hands the network for this photo."""
    seen = []
    original = inpainter._forward

    def keep(image_t, valid_t, passes=1, needed_t=None):
        seen.append((image_t, valid_t, needed_t))
        return original(image_t, valid_t, passes, needed_t)

    inpainter._forward = keep
    try:
        inpainter.inpaint(photo, hole)
    finally:
        del inpainter._forward
    return seen


def network_ms(model, inputs: list[tuple], runs: int) -> float:
    total = 0.0
    for image_t, valid_t, needed_t in inputs:
        model(image_t, valid_t, needed_t)  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(image_t, valid_t, needed_t)
            times.append(time.perf_counter() - start)
        total += statistics.median(times)
    return total * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--layouts", default="cluster,scattered,blob")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    inpainter = load_inpainter(None, "auto")
    model = inpainter.model
    photo = synth_photo(4000, 3000)
    inputs = {layout: capture(inpainter, photo, stroke_mask(4000, 3000, 0.02, layout))
              for layout in args.layouts.split(",")}
    dtype = inpainter.autocast_dtype
    rows = []
    shipped = sparse.GATHER_MAX_FRACTION
    try:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for name, rule in RULES.items():
                row = {"threads": threads, "rule": name, "fractions": rule}
                for layout, items in inputs.items():
                    needed = [(x, v, None if rule is None else n) for x, v, n in items]
                    sparse.GATHER_MAX_FRACTION = rule or shipped
                    with torch.inference_mode(), torch.autocast(
                        "cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None
                    ):
                        row[layout] = network_ms(model, needed, args.runs)
                rows.append(row)
                dense = next(r for r in rows if r["threads"] == threads and r["rule"] == "dense")
                cells = "  ".join(
                    f"{layout} {row[layout]:7.0f} ms ({dense[layout] / row[layout]:.2f}x)"
                    for layout in inputs)
                print(f"threads {threads}  {name:16s} {cells}", flush=True)
    finally:
        sparse.GATHER_MAX_FRACTION = shipped
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "precision": inpainter.device_name, "crops": {k: len(v) for k, v in inputs.items()},
            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
