#!/usr/bin/env bash
# The GPU check of #16, for a session that the `device` tool lends a GPU (under 5 minutes of
# device time): `gptlab train --time 60s` on CUDA (bf16 autocast: --dtype auto), its val
# loss over the whole split and its MFU, and the `lecture` preset's training tokens/s.
# The device image has torch, tiktoken, safetensors and tqdm; run from the repository root:
#     bash benchmarks/gpu_time.sh         # writes $OUT/gpu_time.txt
# PEAK_TFLOPS is the chip's dense bf16 peak (H100/H200 SXM: 989).
set -euo pipefail
export PYTHONPATH="src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 GPTLAB_CACHE_DIR=/tmp/gptlab-cache
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"
python3 -m gptlab corpus add shakespeare ../shared/data/tinyshakespeare.txt >/dev/null
mfu() {  # RUN_DIR: training tokens/s and model FLOPs utilisation from its metrics
  python3 - "$1" "$PEAK_TFLOPS" <<'PY'
import json, sys
from gptlab.checkpoint import load_run
run, peak = sys.argv[1], float(sys.argv[2]) * 1e12
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
train = [r for r in rows if r["kind"] == "train"]
a, b = train[len(train) // 10], train[-1]  # past the first tenth: warm kernels
tok_s = (b["tokens"] - a["tokens"]) / (b["time"] - a["time"])
flops = load_run(run, which="latest", device="cpu").model.flops_per_token()
print(f"{run}: {tok_s:,.0f} tokens/s, MFU {tok_s * flops / peak:.1%} of {peak / 1e12:g} TFLOPs")
PY
}
{
  echo "== --time 60s on cuda"
  python3 -m gptlab train --time 60s --device cuda --out /tmp/gpu60 --no-progress \
    --sample-tokens 0 2>&1 | tail -n 25
  python3 -m gptlab eval /tmp/gpu60 --device cuda
  mfu /tmp/gpu60
  echo "== lecture preset, 300 steps on cuda"
  python3 -m gptlab train --preset lecture --max-iters 300 --eval-interval 300 \
    --eval-iters 20 --device cuda --out /tmp/gpulecture --no-progress --sample-tokens 0 \
    2>&1 | tail -n 3
  mfu /tmp/gpulecture
} 2>&1 | tee "${OUT:-/tmp}/gpu_time.txt"
