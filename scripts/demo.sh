#!/usr/bin/env bash
# The main job on the embedded default model (EfficientNet-Lite0, ImageNet weights):
# its layer inventory with measured receptive fields, a classification of the photos that
# ship with scikit-image, and a feature-visualization atlas of all 16 blocks (4 units each,
# checked against natural crops; resumable). Creates .venv on a fresh clone.
#   ./scripts/demo.sh [--device auto|cpu|cuda] [--quiet]    (output: out/demo/)
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
out="${INTERP_DEMO_OUT:-out/demo}"
mkdir -p "$out/layers" "$out/classify" "$out/atlas"
echo "== layer inventory of efficientnet_lite0" >&2
interp layers efficientnet_lite0 --out "$out/layers" "$@" > /dev/null
echo "== classifying the skimage.data photos" >&2
interp classify efficientnet_lite0 --photos --top 5 --out "$out/classify" "$@" > "$out/classify/predictions.txt"
head -n 12 "$out/classify/predictions.txt"
echo "== feature-visualization atlas (16 blocks x 4 units; about a minute on 2 CPU cores)" >&2
interp atlas efficientnet_lite0 --per-layer 4 --steps 128 --size 96 --out "$out/atlas" "$@" \
  > "$out/atlas/summary.txt"
tail -n 1 "$out/atlas/summary.txt"
cat <<MSG

demo output is in $root/$out:
  layers/layers.txt        every module: type, output shape, receptive field, stride
  layers/layers.json       the same as JSON, with the model summary
  layers/layers.png        receptive field, stride and width by depth
  classify/predictions.png the photos with their top-3 ImageNet classes
  classify/predictions.json, predictions.txt
  atlas/overview.png       what units of each block respond to, early (top) to late (bottom)
  atlas/<block>/grid.png   each block's units: value reached vs. best natural crop
  atlas/index.json         every unit's objective value and natural-crop maximum
MSG
