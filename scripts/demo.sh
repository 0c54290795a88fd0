#!/usr/bin/env bash
# The whole path on the built-in synthetic data:
#   generate -> preprocess -> train -> evaluate -> export -> index -> serve -> one HTTP query.
# Usage: scripts/demo.sh PYTHON OUT_DIR NUM_EVENTS
set -euo pipefail
PY=${1:-python}
OUT=${2:-demo_out}
EVENTS=${3:-300000}
EPOCHS=${DEMO_EPOCHS:-3}
PORT=${DEMO_PORT:-8500}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== 1/7 generate $EVENTS synthetic Taobao-schema events"
"$PY" -m launch.generate --output_dir "$OUT/raw" --num_events "$EVENTS" --num_items 5000
echo "== 2/7 preprocess (Beam, DirectRunner)"
"$PY" -m launch.preprocess --input "$OUT/raw/events.csv" --item_table "$OUT/raw/items.csv" \
  --user_table "$OUT/raw/users.csv" --output_dir "$OUT/data" 2>"$OUT/preprocess.log"
echo "== 3/7 train (the default preset and variant, $EPOCHS epochs)"
"$PY" -m launch.train --data_dir "$OUT/data" --model_dir "$OUT/model" \
  --epochs "$EPOCHS" 2>"$OUT/train.log" >"$OUT/train.out"
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("loss per epoch:", [round(x, 3) for x in r["history"]["loss"]], "| %.0f s" % r["train_seconds"])' "$OUT/model/train_summary.json"
echo "== 4/7 evaluate (exact top-K over all items)"
"$PY" -m launch.evaluate --data_dir "$OUT/data" --model_dir "$OUT/model" 2>"$OUT/evaluate.log"
echo "== 5/7 export the user tower and the item table"
"$PY" -m launch.export --data_dir "$OUT/data" --model_dir "$OUT/model" \
  --export_dir "$OUT/export" 2>"$OUT/export.log"
echo "== 6/7 build the HNSW index"
"$PY" -m launch.build_index --export_dir "$OUT/export" --kind hnsw --recall_k 100 2>"$OUT/index.log"
echo "== 7/7 serve on 127.0.0.1:$PORT and answer one query"
"$PY" -m launch.serve --export_dir "$OUT/export" --index hnsw --port "$PORT" 2>"$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
"$PY" -m launch.query --url "http://127.0.0.1:$PORT" --events_csv "$OUT/raw/events.csv" \
  --top_n 10 2>"$OUT/query.log"
