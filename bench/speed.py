"""PConvUNet against a plain-convolution U-Net of exactly the same layer shapes (issue #6).

    python bench/speed.py --device cpu --json bench/results/speed_cpu.json
    python bench/speed.py --device cuda --json $OUT/speed_cuda.json
    python bench/speed.py --quick            # smoke test, tiny settings, < 1 min on CPU

The plain network has the same encoder/decoder convolutions (``nn.Conv2d`` with bias), the same
BatchNorm layers and activations, nearest upsampling and concatenation, but no masks at all; it
is built from the PConvUNet it is compared with (parameter counts are asserted equal, weights
are copied). In eval mode both compute each decoder convolution of the upsampled features by
output phase from the low-resolution map (``core.model.upsampled_conv``), as ``core.inference``
runs the model; the ``-up`` variants make both build the upsampled map and concatenate instead
(what training does), so the phase form's gain shows against the same baseline. Both
networks are timed in the same process, interleaved (ABBA order per round), and every ratio is
PConv / plain at identical settings:

- inference latency, batch 1, at 256 (7 levels) and 512 (8 levels, the paper's network);
- training step throughput with the full paper loss (``InpaintingLoss`` with a random-weight
  VGG-16 pool1..pool3, the same loss object for both; the plain network ignores the mask, the
  loss still gets it), Adam, at 256 x 256 batch 16 and 512 x 512 batch 6;
- peak training memory of a training step of one model set up alone (weights, Adam state, VGG,
  inputs, activations, temporaries). CUDA: ``torch.cuda.max_memory_allocated``. CPU: a fresh
  subprocess per configuration resets the kernel's peak-RSS counter after its imports
  (``/proc/self/clear_refs``) and reports VmHWM minus the RSS at that point, i.e. what the
  model, loss, optimizer, inputs and the steps made resident (allocator slack included).

On CPU everything runs with ``torch.set_num_threads(1)`` unless ``--threads`` says otherwise.
Variants: ``fp32``, ``bf16`` (autocast) and their ``-cl`` (channels_last) forms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.losses import InpaintingLoss  # noqa: E402
from core.masks import MaskGenerator  # noqa: E402
from core.model import PConvUNet, PhaseKernelCache, upsampled_conv  # noqa: E402

MODELS = ("pconv", "plain")
DEFAULT_VARIANTS = ("fp32", "bf16", "fp32-cl", "bf16-cl", "fp32-graph", "bf16-graph")
# Eval-mode decoder by upsample-and-concatenate instead of by output phase, both networks.
UP_VARIANTS = ("fp32-up", "bf16-up", "fp32-cl-up", "bf16-cl-up", "fp32-graph-up",
               "bf16-graph-up", "bf16-cl-graph-up")
# channels_last replayed from a CUDA graph: asked for by name.
CL_GRAPH_VARIANTS = ("fp32-cl-graph", "bf16-cl-graph")
# torch.compile (inductor) of both networks: asked for by name only, since compiling costs
# about a minute per network and size.
COMPILE_VARIANTS = ("fp32-compile", "bf16-compile", "fp32-cl-compile", "bf16-cl-compile",
                    "fp32-compile-graph", "bf16-compile-graph", "fp32-cl-compile-graph",
                    "bf16-cl-compile-graph")
ALL_VARIANTS = DEFAULT_VARIANTS + UP_VARIANTS + CL_GRAPH_VARIANTS + COMPILE_VARIANTS
GRAPH_NOTE = "CUDA only, inference only: the forward replayed from a captured CUDA graph"
MiB = 1024.0**2


# --------------------------------------------------------------------------------- models
class PlainUNet(nn.Module):
    """The PConvUNet's layer shapes with ordinary convolutions and no mask path."""

    def __init__(self, reference: PConvUNet, copy_weights: bool = True) -> None:
        super().__init__()
        self.config = reference.config
        self.encoder = nn.ModuleList(_plain_conv(layer) for layer in reference.encoder)
        self.encoder_bn = nn.ModuleList(_same_norm(bn) for bn in reference.encoder_bn)
        self.decoder = nn.ModuleList(_plain_conv(layer) for layer in reference.decoder)
        self.decoder_bn = nn.ModuleList(_same_norm(bn) for bn in reference.decoder_bn)
        self.decoder_widths = list(reference.decoder_widths)
        self.phase_decoder = True  # as PConvUNet: eval mode only
        self._phase_kernels = PhaseKernelCache()
        if copy_weights:
            self._copy_from(reference)

    @property
    def layers(self) -> int:
        return self.config.layers

    @torch.no_grad()
    def _copy_from(self, reference: PConvUNet) -> None:
        pairs = [*zip(self.encoder, reference.encoder), *zip(self.decoder, reference.decoder)]
        for conv, pconv in pairs:
            conv.weight.copy_(pconv.conv.weight)
            if pconv.bias is not None:
                conv.bias.copy_(pconv.bias)
        ours = [*self.encoder_bn, *self.decoder_bn]
        theirs = [*reference.encoder_bn, *reference.decoder_bn]
        for bn, ref in zip(ours, theirs):
            if isinstance(bn, nn.BatchNorm2d):
                bn.load_state_dict(ref.state_dict())

    def forward(self, image: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = [image]
        h = image
        for conv, bn in zip(self.encoder, self.encoder_bn):
            h = F.relu(bn(conv(h)))
            features.append(h)
        out = features[-1]
        for i, (conv, bn) in enumerate(zip(self.decoder, self.decoder_bn)):
            skip = features[self.layers - 1 - i]
            if self.training or not self.phase_decoder:
                up = F.interpolate(out, scale_factor=2.0, mode="nearest")
                out = conv(torch.cat([up, skip.to(up.dtype)], dim=1))
            else:
                out = upsampled_conv(out, skip, conv.weight, self.decoder_widths[i][0],
                                     self._phase_kernels, i)
                if conv.bias is not None:
                    out += conv.bias.to(out.dtype).view(1, -1, 1, 1)
            if i < self.layers - 1:
                out = F.leaky_relu(bn(out), 0.2)
        return out


def _plain_conv(layer: nn.Module) -> nn.Conv2d:
    return nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        bias=layer.bias is not None,
    )


