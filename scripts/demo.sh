#!/usr/bin/env bash
# The main job on the embedded default model (EfficientNet-Lite0, ImageNet weights):
# its layer inventory with measured receptive fields, a classification of the photos that
# ship with scikit-image, and a feature-visualization atlas of all 16 blocks (4 units each,
# checked against natural crops; resumable) and the hierarchy check (edges -> parts ->
# objects per layer against a random-init control, on PartsWorld). Creates .venv on a fresh
# clone.
#   ./scripts/demo.sh [--device auto|cpu|cuda] [--quiet]    (output: out/demo/)
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
out="${INTERP_DEMO_OUT:-out/demo}"
mkdir -p "$out/layers" "$out/classify" "$out/atlas" "$out/hierarchy"
echo "== layer inventory of efficientnet_lite0" >&2
interp layers efficientnet_lite0 --out "$out/layers" "$@" > /dev/null
echo "== classifying the skimage.data photos" >&2
interp classify efficientnet_lite0 --photos --top 5 --out "$out/classify" "$@" > "$out/classify/predictions.txt"
head -n 12 "$out/classify/predictions.txt"
echo "== feature-visualization atlas (16 blocks x 4 units; about a minute on 2 CPU cores)" >&2
interp atlas efficientnet_lite0 --per-layer 4 --steps 128 --size 96 --out "$out/atlas" "$@" \
  > "$out/atlas/summary.txt"
tail -n 1 "$out/atlas/summary.txt"
echo "== hierarchy check against two random-init controls (about 4 minutes on 2 CPU cores)" >&2
interp hierarchy efficientnet_lite0 --data partsworld --out "$out/hierarchy" "$@" \
  > "$out/hierarchy/summary.txt"
grep '^verdict' "$out/hierarchy/summary.txt"
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
  hierarchy/profile.png    edge units and colour/edge/part/object detectors per layer,
                           model vs. random-init control, with the verdict
  hierarchy/osi.png, detectors.png, first_conv.png, hierarchy.json, summary.txt
MSG
