#!/usr/bin/env bash
# The main job: the question "why do units specialize?" answered for one pretrained and one
# fresh model, as two static explorer sites (index, a page per layer, a page per rendered
# unit; a sample of units per layer on CPU).
#   1. efficientnet_lite0 (embedded ImageNet weights): layer inventory, classification of the
#      photos inside scikit-image, then `interp report` (atlas, dataset examples, hierarchy
#      check against random-init controls, unit cards);
#   2. a PartsWorld CNN: the experiments on why units specialize (`interp experiment all
#      --light`, which trains the networks it needs; the light preset runs transfer's digits
#      question alone, with one seed: the full transfer takes 17.5 min on its own), then
#      `interp report` of one of those networks with the experiments' answers on its page.
# Every stage is cached: a rerun reuses finished work. Creates .venv on a fresh clone.
#   ./scripts/demo.sh [--quick] [--device auto|cpu|cuda] [--quiet]     (output: out/demo/)
# Default: 18.5 minutes on 2 CPU cores once installed (1,109 s, measured 2026-12-07 from a fresh
# clone, empty output folder and control cache: Lite0 report 9.7 min, experiments 7.0 (transfer's
# light preset 50 s), PartsWorld report 1.8; the hierarchy's controls are then cached per
# architecture in ~/.cache/interp);
# --quick (tiny settings, a smoke test): 2-4 minutes.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
quick=0
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1; else args+=("$a"); fi
done
out="${INTERP_DEMO_OUT:-out/demo}"
[ "$quick" = 1 ] && out="${INTERP_DEMO_OUT:-out/demo-quick}"
mkdir -p "$out/classify"
report_flags=()
[ "$quick" = 1 ] && report_flags+=(--quick)

echo "== efficientnet_lite0: classifying the skimage.data photos" >&2
interp classify efficientnet_lite0 --photos --top 5 --out "$out/classify" "${args[@]}" \
  > "$out/classify/predictions.txt"
head -n 6 "$out/classify/predictions.txt"

echo "== efficientnet_lite0: report and explorer (atlas, examples, hierarchy check, unit pages)" >&2
interp report efficientnet_lite0 --out "$out/lite0" "${report_flags[@]}" "${args[@]}"

echo "== PartsWorld CNN: why units specialize (experiments; trains the networks it needs)" >&2
if [ "$quick" = 1 ]; then
  pw="$out/pw-run"
  if [ ! -f "$pw/metrics.json" ] || ! grep -q test_acc "$pw/metrics.json"; then
    resume=()
    [ -f "$pw/checkpoint.pt" ] && resume=(--resume)
    interp train --arch simplecnn --data partsworld --n 600 --size 32 --epochs 2 --width 0.5 \
      --out "$pw" "${resume[@]}" "${args[@]}" > /dev/null
  fi
  interp experiment multiclass-lab --seeds 20 --out "$out/experiments/multiclass-lab" \
    "${args[@]}" > /dev/null
  experiments=()
else
  interp experiment all --light --out "$out/experiments" "${args[@]}" > "$out/experiments.txt"
  pw="$out/experiments/runs/pw-48px-n6000-e6-w0.5-s0"
  experiments=(--experiments "$out/experiments")
fi

echo "== PartsWorld CNN: report and explorer" >&2
interp report "$pw" --out "$out/pw" "${experiments[@]}" "${report_flags[@]}" "${args[@]}"

cat <<MSG

demo output is in $(cd "$out" && pwd):
  lite0/index.html         the explorer of EfficientNet-Lite0 (open it in a browser)
  pw/index.html            the explorer of the PartsWorld CNN$([ "$quick" = 1 ] || echo ", with the experiments' answers")
                           (layers/: a page per layer, every unit a tile; units/: a page per
                           rendered unit; search on every page)
  classify/predictions.txt the photos' top-5 ImageNet classes
  experiments/             $([ "$quick" = 1 ] && echo "the course lab (quick)" || echo "summary.md: the answers to the question, with figures")
MSG
