#!/usr/bin/env bash
# The GPU check of #14, for a session that the `device` tool lends a GPU (under 5 minutes):
# the streaming load of `bench_serve.py --streaming` on CUDA, for the lecture model and a
# GPT-2 124M-shaped one (random weights), at 1, 16 and 64 clients, with generate() beside it.
#
# The device image has torch, tiktoken, safetensors, xxhash, tqdm and httpx, not starlette
# or uvicorn: download their wheels into .whl first (the device README shows the pip
# download command), then run this with carry [".whl"]:
#     bash benchmarks/gpu_serve.sh          # writes $OUT/gpu_serve.txt
set -euo pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
for shape in lecture gpt2-124m; do
  echo "== $shape on cuda"
  python3 benchmarks/bench_serve.py --streaming --device cuda --shape "$shape" \
    --stream-clients 1,16,64 --stream-rounds 16
done 2>&1 | tee "${OUT:-/tmp}/gpu_serve.txt"
