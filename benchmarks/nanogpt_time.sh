#!/usr/bin/env bash
# nanoGPT's own CPU recipe (its README's shrunk config/train_shakespeare_char.py run) beside
# `gptlab train --time` given nanoGPT's wall time, in one run on this machine (#16).
#   benchmarks/nanogpt_time.sh NANOGPT_CHECKOUT [PYTHON]
# NANOGPT_CHECKOUT: a checkout of karpathy/nanoGPT (e.g. `git worktree add` of a fetch);
# nothing of it is copied into gptlab. Tiny Shakespeare comes from ../shared/data.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
nano=$(realpath "$1")
python=${2:-$here/.venv/bin/python}  # a venv's python: not realpath (that leaves the venv)
[[ $python = /* ]] || python=$PWD/$python
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$nano"/. "$work/nanogpt"; rm -rf "$work/nanogpt/.git"
cp "$here/../shared/data/tinyshakespeare.txt" "$work/nanogpt/data/shakespeare_char/input.txt"
(cd "$work/nanogpt" && "$python" data/shakespeare_char/prepare.py >/dev/null)
start=$(date +%s.%N)
(cd "$work/nanogpt" && "$python" train.py config/train_shakespeare_char.py --device=cpu \
    --compile=False --eval_iters=20 --log_interval=100 --block_size=64 --batch_size=12 \
    --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 \
    --dropout=0.0 --out_dir="$work/nano-out" 2>&1 | grep -E "^step [0-9]+:" | tail -1)
nano_s=$(echo "$(date +%s.%N) - $start" | bc)
echo "nanoGPT: whole command ${nano_s} s"
secs=$(printf "%.0f" "$nano_s")
export GPTLAB_CACHE_DIR=${GPTLAB_CACHE_DIR:-$here/.venv/gptlab-cache}
start=$(date +%s.%N)
"$here/.venv/bin/gptlab" train --time "${secs}s" --out "$work/gptlab-run" --no-progress \
    --sample-tokens 0 2>&1 | grep -E "^step [0-9]+: val|command took"
echo "gptlab --time ${secs}s: whole command $(echo "$(date +%s.%N) - $start" | bc) s"
"$here/.venv/bin/gptlab" eval "$work/gptlab-run" | head -1
