"""Headless training: ``python -m core.train --data DIR --out DIR [...]``.

Runs on CPU, one GPU, or several under ``torchrun --nproc_per_node=N -m core.train``
(DistributedDataParallel; NCCL on GPUs, gloo on CPU; only rank 0 logs and saves).
Checkpoints are written atomically (latest, best-by-validation, and on SIGINT/SIGTERM),
hold the model configuration, and open directly in core.inference and the app.
The trainer only knows the model through build_model, forward(image, valid_mask) and
freeze_encoder_bn; the loss through InpaintingLoss.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from core.atomic import check_writable_folder
from core.checkpoint import (
    CheckpointError,
    checked_config,
    load_checkpoint,
    save_checkpoint,
    save_model_file,
)
from core.losses import TERMS, InpaintingLoss, LossWeights
from core.model import PConvUNet, PConvUNetConfig, build_model

LOGGED = (*TERMS, "total")


class TrainingStopped(Exception):
    """A run that must stop with a message (bad input, NaN loss); exit status in ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TrainConfig:
    data: str = ""
    val_data: str | None = None
    out: str = "runs/pconv"
    image_size: int = 256
    layers: int | None = None  # default: 7 at <= 256, else 8
    width: int = 64
    batch_size: int = 6
    max_steps: int = 1000
    max_minutes: float | None = None
    lr: float | None = None  # default 2e-4, or 5e-5 with --finetune
    lr_schedule: str = "constant"  # or "cosine": to lr_floor over this invocation's budget
    lr_floor: float = 0.0
    lr_warmup: int = 0  # steps of linear warm-up at the start of this invocation
    finetune: bool = False
    resume: str | None = None
    init: str | None = None  # start from these weights (new optimizer)
    device: str = "auto"
    amp: str = "auto"  # bf16 on CUDA, off on CPU
    perceptual: str = "vgg16"
    vgg_weights: str | None = None
    perceptual_weight: float | None = None  # default: paper's 0.05 (VGG), see BACKBONE_WEIGHTS
    style_weight: float | None = None  # default: paper's 120 (VGG), see BACKBONE_WEIGHTS
    backbone_weights: str | None = None
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    save_every: int = 1000
    val_images: int = 2  # validation masks per val image
    workers: int | None = None
    preload: bool = False
    mask_reuse: float = 1.0  # samples per generated mask (core.data.InpaintingDataset)
    hole_weights: tuple[float, ...] | None = None  # per hole-size bucket; None: equal
    mask_dir: str | None = None
    work_size: int = 512
    channels_last: bool = False
    compile: bool = False  # torch.compile the network and the loss for the training steps
    export: str | None = None  # also write fp16 safetensors of the best model here
    fail_at_step: int | None = None  # testing hook: force a NaN loss at this step
    # The settings given on the command line (parse_args); with --resume the others come
    # from the run's checkpoint (RESUMED). None, as for a config built in code: all given.
    given: tuple[str, ...] | None = None

    def resolved_layers(self) -> int:
        return self.layers if self.layers else (7 if self.image_size <= 256 else 8)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (5e-5 if self.finetune else 2e-4)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of training photos (searched recursively)")
    p.add_argument("--val-data", help="folder of validation photos")
    p.add_argument("--out", default=d.out, help="run folder: checkpoints, logs, samples")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--layers", type=int, help="U-Net depth (default 7 at <= 256, else 8)")
    p.add_argument("--width", type=int, default=d.width, help="first-layer channels (paper: 64)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this wall time")
    p.add_argument("--lr", type=float, help="default 2e-4 (5e-5 with --finetune)")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                   help="cosine: decay from --lr to --lr-floor over this run's --max-steps or "
                        "--max-minutes, whichever is nearer")
    p.add_argument("--lr-floor", type=float, default=d.lr_floor,
                   help="learning rate at the end of a cosine schedule (default 0)")
    p.add_argument("--lr-warmup", type=int, default=d.lr_warmup,
                   help="steps of linear warm-up from --lr / N (a fresh Adam state's first "
                        "steps move every weight by the full rate)")
    p.add_argument("--finetune", action="store_true", help="freeze encoder BN, lr 5e-5")
    p.add_argument("--resume",
                   help="continue a run from its checkpoint: step, optimizer, RNG, and the "
                        "run's image size, batch, loss, masks and learning rate unless given "
                        "again (not --lr-warmup); from a run folder's latest.pt, --out defaults to "
                        "that folder")
    p.add_argument("--init", help="start from a checkpoint's weights with a fresh optimizer")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", default=d.amp, choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--perceptual", default=d.perceptual,
                   help="feature extractor for perceptual/style terms: vgg16 (paper), "
                   "effnet-lite0, or none (pixel and TV terms only)")
    p.add_argument("--vgg-weights", help="path of torchvision's vgg16-397923af.pth")
    p.add_argument("--backbone-weights", help="weights file for a non-VGG backbone")
    p.add_argument("--perceptual-weight", type=float,
                   help="weight of the perceptual term (paper: 0.05 with VGG-16)")
    p.add_argument("--style-weight", type=float,
                   help="weight of each style term (paper: 120 with VGG-16)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--val-images", type=int, default=d.val_images,
                   help="seeded validation masks per validation photo")
    p.add_argument("--workers", type=int, help="data loader workers per process")
    p.add_argument("--preload", action="store_true", help="decode all photos once up front")
    p.add_argument("--mask-reuse", type=float, default=d.mask_reuse,
                   help="samples each generated mask serves on average, rotated/flipped anew "
                        "each time (default 1: every mask fresh; >1 feeds a fast GPU)")
    p.add_argument("--hole-weights", type=_weights,
                   help="relative weights of the six hole-size buckets (0.01-0.1 up to "
                        "0.5-0.6) for generated masks, e.g. 1,1,2,2,2,2: holes over 20 %% twice "
                        "as often (default: equal)")
    p.add_argument("--mask-dir", help="folder of mask images (white = hole) instead of generated")
    p.add_argument("--work-size", type=int, default=d.work_size,
                   help="crop size core.inference uses with this model")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network and the loss for the training steps (the "
                        "first steps compile; an error there falls back to eager)")
    p.add_argument("--export", help="also save the best model as fp16 safetensors here")
    p.add_argument("--fail-at-step", type=int, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    for action in p._actions:  # parsed again without defaults: what the user typed
        action.default = argparse.SUPPRESS
    given = tuple(sorted(vars(p.parse_args(argv))))
    cfg = TrainConfig(**{k: v for k, v in vars(ns).items()}, given=given)
    if cfg.resume and "out" not in given:
        resume = Path(cfg.resume)
        if resume.name != "latest.pt":
            # Its folder may hold a later latest.pt (best.pt is older), or be no run folder
            # at all (an export beside the app's model): writing there could lose work.
            p.error(f"--resume {cfg.resume}: give --out (a run continues in its folder "
                    "only from that folder's latest.pt)")
        cfg = replace(cfg, out=str(resume.parent))  # continue in the run's own folder
    # (with --resume checked in Trainer.setup, once the run's own settings are in)
    problem = None if cfg.resume else config_problem(cfg)
    if problem:
        p.error(problem)
    return cfg


def config_problem(cfg: TrainConfig) -> str | None:
    """What is wrong with the values of ``cfg``, in a line, or None."""
    if cfg.batch_size < 1:
        return f"--batch-size must be at least 1, got {cfg.batch_size}"
    if cfg.val_images < 1:
        return f"--val-images must be at least 1, got {cfg.val_images}"
    if not 0.0 <= cfg.lr_floor <= cfg.resolved_lr():
        return f"--lr-floor must be between 0 and the learning rate, got {cfg.lr_floor}"
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        return f"--max-minutes must be positive, got {cfg.max_minutes}"
    if cfg.lr_warmup < 0:
        return f"--lr-warmup must be a number of steps, got {cfg.lr_warmup}"
    if not cfg.mask_reuse >= 1.0:
        return f"--mask-reuse must be at least 1, got {cfg.mask_reuse}"
    if cfg.hole_weights is not None:
        from core.data import bucket_probabilities
        from core.masks import BUCKETS

        if cfg.mask_dir:
            return "--hole-weights applies to generated masks, not to --mask-dir"
        try:
            bucket_probabilities(cfg.hole_weights, len(BUCKETS))
        except (ValueError, TypeError) as exc:
            return f"--hole-weights: {exc}"
    return None


# What a resumed run takes from its checkpoint's train_config unless given again: the settings
# that define what it trains on and how. Resumed without them, a 64 px run went on at the
# default 256 px (exporting another max_hole_radius) and a --perceptual none run would have
# asked for VGG weights. Not taken: where and how long it runs (device, amp, workers, steps,
# minutes, logging, output) and --lr-warmup (warm-up and schedule belong to one invocation).
RESUMED: dict[str, tuple[type, ...]] = {
    "image_size": (int,), "batch_size": (int,), "lr": (float, int), "lr_schedule": (str,),
    "lr_floor": (float, int), "finetune": (bool,), "perceptual": (str,),
    "vgg_weights": (str,), "backbone_weights": (str,), "perceptual_weight": (float, int),
    "style_weight": (float, int), "seed": (int,), "val_images": (int,),
    "mask_reuse": (float, int), "hole_weights": (tuple, list), "mask_dir": (str,),
    "work_size": (int,),
}
_MASK_SOURCE = {"mask_dir", "hole_weights"}  # one of the two, the one given now if any
_LOSS_SETTINGS = {"perceptual_weight", "style_weight", "vgg_weights", "backbone_weights"}


def resumed_config(cfg: TrainConfig, saved: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the RESUMED settings it was not given taken from ``saved`` (a checkpoint's
    train_config), and those that changed as command-line flags, for the log. To change one,
    give it again (the default too: ``--hole-weights 1,1,1,1,1,1``)."""
    given = set(cfg.given) if cfg.given is not None else {f.name for f in fields(cfg)}
    if given & _MASK_SOURCE:
        given |= _MASK_SOURCE
    if "perceptual" in given and cfg.perceptual != saved.get("perceptual", cfg.perceptual):
        given |= _LOSS_SETTINGS  # another backbone: the run's weights were for its own
    changes: dict[str, Any] = {}
    for name, types in RESUMED.items():
        if name in given or name not in saved:
            continue
        value = saved[name]
        if name == "hole_weights" and isinstance(value, types):
            value = tuple(value)
        if (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
                or (name == "hole_weights" and not all(
                    isinstance(v, float | int) and not isinstance(v, bool) for v in value))):
            raise TrainingStopped(f"--resume {cfg.resume}: its setting {name}={value!r} is "
                                  "not valid; give --" + name.replace("_", "-") + " instead")
        if value != getattr(cfg, name):
            changes[name] = value
    if changes.get("lr_schedule", "constant") not in ("constant", "cosine"):
        raise TrainingStopped(f"--resume {cfg.resume}: unknown lr_schedule "
                              f"{changes['lr_schedule']!r}; give --lr-schedule instead")
    flags = []
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):  # only finetune, whose default is off
            flags.append(flag)
        elif isinstance(value, tuple):
            flags.append(f"{flag} {','.join(f'{v:g}' for v in value)}")
        else:
            flags.append(f"{flag} {value}")
    return replace(cfg, **changes), flags


def _flagged(text: str, *sources: tuple[str, str | None]) -> str:
    """A dataset error led by the flag of the folder it is about. The datasets' own errors
    start with that folder; any other is put to the last of ``sources``."""
    for flag, folder in sources:
        if folder and text.startswith(f"{Path(folder)}:"):
            return f"{flag} {text}"
    flag, folder = sources[-1]
    return f"{flag} {folder}: {text}"


def _weights(text: str) -> tuple[float, ...]:
    """'1,1,2,2,2,2' -> (1.0, 1.0, 2.0, 2.0, 2.0, 2.0); argparse reports a bad one."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers") from None


def scheduled_lr(cfg: TrainConfig, progress: float, step: int = 0) -> float:
    """The learning rate for this invocation's step ``step`` (0-based), ``progress`` (0..1)
    into its budget. A fixed budget of GPU minutes is best spent ending at a low rate: the
    constant rate's step noise is what keeps the validation PSNR jumping by a few hundredths
    of a dB between checks. The warm-up matters when ``--init`` starts a fresh Adam state
    on trained weights."""
    base = cfg.resolved_lr()
    if cfg.lr_schedule == "cosine":
        progress = min(max(progress, 0.0), 1.0)
        base = cfg.lr_floor + (base - cfg.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < cfg.lr_warmup:
        base *= (step + 1) / cfg.lr_warmup
    return base


# -- distributed helpers ------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, ddp: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingStopped("--device cuda was requested but no CUDA device is available")
        torch.cuda.set_device(ddp.local_rank)
        return torch.device("cuda", ddp.local_rank)
    return torch.device("cpu")


# -- state ----------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
         npst["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate needs tuples; a checkpoint may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


# Default (perceptual, style) weights per backbone. VGG-16: the paper's. EfficientNet-Lite0
# features are far larger than VGG's pool features (its Grams ~100x), so the paper's weights
# would let the style term swamp the pixel terms; these were calibrated on the val photos so
# that at a classical (OpenCV Telea) fill the perceptual and style terms weigh about as much as
# the weighted hole term (measured there: hole 0.019, perceptual 11.6, style 0.30 per term).
BACKBONE_WEIGHTS = {"vgg16": (0.05, 120.0), "effnet-lite0": (0.01, 0.5)}


def loss_weights(cfg: TrainConfig) -> LossWeights:
    name = cfg.perceptual.lower()
    perceptual, style = BACKBONE_WEIGHTS.get(name, (0.05, 120.0))
    if cfg.perceptual_weight is not None:
        perceptual = cfg.perceptual_weight
    if cfg.style_weight is not None:
        style = cfg.style_weight
    return LossWeights(perceptual=perceptual, style_out=style, style_comp=style)


def build_loss(cfg: TrainConfig, device: torch.device) -> InpaintingLoss:
    """The paper's loss with the chosen feature extractor (or none)."""
    name = cfg.perceptual.lower()
    if name == "none":
        return InpaintingLoss(None, loss_weights(cfg)).to(device)
    from core.backbones import BackboneWeightsError, build_feature_extractor

    weights: str | None = "imagenet"
    if name == "vgg16" and cfg.vgg_weights:
        weights = cfg.vgg_weights
    elif name != "vgg16" and cfg.backbone_weights:
        weights = cfg.backbone_weights
    try:
        extractor = build_feature_extractor(name, weights=weights)
    except BackboneWeightsError as exc:
        raise TrainingStopped(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise TrainingStopped(f"--perceptual {cfg.perceptual}: {exc}") from None
    return InpaintingLoss(extractor, loss_weights(cfg)).to(device)


class Trainer:
    """Owns the loop, checkpoints, logging and validation for one process."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device_kind = (
            "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.ddp = init_distributed(self.device_kind)
        self.device = pick_device(cfg.device, self.ddp)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.out = Path(cfg.out)
        self.stop_signal: int | None = None
        self.step = 0
        self.best_psnr = -math.inf
        self.last_good_step = 0
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "off")
        if amp == "fp16" and self.device.type != "cuda":
            raise TrainingStopped("--amp fp16 needs a CUDA device; use bf16 or off on CPU")
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        if not cfg.data or not Path(cfg.data).is_dir():
            raise TrainingStopped(f"--data {cfg.data}: folder not found")
        if cfg.val_data and not Path(cfg.val_data).is_dir():
            raise TrainingStopped(f"--val-data {cfg.val_data}: folder not found")
        if self.ddp.main:
            try:  # before the model and the data are built, not at the first log line
                check_writable_folder(self.out)
            except OSError as exc:
                raise self._out_error(exc) from None
        payload = None
        if cfg.resume:
            payload = self._load(cfg.resume)
            self.cfg = cfg = self._resumed(payload)
        if cfg.mask_dir and not Path(cfg.mask_dir).is_dir():
            whose = "" if cfg.given is None or "mask_dir" in cfg.given else (
                " (the resumed run's; give --mask-dir or --hole-weights to change it)")
            raise TrainingStopped(f"--mask-dir {cfg.mask_dir}: folder not found{whose}")
        layers = (int(payload["model_config"]["layers"]) if payload is not None
                  else cfg.resolved_layers())
        if cfg.image_size % (2**layers):
            raise TrainingStopped(
                f"--image-size {cfg.image_size} must be a multiple of {2**layers} "
                f"for {layers} levels"
            )
        if cfg.image_size // 2**layers < 2 and cfg.batch_size < 2:
            raise TrainingStopped(
                "a 1x1 bottleneck needs --batch-size >= 2 (BatchNorm); or use fewer --layers"
            )
        seed = cfg.seed + self.ddp.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

        if payload is not None:
            model_config = PConvUNetConfig.from_dict(dict(payload["model_config"]))
        else:
            model_config = PConvUNetConfig(layers=layers, width=cfg.width)
        self.model: PConvUNet = build_model(model_config).to(self.device)
        if cfg.init and not cfg.resume:
            init = self._load(cfg.init)
            if PConvUNetConfig.from_dict(init["model_config"]) != model_config:
                raise TrainingStopped(
                    f"--init {cfg.init}: its model {init['model_config']} differs from "
                    f"--layers {model_config.layers} --width {model_config.width}"
                )
            self.model.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in init["model"].items()},
                strict=True,
            )
        if cfg.finetune:
            self.model.freeze_encoder_bn()
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg, self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.resolved_lr())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        if payload is not None:
            self._restore(payload)
        self.net: torch.nn.Module = self.model
        if self.ddp.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.train_loss: torch.nn.Module = self.loss_fn
        self.eager_net = self.net
        if cfg.compile:
            # Inductor fuses the elementwise work around the convolutions: the mask path,
            # BatchNorm, the loss terms. Only the training steps use it; validation, the
            # checkpoints and the export read the plain model. A compile error falls back to
            # eager rather than losing a lent GPU's minutes: in the forward through torch's
            # suppress_errors, in the backward (compiled at the first backward) in run().
            import torch._dynamo as dynamo

            dynamo.config.suppress_errors = True
            self.net = torch.compile(self.net)
            self.train_loss = torch.compile(self.loss_fn)
        self._build_data()
        if self.ddp.main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                self._open_logs()
            except OSError as exc:
                raise self._out_error(exc) from None

    def _out_error(self, exc: OSError) -> TrainingStopped:
        return TrainingStopped(f"--out {self.out}: cannot write there ({exc.strerror or exc})")

    def _load(self, path: str) -> dict[str, Any]:
        """A checkpoint whose weights are known to match its configuration, or a clear stop."""
        try:
            payload = load_checkpoint(path)
            payload["model_config"] = checked_config(path, payload).to_dict()
        except CheckpointError as exc:
            raise TrainingStopped(str(exc)) from None
        return payload

    def _resumed(self, payload: dict[str, Any]) -> TrainConfig:
        saved = payload.get("train_config")
        saved = saved if isinstance(saved, dict) else {}
        if self.cfg.finetune and not saved.get("finetune", False):
            raise TrainingStopped(
                f"--resume {self.cfg.resume} is a stage-1 run; start fine-tuning from it with "
                f"--init {self.cfg.resume} --finetune"
            )
        if "optimizer" not in payload or "step" not in payload:
            raise TrainingStopped(f"--resume {self.cfg.resume} holds weights only; start a "
                                  f"new run from them with --init {self.cfg.resume}")
        cfg, flags = resumed_config(self.cfg, saved)
        problem = config_problem(cfg)
        if problem:
            theirs = problem != config_problem(self.cfg)  # not the user's own mistake
            raise TrainingStopped(problem + (f" (the setting of --resume {cfg.resume})"
                                             if theirs else ""))
        if self.ddp.main:
            print(f"resuming {cfg.resume} (step {int(payload['step'])}), writing to "
                  f"{self.out}" + (f", with the run's settings: {' '.join(flags)}"
                                   if flags else ""), flush=True)
        return cfg

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"], strict=True)
        if "optimizer" in payload:
            self.optimizer.load_state_dict(payload["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.resolved_lr()
        if "scaler" in payload and payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload.get("step", 0))
        self.last_good_step = self.step
        best = payload.get("best_psnr")  # None when the run had not validated yet
        self.best_psnr = float(best) if best is not None else -math.inf
        if "rng" in payload and self.ddp.world == 1:
            set_rng_state(payload["rng"])

    def _build_data(self) -> None:
        from torch.utils.data import RandomSampler

        from core.data import InpaintingDataset, ValidationSet, make_loader

        cfg = self.cfg
        try:
            self.dataset = InpaintingDataset(
                cfg.data, image_size=cfg.image_size, mask_dir=cfg.mask_dir,
                seed=cfg.seed + 1000 * self.ddp.rank + self.step, preload=cfg.preload,
                mask_reuse=cfg.mask_reuse, hole_weights=cfg.hole_weights,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            raise TrainingStopped(self._data_error(str(exc))) from None
        if len(self.dataset) == 0:
            raise TrainingStopped(f"--data {cfg.data}: no images found")
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + self.ddp.rank + self.step)
        sampler = RandomSampler(
            self.dataset, replacement=True, num_samples=10**9, generator=generator
        )
        workers = cfg.workers if cfg.workers is not None else min(8, os.cpu_count() or 1)
        self.loader = make_loader(
            self.dataset, cfg.batch_size, num_workers=workers, shuffle=False, drop_last=True,
            sampler=sampler,
        )
        self.val_set = None
        if cfg.val_data and self.ddp.main:
            try:
                self.val_set = ValidationSet(
                    cfg.val_data, image_size=cfg.image_size, per_image=cfg.val_images
                )
            except (ValueError, OSError, RuntimeError) as exc:
                raise TrainingStopped(
                    _flagged(str(exc), ("--val-data", cfg.val_data))) from None

    def _data_error(self, text: str) -> str:
        """A training-data error with the flag it is about."""
        return _flagged(text, ("--mask-dir", self.cfg.mask_dir), ("--data", self.cfg.data))

    def _open_logs(self) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out / "tensorboard"))
        except ImportError:
            print("note: tensorboard is not installed; scalars go to log.txt only", file=sys.stderr)
        self.log_file = open(self.out / "log.txt", "a", encoding="utf-8")  # noqa: SIM115

    # -- checkpoints ----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "best_psnr": self.best_psnr if math.isfinite(self.best_psnr) else None,
            "rng": rng_state(),
            "train_config": {k: v for k, v in asdict(self.cfg).items()
                             if v is not None and k != "given"},
            "work_size": self.cfg.work_size,
            "max_hole_radius": max_hole_radius(self.cfg.image_size),
        }

    def save(self, name: str) -> Path:
        path = self.out / name
        try:
            save_checkpoint(path, self.payload())
        except OSError as exc:
            raise TrainingStopped(
                f"cannot write {path}: {exc.strerror or exc}; the last good checkpoint "
                f"(step {self.last_good_step}) is kept in {self.out}",
                code=1,
            ) from None
        self.last_good_step = self.step
        return path

    # -- loop -----------------------------------------------------------------------------
    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the loss terms (TERMS + total) as one tensor, not yet
        checked for NaN/inf (the caller does that, see ``run``)."""
        image = batch["image"].to(self.device, non_blocking=True)
        valid = batch["valid_mask"].to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            output = self.net(image, valid)
            terms = self.train_loss(output, image, valid)
        if self.cfg.fail_at_step is not None and self.step + 1 >= self.cfg.fail_at_step:
            terms["hole"] = terms["hole"] * float("nan")
            terms["total"] = terms["total"] + terms["hole"]
        values = torch.stack([terms[t].detach().float() for t in LOGGED])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return values

    def _train_eagerly(self, exc: Exception) -> None:
        """The first compiled step failed (a backward that would not compile, say): say so in
        one line and go on without torch.compile."""
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        print(f"torch.compile failed at the first step ({type(exc).__name__}: {message}); "
              f"training eagerly", file=sys.stderr, flush=True)
        self.net, self.train_loss = self.eager_net, self.loss_fn
        self.optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def _report_compile(seconds: float) -> None:
        """How much of the first step torch.compile compiled (its forward errors are
        suppressed, see setup): one line, so a GPU session's log shows it. Counted from the
        graphs the backend compiled (AOT autograd), not from the frames traced: a frame can
        be traced and its compilation still fail."""
        from torch._dynamo.utils import counters

        graphs = counters["aot_autograd"]
        ok, total = graphs.get("ok", 0), graphs.get("total", 0)
        verdict = "" if ok else ": running eagerly"
        print(f"torch.compile: first step {seconds:.1f} s (with the first batch); {ok} of "
              f"{total} graph(s) compiled{verdict}", flush=True)

    @staticmethod
    def _stage(values: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Start copying a step's loss terms to the CPU; returns the copy and the CUDA event
        that marks its arrival (None on the CPU, where the values are there already)."""
        if values.device.type != "cuda":
            return values, None
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def _check_staged(self, values: torch.Tensor, event: torch.cuda.Event | None,
                      step: int) -> None:
        """Check a staged step: waits only for that step's copy, not for later queued work."""
        if event is not None:
            event.synchronize()
        self._check_finite(values, step)

    def _check_finite(self, values: torch.Tensor, step: int) -> None:
        """Stop with a one-line error if step ``step``'s loss terms are not all finite."""
        bad = (~torch.isfinite(values)).float()
        if self.ddp.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.any():
            names = [t for t, b in zip(LOGGED, bad.tolist()) if b]
            kept = (
                f"The last good checkpoint (step {self.last_good_step}) is kept in {self.out}."
                if (self.out / "latest.pt").exists() or (self.out / "best.pt").exists()
                else "No checkpoint had been saved yet."
            )
            raise TrainingStopped(
                f"loss term '{names[0]}' became NaN/inf at step {step}; stopped. "
                f"{kept} Try a lower --lr or --amp off.",
                code=1,
            )

    def run(self) -> int:
        from core.data import DatasetError

        cfg = self.cfg
        self._install_signals()
        if self.ddp.main and cfg.init and not cfg.resume and self.val_set:
            # The starting weights compete for best.pt too: a short continued run whose fresh
            # optimiser only perturbs them must not export something worse than it began with.
            self.validate()
        start = time.time()
        start_step = self.step
        if self.ddp.main and cfg.resume and (cfg.lr_schedule != "constant" or cfg.lr_warmup):
            # The schedule spans one invocation's budget; a checkpoint does not carry it on.
            print(f"note: the learning-rate schedule starts again from step {self.step} over "
                  f"this run's budget (--lr {cfg.resolved_lr():g})", file=sys.stderr, flush=True)
        bar = None
        if self.ddp.main:
            eff = cfg.batch_size * self.ddp.world
            print(
                f"training {self.model.config} on {self.device} (amp {self.amp}), "
                f"{len(self.dataset)} photos, batch {cfg.batch_size} x {self.ddp.world} "
                f"process(es) = effective batch {eff}, perceptual {cfg.perceptual}, "
                f"lr {cfg.resolved_lr():g}"
                f"{f' (cosine to {cfg.lr_floor:g})' if cfg.lr_schedule == 'cosine' else ''}"
                f"{', fine-tune' if cfg.finetune else ''}, "
                f"loss weights {self.loss_fn.weights}",
                flush=True,
            )
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self.net.train()
        sums = torch.zeros(len(LOGGED), device=self.device)
        count = 0
        data_iter = iter(self.loader)
        reason = "max steps reached"
        # A step's loss terms are checked for NaN/inf only once the next step has been queued,
        # from a copy that reaches the CPU without a stall (see _stage): reading them on the
        # GPU waits for everything queued, leaving the GPU idle while this process fetches the
        # next batch and launches its kernels. Steps that log, validate or save are checked at
        # once, so nothing non-finite is logged or saved; multi-process runs check every step
        # at once (the check is a collective).
        pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None
        data_wait = 0.0
        interval_start = start  # of the span the next log line's data_wait covers
        try:
            while self.step < cfg.max_steps:
                stop, time_progress = self._budget(start)
                if stop:
                    reason = "time limit reached" if self.stop_signal is None else "signal"
                    break
                done = self.step - start_step
                step_progress = done / max(cfg.max_steps - start_step, 1)
                lr = scheduled_lr(cfg, max(step_progress, time_progress), done)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                fetch = time.perf_counter()
                try:
                    batch = next(data_iter)
                except DatasetError as exc:  # e.g. none of the files decodes, found only now
                    # (from a loader worker, the text ends with the original error's line)
                    line = str(exc).strip().splitlines()[-1]
                    raise TrainingStopped(
                        self._data_error(line.removeprefix("core.data.DatasetError: ")),
                        code=1) from None
                data_wait += time.perf_counter() - fetch
                try:
                    values = self.train_step(batch)
                except Exception as exc:  # noqa: BLE001 - only a first compiled step, retried
                    if self.net is self.eager_net or self.step != start_step:
                        raise
                    self._train_eagerly(exc)
                    values = self.train_step(batch)
                self.step += 1
                first = self.step == start_step + 1
                if first and self.net is not self.eager_net and self.ddp.main:
                    self._report_compile(time.time() - start)
                sums += values
                count += 1
                logs = self.step % cfg.log_every == 0 or self.step == cfg.max_steps
                validates = self.ddp.main and cfg.val_every and self.step % cfg.val_every == 0
                saves = self.ddp.main and cfg.save_every and self.step % cfg.save_every == 0
                if self.ddp.world > 1:
                    self._check_finite(values, self.step)
                else:
                    if pending is not None:
                        self._check_staged(*pending)
                    pending = (*self._stage(values), self.step)
                    if logs or validates or saves:
                        self._check_staged(*pending)
                        pending = None
                if logs:
                    means = dict(zip(LOGGED, (sums / count).tolist()))
                    now = time.time()
                    if self.ddp.main:
                        wait_share = data_wait / max(now - interval_start, 1e-9)
                        self._log_scalars(means, start, start_step, wait_share)
                        if bar is not None:
                            bar.set_postfix(loss=f"{means['total']:.4f}")
                    sums.zero_()
                    count = 0
                    data_wait = 0.0
                    interval_start = now
                if bar is not None:
                    bar.update(1)
                if validates:
                    self.validate()
                    self.net.train()
                if saves:
                    self.save("latest.pt")
            if pending is not None:
                self._check_staged(*pending)
        finally:
            if bar is not None:
                bar.close()
        code = 0
        if self.ddp.main:
            if self.stop_signal is not None:
                path = self.save("latest.pt")
                print(f"interrupted by signal {self.stop_signal}: saved step {self.step} to "
                      f"{path}", flush=True)
                code = 128 + self.stop_signal
            else:
                if self.val_set is not None and (not cfg.val_every or self.step % cfg.val_every):
                    self.validate()
                path = self.save("latest.pt")
                elapsed = time.time() - start
                steps = self.step - start_step
                rate = steps * cfg.batch_size * self.ddp.world / max(elapsed, 1e-9)
                print(f"done ({reason}): step {self.step}, {elapsed / 60:.1f} min, "
                      f"{rate:.1f} images/s; checkpoint {path}", flush=True)
            if cfg.export:
                best = self.out / "best.pt"
                source = best if best.exists() else self.out / "latest.pt"
                model = build_model(self.model.config)
                chosen = load_checkpoint(source)
                model.load_state_dict(chosen["model"])
                save_model_file(cfg.export, model, half=True,
                                extra={"work_size": cfg.work_size,
                                       "max_hole_radius": max_hole_radius(cfg.image_size)})
                psnr = chosen.get("best_psnr") if source == best else None  # best.pt's own
                print(f"exported {source.name} (step {chosen['step']}"
                      f"{f', val PSNR {psnr:.4f}' if psnr is not None else ''}) as fp16 "
                      f"safetensors to {cfg.export}", flush=True)
            self.log_file.close()
            if self.writer is not None:
                self.writer.close()
        elif self.stop_signal is not None:
            code = 128 + self.stop_signal
        return code

    def _budget(self, start: float) -> tuple[bool, float]:
        """Whether to stop now, and the share of ``--max-minutes`` used (0 without one). Under
        DDP both are the maximum over the processes, so every process steps with the same
        learning rate."""
        stop = self.stop_signal is not None
        used = 0.0
        if self.cfg.max_minutes is not None:
            used = (time.time() - start) / 60.0 / max(self.cfg.max_minutes, 1e-9)
            stop = stop or used >= 1.0
        if self.ddp.world > 1:
            flags = torch.tensor([float(stop), used], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop_flag, used = flags.tolist()
            stop = bool(stop_flag)
        return stop, used

    def _log_scalars(self, values: dict[str, float], start: float, start_step: int,
                     wait_share: float) -> None:
        """``wait_share``: the share of the time since the last log line spent waiting for
        batches, so a data-bound run shows itself."""
        elapsed = max(time.time() - start, 1e-9)
        rate = (self.step - start_step) * self.cfg.batch_size * self.ddp.world / elapsed
        line = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        self.log_file.write(
            f"step {self.step} {line} images_per_s={rate:.1f} data_wait={wait_share:.2f} "
            f"lr={self.optimizer.param_groups[0]['lr']:.3g}\n")
        self.log_file.flush()
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"loss/{k}", v, self.step)
            self.writer.add_scalar("speed/images_per_s", rate, self.step)
            self.writer.add_scalar("speed/data_wait_share", wait_share, self.step)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of the composite on the fixed validation set; keeps best.pt."""
        from core.metrics import psnr, ssim

        assert self.val_set is not None
        self.model.eval()
        psnrs, ssims = [], []
        grid_rows = []
        for i in range(0, len(self.val_set), 8):
            items = [self.val_set[j] for j in range(i, min(i + 8, len(self.val_set)))]
            image = torch.stack([it["image"] for it in items]).to(self.device)
            valid = torch.stack([it["valid_mask"] for it in items]).to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                raw = self.model(image, valid).float().clamp(0, 1)
            comp = valid * image + (1 - valid) * raw
            for b in range(image.shape[0]):
                gt8 = _to_uint8(image[b])
                comp8 = _to_uint8(comp[b])
                psnrs.append(psnr(comp8, gt8))
                ssims.append(ssim(comp8, gt8))
                if len(grid_rows) < 6:
                    grid_rows.append(
                        [_to_uint8(image[b] * valid[b]), _to_uint8(valid[b].expand(3, -1, -1)),
                         _to_uint8(raw[b]), comp8, gt8]
                    )
        finite = [p for p in psnrs if math.isfinite(p)]
        result = {
            "psnr": float(np.mean(finite)) if finite else float("inf"),
            "ssim": float(np.mean(ssims)),
        }
        if self.writer is not None:
            self.writer.add_scalar("val/psnr", result["psnr"], self.step)
            self.writer.add_scalar("val/ssim", result["ssim"], self.step)
        self.log_file.write(
            f"val step {self.step} psnr={result['psnr']:.3f} ssim={result['ssim']:.4f}\n"
        )
        self.log_file.flush()
        _save_grid(self.out / "samples" / f"step_{self.step:07d}.png", grid_rows)
        print(f"\nvalidation at step {self.step}: PSNR {result['psnr']:.2f} dB, "
              f"SSIM {result['ssim']:.4f}", flush=True)
        if result["psnr"] > self.best_psnr:
            self.best_psnr = result["psnr"]
            self.save("best.pt")
        return result


def max_hole_radius(image_size: int) -> int:
    """Thickest hole (chessboard radius) inference should feed a model trained at this size.

    Generated training holes at 256 px have radii of about 5-28 px (median 6 in the smallest
    bucket, 24 in the largest). On the val photos at 512 px, version 1 (one pass) scored best at
    16-24 (of 12, 16, 20, 24 and no limit), version 2 at 20 (of 12, 16, 20); version 3 with its
    mirrored passes at 32 (of 20, 24, 28, 32, 40 and no limit; resources/MODEL_CARD.md): the
    passes remove the spots that made thick holes better run shrunk. With the edge band (the
    rim of a shrunk crop's holes filled from a run at the working scale) version 3 scores best
    at 24 (of 16, 20, 24, 28, 32; two mask seeds). See core.inference.Inpainter.
    """
    return max(4, round(image_size * 24 / 256))


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _save_grid(path: Path, rows: list[list[np.ndarray]]) -> None:
    """Rows of (input, mask, raw, composite, ground truth) tiles, saved atomically."""
    if not rows:
        return
    from PIL import Image

    from core.imageio import atomic_save_pil

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    atomic_save_pil(Image.fromarray(grid), path, format="PNG")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    trainer = None
    try:
        trainer = Trainer(cfg)
        trainer.setup()
        code = trainer.run()
        if trainer.ddp.world > 1:
            # The main process saves and exports after the loop; a process that tore its
            # process group down meanwhile was seen to abort ("terminate called without an
            # active exception") under load, failing the run: tear down together.
            dist.barrier()
    except TrainingStopped as exc:
        if trainer is None or trainer.ddp.main:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)


if __name__ == "__main__":
    main()
