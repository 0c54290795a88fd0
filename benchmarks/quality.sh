#!/usr/bin/env bash
# The quality table of docs/results.md: prepare.py splits, then the default bench_split on each
# (no flags but the seed), test split scored once. Usage: benchmarks/quality.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-bench_out}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT"
D=$SHARED/data
python3 "$SHARED/bench/prepare.py" --format s3rec --input "$D/amazon_beauty/Beauty.txt" \
  --items "$D/amazon_beauty/Beauty_item2attributes.json" --out "$OUT/beauty_loo"
python3 "$SHARED/bench/prepare.py" --format movielens --input "$D/movielens_small/ratings.csv" \
  --items "$D/movielens_small/movies.csv" --out "$OUT/ml_loo"
python3 "$SHARED/bench/prepare.py" --format taobao --input "$D/taobao_sample/UserBehavior.csv" \
  --protocol time --min-item-count 1 --out "$OUT/taobao_time"
for seed in 0 1 2; do
  "$PY" -m launch.bench_split --split "$OUT/beauty_loo" --output_dir "$OUT/run_beauty_seed$seed" \
    --override "train.seed=$seed"
  "$PY" -m launch.bench_split --split "$OUT/ml_loo" --output_dir "$OUT/run_ml_seed$seed" \
    --override "train.seed=$seed"
done
"$PY" -m launch.bench_split --split "$OUT/taobao_time" --output_dir "$OUT/run_taobao"
"$PY" benchmarks/quality_table.py "$OUT"/run_*
