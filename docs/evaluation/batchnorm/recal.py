"""Experiment: re-estimate the shipped model's BatchNorm running statistics (no gradients).

Training leaves running statistics that are an exponential average (momentum 0.1) over its
last batches; here they are reset and replaced by the plain average over BATCHES batches of
training crops with generated masks (all six buckets, or only those over 20 %), in train
mode as in training. The result is saved with the shipped model's inference settings and
scored by core.evaluate (summary_seed0.json; resources/MODEL_CARD.md, Inference).

    PYTHONPATH=. python docs/evaluation/batchnorm/recal.py OUT.safetensors 150 32 256 all 123 bf16
    PYTHONPATH=. python docs/evaluation/batchnorm/recal.py OUT.safetensors 100 32 256 big 123 bf16
    python -m core.evaluate --images ../shared/data/photos/val --size 512 --precision bf16 \
        --examples 0 --checkpoint OUT.safetensors --out OUT_DIR

usage: recal.py OUT.safetensors BATCHES BATCH SIZE [all|big] [seed] [fp32|bf16]
"""
from __future__ import annotations

import sys
import time

import torch

from core.checkpoint import model_from_checkpoint, save_model_file
from core.data import InpaintingDataset
from core.masks import BUCKETS
from core.resources import shipped_model_path

out, batches, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
which = sys.argv[5] if len(sys.argv) > 5 else "all"
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 123
amp = sys.argv[7] if len(sys.argv) > 7 else "fp32"
torch.set_num_threads(2)
torch.manual_seed(seed)
model, payload = model_from_checkpoint(shipped_model_path())
extra = {k: v for k, v in payload.items() if k not in ("model", "model_config", "format")}
before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
buckets = BUCKETS if which == "all" else [b for b in BUCKETS if b[0] >= 0.2]
ds = InpaintingDataset("../shared/data/photos/train", image_size=size, seed=seed,
                       hole_buckets=buckets)
gen = torch.Generator().manual_seed(seed)
model.train()
t0 = time.time()
with torch.no_grad():
    for b in range(batches):
        idx = torch.randint(len(ds), (batch,), generator=gen).tolist()
        samples = [ds[i] for i in idx]
        image = torch.stack([s["image"] for s in samples])
        valid = torch.stack([s["valid_mask"] for s in samples])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            model(image, valid)
        if b % 10 == 0:
            print(f"batch {b} {time.time() - t0:.0f}s", flush=True)
model.eval()
after = {k: v for k, v in model.state_dict().items() if "running" in k}
for k in list(before)[:: max(1, len(before) // 8)]:
    if k.endswith("running_mean") or k.endswith("running_var"):
        d = (after[k] - before[k]).abs().mean() / before[k].abs().mean().clamp_min(1e-8)
        print(f"{k}: mean rel change {float(d):.3f}")
save_model_file(out, model, half=True, extra=extra)
print("saved", out, f"{time.time() - t0:.0f}s")
