#!/usr/bin/env bash
# One command on a bare GPU machine (docs/PERFORMANCE.md prepares .gpu/ beside the repository): the suite's
# inference rows with --profile and its per-step upsampler overhead (pivot pass vs modules), then the user path
# (benchmark/user_path.py) in the time left. Everything goes under $OUT, seven files at most:
# suite/{table.md,results.json,profile.txt}, user/{table.md,results.json,user_path.log}, gpu_run.log.
# Settings (environment, defaults in brackets):
#   GPU_RUN_SECONDS [470]  the whole run's budget; SUITE_MINUTES [2.8] the suite's (0: no suite);
#   SUITE_FAMILIES [sd15]; SUITE_SECTIONS [inference,overhead]; SUITE_ROWS [direct,tf_cascade,t_official,t_light];
#   SUITE_PROFILE [1] (0: no --profile); SUITE_ARGS [] more gpu_suite.py arguments (e.g. --steps 10);
#   USER_CONFIGS [default,8gb,12gb,lowvram] (empty: no user path); USER_ARGS [] more user_path.py arguments.
# A second, shorter run (same machine: the built checkpoints in /tmp are reused), e.g.
#   SUITE_FAMILIES=sdxl SUITE_ROWS=direct,tf_cascade,t_official SUITE_SECTIONS=inference SUITE_PROFILE=0 \
#   SUITE_MINUTES=3.0 USER_CONFIGS=12gb,lowvram GPU_RUN_SECONDS=330 bash dev/gpu_run.sh
# CPU check (smoke sizes, no GPU): GPU_RUN_SMOKE=1 OUT=/tmp/x COMFYUI_PATH=... dev/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
TOTAL=${GPU_RUN_SECONDS:-470}
SUITE_MINUTES=${SUITE_MINUTES:-2.8}
SUITE_FAMILIES=${SUITE_FAMILIES:-sd15}
SUITE_ROWS=${SUITE_ROWS:-direct,tf_cascade,t_official,t_light}
USER_CONFIGS=${USER_CONFIGS-default,8gb,12gb,lowvram}
SMOKE=${GPU_RUN_SMOKE:-}
mkdir -p "$OUT/suite" "$OUT/user"
LOG="$OUT/gpu_run.log"
exec > >(tee -a "$LOG") 2>&1
start=$SECONDS
say() { echo "[gpu_run $((SECONDS - start))s] $*"; }

if [ -z "$SMOKE" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/dev COMFYUI_PATH=$PWD/.gpu/ComfyUI
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
fi
export PYTHONUNBUFFERED=1
export SELF_CASCADE_COMMIT=${SELF_CASCADE_COMMIT:-$(cat .gpu/COMMIT 2>/dev/null || echo unknown)}
say "commit $SELF_CASCADE_COMMIT, budget ${TOTAL}s"

if [ "$SUITE_MINUTES" != "0" ]; then
  suite_args=(--sections "${SUITE_SECTIONS:-inference,overhead}" --families "$SUITE_FAMILIES" --rows "$SUITE_ROWS"
              --budget-minutes "$SUITE_MINUTES" --out "$OUT/suite")
  [ "${SUITE_PROFILE:-1}" != "0" ] && suite_args+=(--profile)
  [ -n "$SMOKE" ] && suite_args+=(--smoke --keep-going)
  # shellcheck disable=SC2206  # SUITE_ARGS: several words on purpose
  suite_args+=(${SUITE_ARGS:-})
  say "suite: ${suite_args[*]}"
  timeout --signal=INT "$(python3 -c "print(int(float('$SUITE_MINUTES') * 60 + 60))")" \
    python3 benchmark/gpu_suite.py "${suite_args[@]}" || say "suite exited with $?"
fi

left=$((TOTAL - (SECONDS - start) - 10))
if [ -n "$USER_CONFIGS" ] && [ "$left" -gt 30 ]; then
  user_args=(--out "$OUT/user" --configs "$USER_CONFIGS" --budget-s "$left")
  [ -n "$SMOKE" ] && user_args+=(--smoke)
  say "user path: ${user_args[*]} ${USER_ARGS:-}"
  # shellcheck disable=SC2086  # USER_ARGS: several words on purpose
  timeout --signal=INT "$((left + 20))" python3 benchmark/user_path.py "${user_args[@]}" ${USER_ARGS:-} \
    || say "user path exited with $?"
else
  say "user path not run (${left}s left, configs '${USER_CONFIGS}')"
fi
say "done; files under $OUT:"
find "$OUT" -type f | sort
