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
import tempfile
from pathlib import Path

from train_runs import REPO_ROOT, timed_train

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
    r = timed_train(["--preset", preset, *flags, "--seed", str(seed)], run)
    return {"preset": preset, "option": option or "(preset)", "seed": seed,
            "steps": r.config["train"]["max_iters"], "wall_s": r.wall_s, "val_loss": r.val_loss}


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
