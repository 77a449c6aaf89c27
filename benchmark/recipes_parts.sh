#!/usr/bin/env bash
# The committed recipe tables (benchmark/results/recipes_{4x,16x,64x}) as 25 single-thread processes
# (8 trainings, then the rows split by target, seed set and row group), joined by recipes.py --merge.
# Usage: benchmark/recipes_parts.sh [WORKDIR]   (QUICK=1: the same split at --quick sizes)
# Needs about 25 free cores to finish in the 7.5 minutes measured on 16 cores; fewer cores take longer.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/dev${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
R=${1:-benchmark/results/tmp/recipes_parts}; mkdir -p "$R/logs"; : > "$R/logs/done.txt"
PY="${PYBIN:-.host/venv/bin/python} benchmark/recipes.py --threads 1 ${QUICK:+--quick}"
j() { local n=$1; shift; $PY "$@" --out "$R/$n" > "$R/logs/$n.log" 2>&1; echo "$n rc=$?" >> "$R/logs/done.txt"; }
for r in gt/K gt/all gen/K gen/all; do rn=${r/\//_}
  j "train_$rn" --targets --recipes "$r" --save-sets "$R/sets_$rn" &
  j "train_off_$rn" --targets --recipes --official "$r" --save-sets "$R/sets_off_$rn" &
done
j b4x --targets 4x --recipes --groups baselines &
for s in 0 1000 2000; do
  j "b16x_$s" --targets 16x --recipes --groups baselines schedules --seed-sets $s &
  j "b64x_$s" --targets 64x --samples 8 --recipes --groups baselines --seed-sets $s &
  j "k64x_$s" --targets 64x --samples 8 --recipes --groups schedules --seed-sets $s &
done
while [ "$(grep -c '^train' "$R/logs/done.txt")" -lt 8 ]; do sleep 5; done
L="$R/sets_gt_K $R/sets_gt_all $R/sets_gen_K $R/sets_gen_all"
O="$R/sets_off_gt_K $R/sets_off_gt_all $R/sets_off_gen_K $R/sets_off_gen_all"
j t4x --targets 4x --recipes --groups trained --load-sets $L $O &
for s in 0 1000 2000; do
  j "t16x_$s" --targets 16x --recipes --groups trained --load-sets $L $O --seed-sets $s &
  j "t64x_$s" --targets 64x --samples 8 --recipes --groups trained --load-sets $L --seed-sets $s &
done
wait
cat "$R/logs/done.txt"
$PY --merge "$R/b4x" "$R/t4x" --out "$R/recipes_4x" > /dev/null
$PY --merge "$R"/b16x_* "$R"/t16x_* --out "$R/recipes_16x" > /dev/null
$PY --merge "$R"/b64x_* "$R"/k64x_* "$R"/t64x_* --out "$R/recipes_64x" > /dev/null
echo "tables: $R/recipes_{4x,16x,64x}/table.md"
