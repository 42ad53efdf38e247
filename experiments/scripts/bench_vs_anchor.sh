#!/usr/bin/env bash
# Speed claims are ratios to the anchor (CleanRL's single-file agents) measured in the same session: this runs
# each anchor agent and then the qrepro bench commands with the same settings (docs/performance.md), one thread
# each, REPS times over, so every qrepro figure has an anchor figure taken minutes before it.
# Usage: bash experiments/scripts/bench_vs_anchor.sh [REPS] [dqn|ddpg|atari ...]
#   ANCHOR=path/to/bench-cleanrl.sh (default ../shared/anchors/bench-cleanrl.sh, from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
anchor=${ANCHOR:-../shared/anchors/bench-cleanrl.sh}
[ -f "$anchor" ] || { echo "anchor script not found: $anchor (set ANCHOR)" >&2; exit 2; }
reps=${1:-2}; shift || true
for t in ${@:-dqn ddpg atari}; do
  case $t in dqn|ddpg|atari) ;; *) echo "unknown task $t: dqn, ddpg or atari" >&2; exit 2;; esac
done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
q() { python -m experiments.cli bench "$@" 2>&1 | tail -n +3; }
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
for i in $(seq "$reps"); do
  echo "# rep $i"
  for task in "${@:-dqn ddpg atari}"; do for t in $task; do
    # sed reads to the end: head would close the pipe early, and the anchor's next echo would die of SIGPIPE,
    # which pipefail and set -e turn into a silent exit of this script
    line=$(bash "$anchor" "$t" 2>&1 | sed -n 1p)
    echo "$line"
    # the anchor prints "SPS " with no figure when its agent fails (its own output is swallowed by the grep)
    case $line in *"SPS "[0-9]*) ;; *)
      echo "# anchor $t gave no figure: run 'bash $anchor $t' and its agent by hand to see why (the Atari agent" \
           "needs opencv in the anchor's venv: ${CLEANRL_VENV:-/tmp/cleanrl-anchor/venv}/bin/pip install" \
           "opencv-python-headless); ratios for $t need another rep" >&2;;
    esac
    case $t in
      dqn)   q --algo dqn --env CartPole-v1 --set threads=1 --set 'hidden=[120,84]' --set batch_size=64 \
               --set updates_per_step=1;;
      ddpg)  q --algo ddpg --env HalfCheetah-v5 --set threads=1 --set 'hidden=[256,256]' --set critic_action_layer=0 \
               --steps 1000
             q --algo ddpg --env HalfCheetah-v5 --set threads=1 --set 'hidden=[256,256]' --set critic_action_layer=0 \
               --set policy_period=2 --steps 1000;;
      atari) q --algo dqn --env ALE/Pong-v5 --set threads=1 --set replay_size=20000 --steps 1000;;
    esac
  done; done
done
