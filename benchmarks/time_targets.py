"""The --time targets of #16: `gptlab train --time T` for each budget and seed, then
`gptlab eval` over the whole val split; a table of every run, then mean and range per
budget. Each run is a fresh process timed from its start to its exit (the whole command).

    python benchmarks/time_targets.py --budgets 1m,5m,10m --seeds 1337,1338,1339
    python benchmarks/time_targets.py --budgets 1m --input ../shared/data/the-verdict.txt
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from train_runs import REPO_ROOT, timed_train

from gptlab.train.budget import SHAPE_FIELDS, Shape


def run_one(budget: str, seed: int, extra: list[str], work: Path) -> dict:
    run = work / f"run-{budget}-{seed}"
    result = timed_train(["--time", budget, "--seed", str(seed), *extra], run)
    config, records = result.config, result.records
    plan = config["time_budget"]
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    shape = plan["shape"]
    size = Shape(**shape)
    return {"budget": budget, "seed": seed,
            "shape": f"{shape['n_layer']}x{shape['n_embd']}, block {shape['block_size']}, "
                     f"batch {shape['batch_size']}",
            "planned": plan["replanned_from"] or plan["max_iters"],
            "decay_end": plan.get("decay_end"),  # set when the run went on at min_lr
            "max_iters": plan["max_iters"], "done": records[-1]["step"],
            "epochs": round(plan["epochs"], 1), "dropout": config["model"]["dropout"],
            "wall_s": result.wall_s, "budget_s": plan["budget_s"],
            "best_eval": round(min(evals), 4), "last_eval": round(evals[-1], 4),
            "val_loss": result.val_loss,
            # what benchmarks/sweep_time.py --fit reads (as its own rows)
            **{k: shape[k] for k in SHAPE_FIELDS}, "params": size.params(),
            "steps": records[-1]["step"],
            "tokens": records[-1]["step"] * size.tokens_per_step,
            "unique_tokens": config["data"]["train_tokens"], "dtype": config["train"]["dtype"],
            "min_lr": config["train"]["min_lr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="1m,5m,10m")
    parser.add_argument("--seeds", default="1337,1338,1339")
    parser.add_argument("--data", default="", help="a prepared dataset folder")
    parser.add_argument("--input", default="", help="a text file (prepared before the clock)")
    parser.add_argument("--flags", default="", help="more `gptlab train` flags, e.g. a "
                        "pinned shape: '--n-layer 4 --n-embd 160 --n-head 5'")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "docs" / "time-targets.jsonl")
    args = parser.parse_args()
    extra = (["--data", args.data] if args.data else []) + (
        ["--input", args.input] if args.input else []) + args.flags.split()
    print("| budget | seed | picked | steps planned → done | epochs | whole command s "
          "| of budget | val loss (whole split) | best / last eval |")
    print("|---|---:|---|---|---:|---:|---:|---:|---|")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            for seed in map(int, args.seeds.split(",")):
                r = run_one(budget, seed, extra, Path(tmp))
                if args.flags:
                    r["flags"] = args.flags
                rows.append(r)
                with open(args.results, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"| {budget} | {seed} | {r['shape']} | {r['planned']:,} → "
                      f"{r['done']:,} | {r['epochs']} | {r['wall_s']} | "
                      f"{r['wall_s'] / r['budget_s']:.1%} | {r['val_loss']} | "
                      f"{r['best_eval']} / {r['last_eval']} |", flush=True)
    print("\n| budget | runs | val loss mean | range | whole command s range |")
    print("|---|---:|---:|---|---|")
    for budget in args.budgets.split(","):
        mine = [r for r in rows if r["budget"] == budget]
        losses, walls = [r["val_loss"] for r in mine], [r["wall_s"] for r in mine]
        print(f"| {budget} | {len(mine)} | {statistics.mean(losses):.4f} | "
              f"{min(losses):.4f}-{max(losses):.4f} | {min(walls)}-{max(walls)} |")


if __name__ == "__main__":
    main()
