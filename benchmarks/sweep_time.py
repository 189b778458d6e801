"""The sweep behind `--time` (#16): val loss of each ladder shape at each wall-time budget.

Each point is one `gptlab train --time BUDGET` with the shape pinned by flags (so the
budget plans only its steps and schedule), in a fresh process, on char Tiny Shakespeare,
then `gptlab eval` over the whole val split. A point's row: the shape, its non-embedding
parameters N, the tokens D it trained on, the whole command's wall time, and the val loss.
Rows are appended as JSON lines to --results, so an interrupted sweep keeps what it
measured and a second call adds to it; `--fit` fits the rule in gptlab/train/budget.py,

    L(N, D, S) = E + A / N**alpha + B / D_eff**beta + C / S**gamma,

to every row there without dropout, and to the rows of benchmarks/time_targets.py
(docs/time-targets.jsonl) that carry the same fields (least squares in E, A, B, C on a
grid of alpha, beta and gamma) and prints it.

    python benchmarks/sweep_time.py --budgets 60,150 --shapes 0,1,2
    python benchmarks/sweep_time.py --fit
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from train_runs import timed_train  # noqa: E402

from gptlab.train.budget import LADDER, SHAPE_FIELDS, LossRule  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "docs" / "time-sweep.jsonl"  # the rule's data, kept
DEFAULT_TARGETS = REPO_ROOT / "docs" / "time-targets.jsonl"
# the rows were run with the cosine decaying to 1.2e-3; since 2026-12-07 --time decays
# to 1.2e-4, ~0.01 lower at 10 minutes: the rule still predicts the old recipe
FIT_MIN_LR = 1.2e-3


def run_point(budget: str, shape_index: int, seed: int, data: str, work: Path) -> dict:
    shape = LADDER[shape_index]
    run = work / f"run-{budget}-{shape_index}-{seed}"
    flags = [f"--{k.replace('_', '-')}={getattr(shape, k)}" for k in SHAPE_FIELDS]
    r = timed_train(["--time", budget, *flags, "--seed", str(seed),
                     *(["--data", data] if data else [])], run)
    config = r.config
    plan = config["time_budget"]
    return {"budget": budget, "shape": shape_index, **{k: getattr(shape, k) for k in SHAPE_FIELDS},
            "params": shape.params(), "seed": seed, "steps": config["train"]["max_iters"],
            "tokens": plan["tokens"], "unique_tokens": config["data"]["train_tokens"],
            "epochs": plan["epochs"], "dropout": config["model"]["dropout"],
            "wall_s": r.wall_s, "dtype": config["train"]["dtype"],
            "predicted": round(plan["predicted_val_loss"], 4),
            "val_loss": r.val_loss}


def fit(rows: list[dict]) -> tuple[LossRule, float]:
    """Least squares for E, A, B, C at each (alpha, beta, gamma, r_star) on a grid, keeping
    fits whose coefficients are all >= 0; returns the best and its RMS error."""
    import numpy as np

    y = np.array([r["val_loss"] for r in rows])
    n = np.array([r["params"] for r in rows], dtype=float)
    s = np.array([r["steps"] for r in rows], dtype=float)
    best = None
    grid = np.arange(0.05, 1.51, 0.05)
    for r_star in R_STARS:
        rule = LossRule(0, 0, 0, 0, 0, 0, 0, r_star)
        d = np.array([rule.effective_tokens(r["tokens"], r["unique_tokens"]) for r in rows])
        for alpha, beta, gamma in itertools.product(ALPHAS, grid, grid):
            X = np.stack([np.ones_like(y), n**-alpha, d**-beta, s**-gamma], axis=1)
            coef, *_ = np.linalg.lstsq(X, y, rcond=None)
            if (coef < 0).any():
                continue
            rms = float(np.sqrt(np.mean((X @ coef - y) ** 2)))
            if best is None or rms < best[1]:
                best = (LossRule(*(round(float(c), 6) for c in (coef[0], coef[1], alpha, coef[2],
                                                                beta, coef[3], gamma)),
                                 r_star), rms)
    assert best is not None, "no fit with non-negative coefficients"
    return best


# repetitions at which a repeated token is worth 1/e of a new one: Muennighoff et al. fit
# ~15 for large models on large corpora; a 1M-token corpus is memorised sooner
R_STARS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0)
# One R* for every model size, as Muennighoff et al. fit it. Tried on 2026-12-07: R* growing
# with N, r_star * (N / 1M)**rho, fitted Tiny Shakespeare's rows better (RMS 0.014 against
# 0.016 at rho 0.5-1) and picked 6x192 at 10 minutes, but on an 18k-token corpus it picked
# 4x192 for a minute, which ended at 2.29 against 3x128's 1.73 (docs/time-budget.md).

# the rows leave alpha open above 0.5 (the RMS error is flat there while A grows by orders
# of magnitude), so it stays within the range of published fits
ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 11))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="60s", help="comma-separated, e.g. 60s,150s")
    parser.add_argument("--shapes", default="0,1", help="ladder indices, comma-separated")
    parser.add_argument("--seeds", default="1337")
    parser.add_argument("--data", default="", help="prepared dataset (default: shakespeare)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--fit", action="store_true",
                        help="fit the rule to --results and the rows of --targets")
    parser.add_argument("--targets", type=Path, default=DEFAULT_TARGETS,
                        help="benchmarks/time_targets.py's rows, also fitted")
    args = parser.parse_args()
    if args.fit:
        rows = [json.loads(line) for path in (args.results, args.targets)
                for line in path.read_text().splitlines()]
        # the rule is for dropout-free cosine runs to FIT_MIN_LR; target rows count once
        # they carry the sweep's fields (benchmarks/time_targets.py writes them since
        # 2026-12-06)
        rows = [r for r in rows if "params" in r and not r.get("dropout")
                and r.get("lr_schedule", "cosine") == "cosine"
                and r.get("min_lr", FIT_MIN_LR) == FIT_MIN_LR]
        rule, rms = fit(rows)
        print(f"{len(rows)} points: {rule} (RMS error {rms:.4f})")
        for r in rows:
            pred = rule.predict(r["params"], r["tokens"], r["unique_tokens"], r["steps"])
            shape = f"{r['n_layer']}x{r['n_embd']}/{r['block_size']}x{r['batch_size']}"
            print(f"  {r['budget']:>5} {shape:>13} N={r['params']:,} D={r['tokens']:,} "
                  f"val {r['val_loss']:.4f} fit {pred:.4f}")
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    print("| budget | shape | layers | embd | block | batch | N | steps | tokens | epochs | "
          "wall s | predicted | val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            for shape in map(int, args.shapes.split(",")):
                for seed in map(int, args.seeds.split(",")):
                    r = run_point(budget, shape, seed, args.data, Path(tmp))
                    with open(args.results, "a") as f:
                        f.write(json.dumps(r) + "\n")
                    print(f"| {budget} | {shape} | {r['n_layer']} | {r['n_embd']} | "
                          f"{r['block_size']} | {r['batch_size']} | {r['params']:,} | "
                          f"{r['steps']} | {r['tokens']:,} | {r['epochs']:.1f} | "
                          f"{r['wall_s']} | {r['predicted']} | {r['val_loss']} |", flush=True)


if __name__ == "__main__":
    main()
