#!/usr/bin/env bash
# Here, after the device calls: join the pieces from every call's files folder, in name order,
# and unpack into a run folder.   scripts/gpu_unpack.sh runs/gpuN FILES_DIR [FILES_DIR ...]
set -euo pipefail
dest=$1; shift
mkdir -p "$dest"
find "$@" -name 'results.tar.part-*' -printf '%f %p\n' | sort | cut -d' ' -f2- | xargs cat \
  | tar -x -C "$dest"
ls -la "$dest"/*
