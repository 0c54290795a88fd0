#!/usr/bin/env bash
# The whole path on the built-in synthetic data: generate -> preprocess -> train -> evaluate.
# Usage: scripts/demo.sh PYTHON OUT_DIR NUM_EVENTS
set -euo pipefail
PY=${1:-python}
OUT=${2:-demo_out}
EVENTS=${3:-300000}
EPOCHS=${DEMO_EPOCHS:-3}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== 1/4 generate $EVENTS synthetic Taobao-schema events"
"$PY" -m launch.generate --output_dir "$OUT/raw" --num_events "$EVENTS" --num_items 5000
echo "== 2/4 preprocess (Beam, DirectRunner)"
"$PY" -m launch.preprocess --input "$OUT/raw/events.csv" --item_table "$OUT/raw/items.csv" \
  --user_table "$OUT/raw/users.csv" --output_dir "$OUT/data" 2>"$OUT/preprocess.log"
echo "== 3/4 train (PSDMMAL-N, paper offline preset, $EPOCHS epochs)"
"$PY" -m launch.train --data_dir "$OUT/data" --model_dir "$OUT/model" \
  --preset paper_offline --variant PSDMMAL-N --epochs "$EPOCHS" 2>"$OUT/train.log" | tail -n 4
echo "== 4/4 evaluate (exact top-K over all items)"
"$PY" -m launch.evaluate --data_dir "$OUT/data" --model_dir "$OUT/model" 2>"$OUT/evaluate.log"
