"""End-to-end latency of a 12-megapixel photo with a 2 % hole, and GUI stalls (issue #6).

    QT_QPA_PLATFORM=offscreen python bench/app_latency.py --json bench/results/app_cpu.json
    python bench/app_latency.py --quick       # 3-MP photo, one run: a smoke test

Part 1, end to end: a synthetic 4000 x 3000 photo (smooth colour field plus noise) and two hole
masks covering 2 % of it: ``cluster`` (brush strokes inside one region, like removing an
object) and ``scattered`` (strokes spread over the whole photo). ``core.inference.Inpainter``
runs on the CPU; the time is the ``inpaint()`` call (model loading excluded), median of
``--runs``, for each ``--threads`` setting; the time spent inside the network is also reported.

Part 2, GUI stall: the app's own worker (``desktop_app.worker.InpaintService``: a QObject in a
QThread, the model loaded through its ``load_model`` slot) runs the same job while the GUI
thread runs a 10 ms ``QTimer``; the longest gap between two ticks bounds the longest stall of
the event loop from above (a block of B ms shows as a gap of B to B + 10 ms); the verdict uses
that gap, and ``max_stall_ms`` (gap minus the period) is reported too. The job is submitted
from inside the event loop, so the GUI-side copy that ``submit`` makes is counted too. An idle
second before the job gives the machine's own scheduling noise for comparison. With
``--paint`` every tick also draws a brush segment on the app's canvas, which repaints what it
touched (a user painting while a live-mode run works); the drawing time is reported.

Variants of ``--precisions`` (``load_inpainter``) run in turn, one run each (A B A B ...), so
a change in the machine's load falls on all alike.

The model is the shipped one (``resources/model``) when present (``--model random`` overrides),
else a random-weight PConvUNet(layers=8, width=64), the paper's network: speed does not depend
on the weights, only on the architecture and the work size stored with the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from speed import cpu_model  # bench/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.inference import Inpainter  # noqa: E402
from core.model import PConvUNet  # noqa: E402
from core.resources import shipped_model_path  # noqa: E402

TIMER_MS = 10


# ---------------------------------------------------------------------------- test data
def synth_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour field with fine noise, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(max(2, height // 200), max(2, width // 200), 3))
    field = Image.fromarray(low.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    field = field.filter(ImageFilter.GaussianBlur(radius=8))
    arr = np.asarray(field).astype(np.int16)
    arr += rng.integers(-12, 13, size=arr.shape, dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def stroke_mask(
    width: int, height: int, ratio: float, layout: str, seed: int = 0
) -> np.ndarray:
    """Brush strokes until ``ratio`` of the photo is hole; bool (H, W), True = fill.

    ``cluster``: strokes inside one region about 2.5x the hole's area;
    ``scattered``: strokes of the same brush anywhere in the photo;
    ``long``: long, gently curving strokes of that brush across the photo (wires, cables);
    ``blob``: one solid disc (an object painted over whole: a thick hole)."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    target = ratio * width * height
    if layout == "blob":
        r = float(np.sqrt(target / np.pi))
        cx, cy = width * float(rng.uniform(0.3, 0.7)), height * float(rng.uniform(0.3, 0.7))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        return np.asarray(canvas) > 0
    brush = max(6, int(round(min(width, height) / 100)))  # 30 px on a 12-MP photo
    if layout == "cluster":
        side = int(np.sqrt(target * 2.5))
        x0 = int(rng.integers(width // 4, width * 3 // 4 - side))
        y0 = int(rng.integers(height // 4, height * 3 // 4 - side))
        box = (x0, y0, x0 + side, y0 + side)
    elif layout in ("scattered", "long"):
        box = (brush, brush, width - brush, height - brush)
    else:
        raise ValueError(f"unknown layout {layout}")
    area = 0
    while area < target:
        x = float(rng.uniform(box[0], box[2]))
        y = float(rng.uniform(box[1], box[3]))
        points = [(x, y)]
        angle = float(rng.uniform(0, 2 * np.pi))
        seg = {"cluster": (box[2] - box[0]) / 6, "long": min(width, height) / 6}.get(
            layout, min(width, height) / 20)
        for _ in range(int(rng.integers(3, 7))):
            angle += float(rng.normal(0, 0.3 if layout == "long" else 0.8))
            x = float(np.clip(x + seg * np.cos(angle), box[0], box[2]))
            y = float(np.clip(y + seg * np.sin(angle), box[1], box[3]))
            points.append((x, y))
        draw.line(points, fill=255, width=brush, joint="curve")
        area = int((np.asarray(canvas) > 0).sum())
    return np.asarray(canvas) > 0


# ------------------------------------------------------------------------------ model
def model_file(tmp: Path, choice: str, layers: int) -> tuple[Path | None, str]:
    """(checkpoint path, or None for the shipped model; description)."""
    shipped = shipped_model_path()
    if choice == "auto" and shipped is not None:
        return None, f"shipped model {shipped.relative_to(ROOT)}"
    from core.checkpoint import save_model_file

    torch.manual_seed(0)
    path = tmp / "random_pconv_unet.safetensors"
    save_model_file(path, PConvUNet(layers=layers, width=64), half=False)
    why = "asked for" if choice == "random" else "no model in resources/model/"
    return path, f"random-weight PConvUNet(layers={layers}, width=64) ({why})"


def load_inpainter(path: Path | None, precision: str = "auto") -> Inpainter:
    """``PRECISION`` with optional ``-nosmooth`` (the model's fill smoothing switched off) and
    ``-pN`` (N mirrored network passes instead of the model's) and ``-dense`` (every decoder
    pixel computed, not only those pasted: core.sparse_decoder) and ``-serial`` (crops one after
    another, never several at once: Inpainter._crop_workers) and ``-notile`` (a long cluster
    from one crop shrunk to the working size, not tiles: Inpainter._tiles), e.g.
    ``auto-p1``."""
    name, *variants = precision.split("-")
    inpainter = Inpainter.from_checkpoint(path, device="cpu", precision=name)
    for variant in variants:
        if variant == "nosmooth":
            inpainter.fill_smoothing = None
        elif variant in ("p1", "p2", "p3"):
            inpainter.passes = int(variant[1])
        elif variant == "dense":
            inpainter.needed_only = False
        elif variant == "serial":
            inpainter.max_crop_workers = 1
        elif variant == "notile":
            inpainter.tile_shrink = 0
        elif variant.startswith("tile") and variant[4:].isdigit():
            inpainter.tile_shrink = int(variant[4:]) / 100
        else:
            raise SystemExit(f"unknown precision variant '{variant}' in '{precision}'")
    return inpainter


# --------------------------------------------------------------------------- part 1
def end_to_end(
    inpainter: Inpainter, photo: np.ndarray, hole: np.ndarray, threads: int, runs: int
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    net_time = [0.0]  # summed over crops (several may run at once: Inpainter._crop_workers)
    net_calls = [0]
    lock = threading.Lock()
    original = inpainter._forward

    def timed_forward(image_t: torch.Tensor, valid_t: torch.Tensor, passes: int = 1,
                      needed_t: torch.Tensor | None = None) -> np.ndarray:
        start = time.perf_counter()
        try:
            return original(image_t, valid_t, passes, needed_t)
        finally:
            with lock:
                net_time[0] += time.perf_counter() - start
                net_calls[0] += 1

    inpainter._forward = timed_forward  # type: ignore[method-assign]
    totals, nets = [], []
    steps = [0]

    def progress(_done: int, total: int) -> None:
        steps[0] = total

    try:
        for _ in range(runs):
            net_time[0], net_calls[0] = 0.0, 0
            start = time.perf_counter()
            result = inpainter.inpaint(photo, hole, progress=progress)
            totals.append(time.perf_counter() - start)
            nets.append(net_time[0])
            assert np.array_equal(result.composite[~hole], photo[~hole])
    finally:
        del inpainter._forward
    return {
        "threads": threads,
        "median_s": statistics.median(totals),
        "min_s": min(totals),
        "network_median_s": statistics.median(nets),
        "network_calls": net_calls[0],
        "clusters": steps[0],
        "times_s": totals,
    }


def interleaved(
    inpainters: dict[str, Inpainter], photo: np.ndarray, hole: np.ndarray, threads: int,
    runs: int,
) -> dict[str, dict[str, Any]]:
    """``end_to_end`` for each inpainter, one run of each in turn (A B A B ...), so a change
    in the machine's load falls on all of them alike."""
    merged: dict[str, dict[str, Any]] = {}
    for _ in range(runs):
        for name, inp in inpainters.items():
            r = end_to_end(inp, photo, hole, threads, 1)
            m = merged.setdefault(name, {**r, "times_s": [], "network_s": []})
            m["times_s"] += r["times_s"]
            m["network_s"].append(r["network_median_s"])
    for m in merged.values():
        m["median_s"] = statistics.median(m["times_s"])
        m["min_s"] = min(m["times_s"])
        m["network_median_s"] = statistics.median(m["network_s"])
    return merged


# --------------------------------------------------------------------------- part 2
def gui_stall(
    model_path: Path | None, photo: np.ndarray, hole: np.ndarray, threads: int,
    timeout_s: float = 600.0, paint: bool = False,
) -> dict[str, Any]:
    """Longest event-loop gap while the app's worker thread runs one inpainting job; with
    ``paint``, every tick also draws a brush segment on the app's canvas (shown, 1200 x 900,
    the photo loaded), which then repaints what it touched, as when a user paints during a
    live-mode run."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QTimer, Slot
    from PySide6.QtWidgets import QApplication

    from desktop_app.worker import InpaintService

    class Probe(QObject):
        """Lives in the GUI thread, so the worker's signals arrive queued, like the app's."""

        def __init__(self) -> None:
            super().__init__()
            self.loop = QEventLoop()
            self.ticks: list[float] = []
            self.paint_ms: list[float] = []
            self.state: dict[str, Any] = {}

        def wait(self, ms: float) -> None:
            deadline = QTimer()
            deadline.setSingleShot(True)
            deadline.timeout.connect(self.loop.quit)
            deadline.start(int(ms))
            self.loop.exec()
            deadline.stop()

        @Slot()
        def tick(self) -> None:
            self.ticks.append(time.perf_counter())
            if canvas is not None:
                angle = len(self.ticks) * 0.05
                point = QPointF(photo.shape[1] * (0.5 + 0.3 * math.cos(angle)),
                                photo.shape[0] * (0.5 + 0.3 * math.sin(angle)))
                # as a mouse move does: the canvas repaints the touched area from the event
                # loop, so that cost shows in the gaps, not in paint_ms
                canvas._draw_segment(self.state.get("last", point), point)
                self.state["last"] = point
                self.paint_ms.append((time.perf_counter() - self.ticks[-1]) * 1e3)

        @Slot(object)
        def loaded(self, _info: object) -> None:
            self.state["loaded"] = True
            self.loop.quit()

        @Slot(str)
        def model_error(self, message: str) -> None:
            self.state["error"] = message
            self.loop.quit()

        @Slot(int, str)
        def job_error(self, _rid: int, message: str) -> None:
            self.state["error"] = message

        @Slot(int)
        def finished(self, _rid: int) -> None:
            self.state["finished"] = time.perf_counter()
            self.loop.quit()

    app = QApplication.instance() or QApplication([])
    canvas = None
    if paint:
        from PySide6.QtCore import QPointF

        from desktop_app.canvas import MaskCanvas, ViewState
        from desktop_app.document import Document

        document = Document()
        canvas = MaskCanvas(document, ViewState())
        canvas.resize(1200, 900)
        canvas.show()
        document.replace_photo(photo)
        canvas._begin_stroke(QPointF(photo.shape[1] * 0.8, photo.shape[0] * 0.5), erase=False)
    service = InpaintService(torch_threads=threads)
    probe = Probe()
    worker = service.worker
    worker.model_loaded.connect(probe.loaded)
    worker.model_error.connect(probe.model_error)
    worker.error.connect(probe.job_error)
    worker.finished.connect(probe.finished)
    try:
        service.load_model(model_path, "cpu")
        probe.wait(timeout_s * 1000)
        if not probe.state.get("loaded"):
            raise RuntimeError(f"model did not load: {probe.state.get('error')}")
        timer = QTimer()
        timer.setInterval(TIMER_MS)
        timer.timeout.connect(probe.tick)
        timer.start()
        probe.wait(1000)  # idle: the machine's own scheduling noise
        idle = _gaps(probe.ticks)
        idle_paint = list(probe.paint_ms)
        probe.ticks.clear()
        probe.paint_ms.clear()

        def submit() -> None:
            probe.state["submitted"] = time.perf_counter()
            service.submit(photo, hole, revision=1)
            probe.state["submit_returned"] = time.perf_counter()

        QTimer.singleShot(0, submit)
        probe.wait(timeout_s * 1000)
        QCoreApplication.processEvents()
        timer.stop()
    finally:
        service.shutdown()
    if probe.state.get("error"):
        raise RuntimeError(f"inpainting failed: {probe.state['error']}")
    if "finished" not in probe.state:
        raise RuntimeError(f"inpainting did not finish within {timeout_s:.0f} s")
    end = probe.state["finished"]
    busy = _gaps([t for t in probe.ticks if t <= end + 0.05])
    return {
        "threads": threads,
        "job_s": end - probe.state["submitted"],
        "submit_call_ms": (probe.state["submit_returned"] - probe.state["submitted"]) * 1e3,
        "max_gap_ms": busy["max_gap_ms"],
        "max_stall_ms": busy["max_stall_ms"],
        "p99_gap_ms": busy["p99_gap_ms"],
        "stalls_over_50ms": busy["over_50"],
        "ticks": busy["ticks"],
        "idle_max_gap_ms": idle["max_gap_ms"],
        "idle_p99_gap_ms": idle["p99_gap_ms"],
        "paint": paint,
        "paint_max_ms": max(probe.paint_ms, default=float("nan")),
        "paint_median_ms": statistics.median(probe.paint_ms) if probe.paint_ms else float("nan"),
        "idle_paint_max_ms": max(idle_paint, default=float("nan")),
        "idle_paint_median_ms": statistics.median(idle_paint) if idle_paint else float("nan"),
        "qt_app": type(app).__name__,
    }


def _gaps(ticks: list[float]) -> dict[str, Any]:
    if len(ticks) < 2:
        return {"max_gap_ms": float("nan"), "max_stall_ms": float("nan"),
                "p99_gap_ms": float("nan"), "over_50": 0, "ticks": len(ticks)}
    gaps = np.diff(np.asarray(ticks)) * 1e3
    stalls = gaps - TIMER_MS
    return {
        "max_gap_ms": float(gaps.max()),
        "max_stall_ms": float(stalls.max()),
        "p99_gap_ms": float(np.percentile(gaps, 99)),
        "over_50": int((stalls > 50).sum()),
        "ticks": len(ticks),
    }


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="12-MP end-to-end latency and GUI stall (issue #6)")
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--hole", type=float, default=0.02, help="hole fraction of the photo")
    p.add_argument("--layouts", default="cluster,scattered",
                   help="comma-separated: cluster, scattered, blob, long (see stroke_mask)")
    p.add_argument("--threads", default="1,2", help="torch intra-op threads to compare")
    p.add_argument("--runs", type=int, default=3, help="end-to-end runs per setting")
    p.add_argument("--precisions", default="fp32,auto",
                   help="core.inference precisions to compare end to end (the app uses "
                        "auto); PRECISION-nosmooth switches the model's fill smoothing off, "
                        "PRECISION-pN runs N mirrored passes, PRECISION-dense computes every "
                        "decoder pixel")
    p.add_argument("--model", default="auto", choices=["auto", "random"],
                   help="auto: the shipped model if present, else random weights")
    p.add_argument("--layers", type=int, default=8, help="depth of the random-weight model")
    p.add_argument("--no-gui", action="store_true", help="skip the event-loop stall part")
    p.add_argument("--paint", action="store_true",
                   help="in the GUI part, paint a brush stroke on the canvas every tick")
    p.add_argument("--quick", action="store_true", help="2000 x 1500 photo, one run")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.height, args.runs = 2000, 1500, 1
    threads = [int(t) for t in args.threads.split(",")]
    layouts = args.layouts.split(",")

    report: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "photo": [args.width, args.height], "hole_fraction": args.hole,
        "end_to_end": [], "gui": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path, described = model_file(Path(tmp), args.model, args.layers)
        inpainters = {name: load_inpainter(path, name) for name in args.precisions.split(",")}
        inpainter = next(iter(inpainters.values()))
        config = inpainter.model.config
        described += f": layers {config.layers}, width {config.width}"
        report["model"] = described
        report["work_size"] = inpainter.work_size
        print(f"model: {described}; work size {inpainter.work_size}; "
              f"CPU {report['machine']['cpu']} x {os.cpu_count()}", flush=True)
        photo = synth_photo(args.width, args.height)
        masks = {name: stroke_mask(args.width, args.height, args.hole, name)
                 for name in layouts}
        for name, hole in masks.items():
            report.setdefault("masks", {})[name] = {"hole_fraction": float(hole.mean())}
            print(f"mask {name}: {hole.mean() * 100:.2f} % hole", flush=True)
        for inp in inpainters.values():  # warm-up
            inp.inpaint(photo[:512, :512], masks[layouts[0]][:512, :512] | _dot(512))
        for name, hole in masks.items():
            for n in threads:
                medians = {}
                for precision, r in interleaved(inpainters, photo, hole, n, args.runs).items():
                    inp = inpainters[precision]
                    r.update(layout=name, precision=precision, device=inp.device_name)
                    report["end_to_end"].append(r)
                    medians[precision] = r["median_s"]
                    verdict = "meets" if r["median_s"] <= 1.5 else "misses"
                    print(f"end-to-end {name:9s} threads {n} {precision:13s} "
                          f"({inp.device_name}): median {r['median_s']:.3f} s "
                          f"(network {r['network_median_s']:.3f} s in {r['network_calls']} "
                          f"call(s), {r['clusters']} cluster(s)); {verdict} the 1.5 s target",
                          flush=True)
                if len(medians) > 1:
                    first, *rest = medians
                    for other in rest:
                        print(f"           {name:9s} threads {n} {first} / {other} = "
                              f"{medians[first] / medians[other]:.2f}x", flush=True)
        if not args.no_gui:
            for name, hole in masks.items():
                for n in threads:
                    r = gui_stall(path, photo, hole, n, paint=args.paint)
                    r["layout"] = name
                    report["gui"].append(r)
                    verdict = "meets" if r["max_gap_ms"] <= 50 else "misses"
                    if args.paint:
                        print(f"paint      {name:9s} threads {n}: a brush segment per tick "
                              f"took median {r['paint_median_ms']:.1f} ms, at most "
                              f"{r['paint_max_ms']:.1f} ms (idle: {r['idle_paint_median_ms']:.1f}"
                              f" / {r['idle_paint_max_ms']:.1f} ms)", flush=True)
                    print(f"gui        {name:9s} threads {n}: longest tick gap "
                          f"{r['max_gap_ms']:.1f} ms (p99 {r['p99_gap_ms']:.1f} ms, "
                          f"{r['stalls_over_50ms']} stall(s) over 50 ms; idle max gap "
                          f"{r['idle_max_gap_ms']:.1f} ms); submit {r['submit_call_ms']:.1f}"
                          f" ms; job {r['job_s']:.2f} s; {verdict} the 50 ms target",
                          flush=True)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))
    return 0


def _dot(size: int) -> np.ndarray:
    hole = np.zeros((size, size), dtype=bool)
    hole[size // 2 - 8 : size // 2 + 8, size // 2 - 8 : size // 2 + 8] = True
    return hole


if __name__ == "__main__":
    sys.exit(main())
