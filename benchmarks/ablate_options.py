"""Ablation of the model options (#16): each one switched on alone against a preset.

Each row is one `gptlab train --preset PRESET --OPTION VALUE` in a fresh process, for the
preset's fixed number of steps (so the val loss does not depend on this machine's speed
or load, and the time column shows what the option costs), then `gptlab eval` over the
whole val split. The first row is the preset unchanged. Rows are appended as JSON lines to
--results, so an interrupted run keeps what it measured.

    python benchmarks/ablate_options.py --preset cpu-5m
    python benchmarks/ablate_options.py --preset cpu-1m --options norm=rmsnorm,qk_norm=true
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "docs" / "ablation.jsonl"
# each option against the cpu presets' nanoGPT-style model (exact GELU, LayerNorm without
# biases, tied embeddings, learned positions)
DEFAULT_OPTIONS = ("norm=rmsnorm,activation=relu2,activation=swiglu,qk_norm=true,"
                   "pos_encoding=rope,tie_weights=false,bias=true")


def run_row(preset: str, option: str, seed: int, work: Path) -> dict:
    run = work / f"run-{option.replace('=', '-') or 'base'}-{seed}"
    flags = []
    if option:
        name, value = option.split("=")
        flags = [f"--{name.replace('_', '-')}", value]
    cmd = [sys.executable, "-m", "gptlab", "train", "--preset", preset, *flags,
           "--seed", str(seed), "--out", str(run), "--no-progress", "--sample-tokens", "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    ev = subprocess.run([sys.executable, "-m", "gptlab", "eval", str(run), "--json"],
                        env=env, capture_output=True, text=True, check=True)
    config = json.loads((run / "config.json").read_text())
    return {"preset": preset, "option": option or "(preset)", "seed": seed,
            "steps": config["train"]["max_iters"], "wall_s": round(wall, 1),
            "val_loss": round(json.loads(ev.stdout)["loss"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-5m")
    parser.add_argument("--options", default=DEFAULT_OPTIONS,
                        help="comma-separated NAME=VALUE, each run alone")
    parser.add_argument("--seeds", default="1337")
    parser.add_argument("--no-base", action="store_true", help="skip the unchanged preset")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    options = ([] if args.no_base else [""]) + args.options.split(",")
    print("| option | seed | steps | wall s | val loss |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for option in options:
            for seed in map(int, args.seeds.split(",")):
                r = run_row(args.preset, option, seed, Path(tmp))
                with open(args.results, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"| {r['option']} | {seed} | {r['steps']} | {r['wall_s']} | "
                      f"{r['val_loss']} |", flush=True)


if __name__ == "__main__":
    main()