def _same_norm(bn: nn.Module) -> nn.Module:
    return nn.BatchNorm2d(bn.num_features) if isinstance(bn, nn.BatchNorm2d) else nn.Identity()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_pair(layers: int, width: int, seed: int = 0) -> tuple[PConvUNet, PlainUNet]:
    """A PConvUNet and its plain twin; shapes and parameter counts are checked equal."""
    torch.manual_seed(seed)
    pconv = PConvUNet(layers=layers, width=width)
    plain = PlainUNet(pconv)
    assert param_count(pconv) == param_count(plain), (param_count(pconv), param_count(plain))
    p_shapes = sorted(tuple(p.shape) for p in pconv.parameters())
    q_shapes = sorted(tuple(p.shape) for p in plain.parameters())
    assert p_shapes == q_shapes, "parameter shapes differ"
    return pconv, plain


def build_model(kind: str, layers: int, width: int) -> nn.Module:
    pconv, plain = build_pair(layers, width)
    return pconv if kind == "pconv" else plain


def layers_for(size: int) -> int:
    """The paper's depth: 8 levels at 512 (2 x 2 bottleneck), one fewer per halving."""
    return max(4, min(8, int(round(np.log2(size))) - 1))


# --------------------------------------------------------------------------------- inputs
def make_inputs(
    batch: int, size: int, device: torch.device, channels_last: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-ish random images and irregular masks with a 10-20 % hole ratio."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(1, size // 16), max(1, size // 16), generator=g)
    image = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    image = (image + 0.05 * torch.randn(image.shape, generator=g)).clamp(0.0, 1.0)
    gen = MaskGenerator(seed=seed)
    holes = np.stack([gen.generate(size, size, bucket=(0.1, 0.2)) for _ in range(batch)])
    valid = torch.from_numpy(~holes).float()[:, None]
    image, valid = image.to(device), valid.to(device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, valid


# ------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """``fp32`` | ``bf16`` (autocast), ``-cl``: channels_last, ``-compile``: both networks
    through torch.compile (inductor fuses the elementwise work, which is most of what the
    mask path adds), ``-graph``: the inference forward captured once as a CUDA graph and
    replayed (no per-kernel launch cost), ``-up``: the eval-mode decoder by upsampling and
    concatenation instead of by output phase (module docstring)."""

    name: str

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.name.startswith("bf16") else None

    @property
    def channels_last(self) -> bool:
        return "-cl" in self.name

    @property
    def graph(self) -> bool:
        return "-graph" in self.name

    @property
    def phase_decoder(self) -> bool:
        return not self.name.endswith("-up")

    @property
    def compiled(self) -> bool:
        return "-compile" in self.name

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        # The autocast weight-cast cache must be off while a CUDA graph is captured.
        return torch.autocast(device.type, dtype=self.amp_dtype, cache_enabled=not self.graph)

    def prepare(self, model: nn.Module) -> nn.Module:
        model.phase_decoder = self.phase_decoder  # type: ignore[assignment]
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compiled:
            model = torch.compile(model, dynamic=False)  # type: ignore[assignment]
        return model


# ------------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process-CPU seconds per call of each function. Rounds alternate the
    order (ABBA) so drift in the machine's load hits both sides alike. On a CPU shared with
    other jobs the CPU time of a 1-thread run is the steadier measure: it does not count the
    time the process waited for a core."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def summarise(
    times: tuple[dict[str, list[float]], dict[str, list[float]]], device: torch.device
) -> dict[str, Any]:
    wall, cpu = times
    out = _ratios(wall)
    out["times_s"] = wall
    if device.type == "cpu":
        out["cpu_time"] = _ratios(cpu)
        out["cpu_time"]["times_s"] = cpu
    return out


def _ratios(times: dict[str, list[float]]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = [a / b for a, b in zip(times["pconv"], times["plain"])]
    return {
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "ratio": med["pconv"] / med["plain"],
        "ratio_paired_median": statistics.median(paired),
        "ratio_min": min(times["pconv"]) / min(times["plain"]),
        "runs": len(paired),
    }


# ---------------------------------------------------------------------------- inference
def bench_inference(
    size: int, width: int, variant: Variant, device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    layers = layers_for(size)
    pconv, plain = build_pair(layers, width)
    models = {"pconv": pconv, "plain": plain}
    image, valid = make_inputs(1, size, device, variant.channels_last)
    fns: dict[str, Callable[[], Any]] = {}
    ops: dict[str, int] = {}
    for name, model in models.items():
        model = variant.prepare(model.to(device).eval())

        def run(model: nn.Module = model) -> None:
            with torch.inference_mode(), variant.autocast(device):
                model(image, valid)

        if variant.compiled:
            run()  # compile now, outside the timed runs
        else:  # (a dispatch mode would make a compiled module run eagerly: not counted)
            run()  # first call: the phase kernels are made once, not counted per forward
            ops[name] = count_ops(run)
        fns[name] = capture_graph(run, device) if variant.graph else run
    result = summarise(interleaved_times(fns, device, warmup, repeats), device)
    result.update(kind="inference", size=size, batch=1, layers=layers, width=width,
                  variant=variant.name, params=param_count(pconv), ops_per_forward=ops)
    del models, fns
    _release(device)
    return result


def capture_graph(run: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """Capture ``run`` (fixed inputs) as a CUDA graph; the returned call replays it."""
    if device.type != "cuda":
        raise ValueError(f"the -graph variants need CUDA. {GRAPH_NOTE}")
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # cudnn autotuning and lazy initialisation happen outside capture
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def count_ops(run: Callable[[], Any]) -> int:
    """Aten operators one call dispatches, views and no-op casts excluded: on a GPU each one
    is (at least) a kernel launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    views = {"view", "_unsafe_view", "as_strided", "detach", "alias", "unsqueeze", "expand",
             "transpose", "permute", "select", "slice", "t", "squeeze", "reshape"}

    class Counter(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket).removeprefix("aten.").rstrip("_")
            if name in views:
                return out
            if name == "to" and isinstance(out, torch.Tensor) and args and (
                out.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr()
            ):
                return out  # a cast to the dtype it already has: no kernel
            Counter.n += 1
            return out

    with Counter():
        run()
    return Counter.n


# ----------------------------------------------------------------------------- training
def make_loss(device: torch.device) -> InpaintingLoss:
    from core.backbones import VGG16Features

    return InpaintingLoss(VGG16Features(weights=None)).to(device)


def make_train_step(
    model: nn.Module,
    loss_fn: InpaintingLoss,
    image: torch.Tensor,
    valid: torch.Tensor,
    variant: Variant,
    device: torch.device,
) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """One optimisation step exactly like core.train.Trainer.train_step (Adam, paper loss)."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    if variant.compiled:  # the loss too, as core.train --compile does
        loss_fn = torch.compile(loss_fn, dynamic=False)  # type: ignore[assignment]

    def step() -> None:
        with variant.autocast(device):
            output = model(image, valid)
            terms = loss_fn(output, image, valid)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()

    return step, optimizer


def prime_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Create Adam's state (as after a first step) without running the network."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def bench_training(
    size: int, batch: int, width: int, variant: Variant, device: torch.device,
    warmup: int, repeats: int, loss_fn: InpaintingLoss,
) -> dict[str, Any]:
    layers = layers_for(size)
    pconv, plain = build_pair(layers, width)
    image, valid = make_inputs(batch, size, device, variant.channels_last)
    fns = {
        name: make_train_step(variant.prepare(model.to(device)), loss_fn, image, valid, variant,
                              device)[0]
        for name, model in (("pconv", pconv), ("plain", plain))
    }
    result = summarise(interleaved_times(fns, device, warmup, repeats), device)
    result["images_per_s"] = {k: batch / v for k, v in result["median_s"].items()}
    result["throughput_ratio"] = 1.0 / result["ratio"]
    if "cpu_time" in result:
        c = result["cpu_time"]
        c["images_per_s"] = {k: batch / v for k, v in c["median_s"].items()}
        c["throughput_ratio"] = 1.0 / c["ratio"]
    result.update(kind="training", size=size, batch=batch, layers=layers, width=width,
                  variant=variant.name, loss="InpaintingLoss + VGG16Features(weights=None)")
    del fns, pconv, plain
    _release(device)
    return result


def train_memory(
    kind: str, size: int, batch: int, width: int, variant: Variant, device: torch.device,
    steps: int = 1,
) -> dict[str, Any]:
    """Peak memory of a training step of one model set up alone (see module doc); Adam's
    state is created first, so one step shows the steady-state peak of every later step."""
    _release(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    loss_fn = make_loss(device)
    model = variant.prepare(build_model(kind, layers_for(size), width).to(device))
    image, valid = make_inputs(batch, size, device, variant.channels_last)
    step, optimizer = make_train_step(model, loss_fn, image, valid, variant, device)
    prime_optimizer(optimizer)
    setup_rss = _current_rss()
    for _ in range(steps):
        step()
    synchronize(device)
    out: dict[str, Any] = {"model": kind, "steps": steps}
    if device.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        out["measure"] = "torch.cuda.max_memory_allocated, model set up alone"
    else:
        out["setup_rss_bytes"] = setup_rss
    del step, optimizer, model, loss_fn, image, valid
    _release(device)
    return out


def _memory_in_subprocess(
    kind: str, size: int, batch: int, width: int, variant: Variant, threads: int
) -> dict[str, Any]:
    spec = {"kind": kind, "size": size, "batch": batch, "width": width,
            "variant": variant.name, "threads": threads}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)],
        capture_output=True, text=True, check=False, cwd=str(ROOT),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({kind} {size}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    torch.set_num_threads(int(spec["threads"]))
    import torchvision.models  # noqa: F401  (imports count as baseline, not as model memory)

    import core.backbones  # noqa: F401

    gc.collect()
    reset = _reset_peak_rss()
    base = _current_rss() if reset else _maxrss()
    result = train_memory(spec["kind"], spec["size"], spec["batch"], spec["width"],
                          Variant(spec["variant"]), torch.device("cpu"))
    result["baseline_rss_bytes"] = base
    result["peak_rss_bytes"] = _peak_rss() if reset else _maxrss()
    result["peak_bytes"] = result["peak_rss_bytes"] - base
    result["measure"] = (
        "VmHWM after resetting it (/proc/self/clear_refs) minus VmRSS at the reset"
        if reset else "ru_maxrss minus ru_maxrss after imports"
    )
    print(json.dumps(result))


def bench_memory(
    size: int, batch: int, width: int, variant: Variant, device: torch.device, threads: int
) -> dict[str, Any]:
    per_model = {}
    for kind in MODELS:
        if device.type == "cuda":
            per_model[kind] = train_memory(kind, size, batch, width, variant, device)
        else:
            per_model[kind] = _memory_in_subprocess(kind, size, batch, width, variant, threads)
    peak = {k: v["peak_bytes"] for k, v in per_model.items()}
    return {
        "kind": "memory", "size": size, "batch": batch, "width": width,
        "variant": variant.name, "peak_mib": {k: v / MiB for k, v in peak.items()},
        "ratio": peak["pconv"] / max(1, peak["plain"]), "details": per_model,
    }


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _maxrss()


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ profile
def profile_inference(size: int, width: int, device: torch.device, variant: Variant) -> None:
    """Top operators of one inference per model, and the operator counts (kernel launches)."""
    from torch.profiler import ProfilerActivity, profile

    pconv, plain = build_pair(layers_for(size), width)
    image, valid = make_inputs(1, size, device, variant.channels_last)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    for name, model in (("pconv", pconv), ("plain", plain)):
        model = variant.prepare(model.to(device).eval())
        with torch.inference_mode(), variant.autocast(device):
            model(image, valid)
            synchronize(device)
            with profile(activities=activities) as prof:
                model(image, valid)
                synchronize(device)
        events = prof.key_averages()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\n== {name}: {size} x {size}, {variant.name}, {device} ==")
        print(events.table(sort_by=sort, row_limit=18))


# --------------------------------------------------------------------------------- main
@dataclass
class Settings:
    device: torch.device
    variants: list[Variant]
    infer_sizes: list[int]
    train_configs: list[tuple[int, int]]  # (size, batch)
    width: int
    infer_warmup: int
    infer_repeats: int
    train_warmup: int
    train_repeats: int
    threads: int
    parts: set[str]
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description="PConvUNet vs plain-conv U-Net (issue #6)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sizes", help="inference sizes, comma-separated (default 256,512)")
    p.add_argument("--train-sizes",
                   help="training SIZExBATCH list, e.g. 256x16,512x6 (default); 'none' skips")
    p.add_argument("--variants",
                   help=f"comma-separated of {', '.join(ALL_VARIANTS)}; default: the first six "
                        "on CUDA, "
                   "fp32 on CPU")
    p.add_argument("--width", type=int, help="first-layer channels (default 64, quick 16)")
    p.add_argument("--repeats", type=int, help="timed inference runs per model")
    p.add_argument("--train-repeats", type=int, help="timed training steps per model")
    p.add_argument("--warmup", type=int, help="untimed runs per model before timing")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1)")
    p.add_argument("--no-tf32", action="store_true",
                   help="CUDA fp32 without TF32 (default: TF32 on, as core.train sets it)")
    p.add_argument("--parts", default="inference,training,memory",
                   help="which measurements to run (comma-separated; default all three)")
    p.add_argument("--no-memory", action="store_true", help="same as leaving memory out of --parts")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler operator tables for inference and exit")
    p.add_argument("--json", help="write every result here")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    quick = args.quick
    default_variants = ["fp32"] if not cuda else list(DEFAULT_VARIANTS)
    if quick and not cuda:
        default_variants = ["fp32"]
    variants = [Variant(v) for v in (args.variants.split(",") if args.variants
                                     else default_variants)]
    for v in variants:
        if v.name not in ALL_VARIANTS:
            p.error(f"unknown variant {v.name}")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [64, 128] if quick else [256, 512])
    if args.train_sizes == "none":
        train = []
    elif args.train_sizes:
        train = [tuple(int(x) for x in t.lower().split("x")) for t in args.train_sizes.split(",")]
    else:
        train = [(64, 2)] if quick else [(256, 16), (512, 6)]
    settings = Settings(
        device=device,
        variants=variants,
        infer_sizes=sizes,
        train_configs=[(int(s), int(b)) for s, b in train],
        width=args.width or (16 if quick else 64),
        infer_warmup=args.warmup if args.warmup is not None else (1 if quick or not cuda else 10),
        infer_repeats=args.repeats or (2 if quick else (7 if not cuda else 30)),
        train_warmup=args.warmup if args.warmup is not None else (1 if quick or not cuda else 3),
        train_repeats=args.train_repeats or (1 if quick else (3 if not cuda else 5)),
        threads=args.threads,
        parts=set(args.parts.split(",")) - ({"memory"} if args.no_memory else set()),
    )
    unknown = settings.parts - {"inference", "training", "memory"}
    if unknown:
        p.error(f"unknown --parts {', '.join(sorted(unknown))}")
    return args, settings


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads if device.type == "cpu" else torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def cpu_model() -> str:
    """The CPU's model name (shared with app_latency.py)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _row(result: dict[str, Any]) -> str:
    head = (f"{result['kind']:9s} {result['variant']:18s} {result['size']:4d} "
            f"b{result['batch']:<3d}")
    if result["kind"] == "memory":
        pk = result["peak_mib"]
        return (f"{head} pconv {pk['pconv']:10.1f} MiB  plain {pk['plain']:10.1f} MiB  "
                f"ratio {result['ratio']:.3f}")
    med = result["median_s"]
    extra = ""
    if result["kind"] == "training":
        ips = result["images_per_s"]
        extra = (f"  {ips['pconv']:8.2f} vs {ips['plain']:8.2f} img/s"
                 f"  throughput x{result['throughput_ratio']:.3f}")
    elif result.get("ops_per_forward"):
        ops = result["ops_per_forward"]
        extra = f"  ops {ops['pconv']} vs {ops['plain']}"
    line = (f"{head} pconv {med['pconv'] * 1e3:10.2f} ms  plain {med['plain'] * 1e3:10.2f} ms"
            f"  ratio {result['ratio']:.3f} (paired {result['ratio_paired_median']:.3f},"
            f" min {result['ratio_min']:.3f}){extra}")
    if "cpu_time" in result:
        c = result["cpu_time"]
        line += (f"\n{'':27s} CPU time: pconv {c['median_s']['pconv'] * 1e3:10.2f} ms  plain "
                 f"{c['median_s']['plain'] * 1e3:10.2f} ms  ratio {c['ratio']:.3f} "
                 f"(paired {c['ratio_paired_median']:.3f}, min {c['ratio_min']:.3f})")
    return line


def main(argv: list[str] | None = None) -> int:
    args, s = parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return 0
    device = s.device
    if device.type == "cpu":
        torch.set_num_threads(s.threads)
    else:
        # The trainer's settings (core.train): cudnn autotuning, TF32 for fp32 convolutions.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
        torch.backends.cudnn.allow_tf32 = not args.no_tf32
    if args.profile:
        for size in s.infer_sizes:
            profile_inference(size, s.width, device, s.variants[0])
        return 0
    report: dict[str, Any] = {
        "machine": machine_info(device, s.threads),
        "settings": {
            "device": str(device), "variants": [v.name for v in s.variants],
            "infer_sizes": s.infer_sizes, "train_configs": s.train_configs, "width": s.width,
            "infer_warmup": s.infer_warmup, "infer_repeats": s.infer_repeats,
            "train_warmup": s.train_warmup, "train_repeats": s.train_repeats,
            "threads": s.threads, "quick": args.quick, "argv": sys.argv[1:],
            "parts": sorted(s.parts),
            "tf32": device.type == "cuda" and not args.no_tf32,
        },
        "inference": [], "training": [], "memory": [],
    }
    started = time.perf_counter()
    print(f"device {device} ({report['machine'].get('gpu') or report['machine']['cpu']}), "
          f"torch {torch.__version__}, threads {s.threads}", flush=True)

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - started
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1, default=str))

    def attempt(section: str, what: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
        """Run one row; a failure (say, out of memory) is recorded and the run goes on."""
        row_start = time.perf_counter()
        try:
            r = fn()
        except KeyboardInterrupt:  # a time cap (timeout --signal=INT): keep what is done
            print(f"interrupted during {section} {what}; the rows before it are saved",
                  flush=True)
            save()
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, printed, run continues
            r = {**what, "error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"{section:9s} {what}: FAILED {r['error']}", flush=True)
            _release(device)
        else:
            print(_row(r), flush=True)
        r["row_s"] = time.perf_counter() - row_start
        r["at_s"] = time.perf_counter() - started
        report[section].append(r)
        save()

    for variant in s.variants if "inference" in s.parts else []:
        if variant.graph and device.type != "cuda":
            continue
        for size in s.infer_sizes:
            attempt("inference", {"variant": variant.name, "size": size},
                    lambda v=variant, n=size: bench_inference(
                        n, s.width, v, device, s.infer_warmup, s.infer_repeats))
    # (training always upsamples and concatenates: an -up variant's rows would repeat its twin's)
    train_variants = [v for v in s.variants if not v.graph and v.phase_decoder]
    if s.train_configs and train_variants and "training" in s.parts:
        loss_fn = make_loss(device)
        for variant in train_variants:
            for size, batch in s.train_configs:
                attempt("training", {"variant": variant.name, "size": size, "batch": batch},
                        lambda v=variant, n=size, b=batch: bench_training(
                            n, b, s.width, v, device, s.train_warmup, s.train_repeats, loss_fn))
        del loss_fn
        _release(device)
    if s.train_configs and train_variants and "memory" in s.parts:
        for variant in train_variants:
            for size, batch in s.train_configs:
                attempt("memory", {"variant": variant.name, "size": size, "batch": batch},
                        lambda v=variant, n=size, b=batch: bench_memory(
                            n, b, s.width, v, device, s.threads))
    save()
    print(f"done in {time.perf_counter() - started:.1f} s"
          + (f"; results in {args.json}" if args.json else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
