#!/usr/bin/env bash
# Fetch the full-size originals of the eight validation photos that are 1920 px or larger
# (shared/data/photos/val holds them shrunk to 768 px; see its SOURCES.md) from their Debian
# packages, for docs/evaluation/large_photos/large_eval.py: the only ground truth here for how
# core.inference fills holes in large photos. Needs apt-get (Debian bookworm sources) and
# dpkg; ~190 MB are downloaded, 6.5 MB kept.
#   scripts/fetch_val_originals.sh [DEST]      (default runs/val_originals, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-runs/val_originals}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
packages="lxqt-themes mate-backgrounds lomiri-wallpapers-16.04 plasma-workspace-wallpapers"
(cd "$work" && apt-get download $packages >/dev/null) || {
  echo "error: apt-get download failed for: $packages" >&2; exit 1; }
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/x"; done
mkdir -p "$dest"
while read -r name path; do
  if [ ! -f "$work/x/$path" ]; then
    echo "error: $path is not in the downloaded packages (a newer package version?)" >&2
    exit 1
  fi
  cp "$work/x/$path" "$dest/$name"
done <<'LIST'
lomiri-bridge.jpg usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg
lomiri-friends.jpg usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg
lxqt-after-the-rain.jpg usr/share/lxqt/wallpapers/after-the-rain.jpg
lxqt-butterfly.png usr/share/lxqt/wallpapers/butterfly.png
mate-rain-drops.jpg usr/share/backgrounds/mate/nature/RainDrops.jpg
mate-yellow-flower.jpg usr/share/backgrounds/mate/nature/YellowFlower.jpg
plasma-kite.jpg usr/share/wallpapers/Kite/contents/images/2560x1600.jpg
plasma-path.jpg usr/share/wallpapers/Path/contents/images/2560x1600.jpg
LIST
echo "$(ls "$dest" | wc -l) photos in $dest"
