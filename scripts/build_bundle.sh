#!/usr/bin/env bash
# Build the one-folder PyInstaller bundle of the desktop app (dist/pconv-studio/) and check it.
#
#   bash scripts/build_bundle.sh [--archive]
#
# 1. makes its own build environment, build/bundle-venv (never the dev .venv), with a CPU build
#    of torch and only what the app needs at run time, plus PyInstaller;
# 2. runs PyInstaller on app.spec;
# 3. checks the bundle: nothing of the trainer, torchvision, tensorboard, tqdm or pytest in it,
#    the frozen `pconv-studio --self-test` passes offscreen, and it is under 1 GB;
# 4. prints its size (and, with --archive, packs dist/pconv-studio-VERSION-linux-ARCH.tar.gz).
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0: a CPU build must
# be what pip finds for it; a CUDA build is refused), BUNDLE_VENV (default build/bundle-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
venv=${BUNDLE_VENV:-build/bundle-venv}
workpath=build/pyinstaller
bundle=dist/pconv-studio
max_bytes=1000000000   # the target: under 1 GB unpacked
archive=0
for arg in "$@"; do
  case "$arg" in
    --archive) archive=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build_bundle.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
stage() { echo "== $1 ($(( $(date +%s) - start )) s)"; }
fail() { echo "build_bundle.sh: FAILED: $*" >&2; exit 1; }

[ -f resources/model/pconv_unet.safetensors ] \
  || fail "resources/model/pconv_unet.safetensors is missing: the bundle would ship no model"

stage "build environment $venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q)
# torch first and alone, so that nothing else can pull in another (CUDA) build of it ...
"${pip[@]}" "$torch_spec"
torch_version=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
torch_cuda=$("$venv/bin/python" -c "import torch; print(torch.version.cuda or '')")
[ -z "$torch_cuda" ] || fail "torch $torch_version is a CUDA build (CUDA $torch_cuda); the \
bundle needs a CPU build (set TORCH_SPEC, e.g. to a local torch-*+cpu wheel)"
# ... then the rest with torch held where it is. Never torchvision, the trainer's packages or
# the project's extras: PyInstaller collects whatever it finds importable.
constraints="$venv/constraints.txt"
echo "torch==$torch_version" > "$constraints"
"${pip[@]}" -c "$constraints" "numpy>=1.26" "pillow>=10.0" "safetensors>=0.4" \
  "PySide6-Essentials>=6.6" "qimage2ndarray>=1.10" "pyinstaller>=6.11,<7"
for unwanted in torchvision tensorboard tqdm pytest; do
  if "$venv/bin/python" -m pip show -q "$unwanted" >/dev/null 2>&1; then
    fail "$unwanted is installed in $venv; delete $venv and run again"
  fi
done
"$venv/bin/python" -c "import torch, PySide6, PyInstaller; print('torch', torch.__version__, \
'| PySide6', PySide6.__version__, '| PyInstaller', PyInstaller.__version__)"

stage "PyInstaller app.spec"
# The project itself is found through the spec's pathex (the repository root), so only the
# packages the app imports are collected, never the trainer.
rm -rf "$bundle"
set +e
"$venv/bin/python" -m PyInstaller --noconfirm --log-level WARN --workpath "$workpath" \
  --distpath dist app.spec 2>&1 | grep -v -E "DeprecationWarning|^  __import__\(name\)$"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || fail "PyInstaller exited with status $status"
[ -x "$bundle/pconv-studio" ] || fail "PyInstaller did not produce $bundle/pconv-studio"

stage "checking the contents"
found=$(find "$bundle" \( -iname "torchvision*" -o -iname "tensorboard*" -o -iname "tqdm*" \
  -o -iname "pytest*" -o -iname "_pytest" \) -print | head -5)
[ -z "$found" ] || fail "the bundle holds files it must not: $found"
pyz_toc="$workpath/app/PYZ-00.toc"
if [ -f "$pyz_toc" ]; then
  found=$(grep -o -E "\('(torchvision|tensorboard|tqdm|pytest|_pytest|core\.train|core\.losses|core\.backbones)(\.[A-Za-z0-9_.]*)?'" \
    "$pyz_toc" | head -5 || true)
  [ -z "$found" ] || fail "the bundle's Python archive holds modules it must not: $found"
fi

stage "self-test of the frozen app (offscreen)"
if ! QT_QPA_PLATFORM=offscreen timeout 900 "$bundle/pconv-studio" --self-test; then
  fail "the frozen app's --self-test failed"
fi

size_bytes=$(du -sb "$bundle" | cut -f1)
echo "bundle: $bundle $(du -sh "$bundle" | cut -f1) ($size_bytes bytes, $(find "$bundle" -type f | wc -l) files)"
[ "$size_bytes" -lt "$max_bytes" ] || fail "the bundle is $size_bytes bytes, over the 1 GB target"

if [ "$archive" = 1 ]; then
  stage "archive"
  version=$("$venv/bin/python" -c "import sys; sys.path.insert(0, '.'); import core; print(core.__version__)")
  tarball="dist/pconv-studio-$version-linux-$(uname -m).tar.gz"
  tar -C dist -czf "$tarball" pconv-studio
  echo "archive: $tarball $(du -sh "$tarball" | cut -f1)"
fi
echo "bundle built and checked in $(( $(date +%s) - start )) s"
