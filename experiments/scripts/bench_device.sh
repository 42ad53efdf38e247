#!/usr/bin/env bash
# Issue 8's GPU measurements as one prepared run for a session that is lent a device (no network there, minutes
# of device time): install the wheels the device lacks, check that member k of a group run on CUDA follows the
# single-seed run k, then `qrepro bench --device cuda` at M = 1, 8, 32, 64 for Pong (Nature DQN) and
# HalfCheetah (DDPG), and MinAtar DQN at M = 1, 8, 32 (its paper scale is a GPU job).
#
# Here, once:  bash ../shared/device/fetch-wheels.sh minatar==1.0.15      (wheels into .whl/, git-ignored)
# Device:      run tool, carry [".whl"], timeout_s 570:
#              QREPRO_COMMIT=<sha of HEAD here> bash experiments/scripts/bench_device.sh [STEPS]
# STEPS: timed agent steps per line (after as many of warm-up), default 1000. Each part has its own time limit,
# so a slow line costs its limit and the rest still run. Everything printed is also written to
# $OUT/bench_device.txt (the device tool brings $OUT back); copy the figures into docs/performance.md with
# the commit and the date.
set -uo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-1000}
out=${OUT:-/tmp/qrepro-bench-device}
mkdir -p "$out"
log="$out/bench_device.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
part() {  # part SECONDS COMMAND...: one step, its own limit, its output kept
  local limit=$1; shift
  say "\$ $*"
  timeout "$limit" "$@" 2>&1 | grep -v "^qrepro: .*agent steps (" | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || say "# exit $rc$([ "$rc" = 124 ] && echo " (over its ${limit} s limit)")"
}

dev=${QREPRO_BENCH_DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
if ! python3 -c "import gymnasium, ale_py, mujoco, minatar" 2> /dev/null; then
  ls .whl/*.whl > /dev/null 2>&1 || { echo "no wheels in .whl/: run ../shared/device/fetch-wheels.sh minatar==1.0.15 here and carry .whl" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

say "# $(date -u +%FT%TZ) commit ${QREPRO_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo 'unknown (set QREPRO_COMMIT)')}"
say "# $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed -n 1p); $(nproc --all) cores"
say "# $(python3 -c 'import torch, gymnasium, ale_py, mujoco; print("torch", torch.__version__, "cuda", torch.version.cuda, "gymnasium", gymnasium.__version__, "ale-py", ale_py.__version__, "mujoco", mujoco.__version__)' 2>&1)"

# The member promise on CUDA (tests/conftest.py's device fixture; on a CPU these run bit-identical).
part 150 python3 -m pytest -q -p no:cacheprovider tests/test_dqn.py tests/test_continuous_agents.py -k "member_k and $dev"

b() { part "$1" python3 -m experiments.cli bench --device "$dev" --steps "$steps" "${@:2}"; }
b 150 --algo dqn --env ALE/Pong-v5 --members 1 8 32 64 --set replay_size=20000
b 120 --algo ddpg --env HalfCheetah-v5 --members 1 8 32 64 --set 'hidden=[256,256]' --set critic_action_layer=0
b 60 --algo dqn --env MinAtar/Breakout-v0 --members 1 8 32
say "# done $(date -u +%FT%TZ)"
