"""`--time`: the best model for a wall-time budget on this machine.

The user gives one number, the time they will wait. A short probe measures how many
optimizer steps per second this machine runs for each shape of a ladder of models (small
to large); a fitted loss rule predicts the validation loss each shape reaches in the time
left; the shape with the lowest prediction wins, and its steps, learning-rate schedule and
evaluation are set to end inside the budget. docs/time-budget.md has the sweep the rule
was fitted to and the fit itself.

The rule (the form of a Chinchilla fit, Hoffmann et al. 2022, "Training Compute-Optimal
Large Language Models", approach 3, with a term for the number of optimizer steps):

    L(N, D, S) = E + A / N**alpha + B / D_eff**beta + C / S**gamma

N is the model's parameter count without embeddings, D the training tokens, S the
optimizer steps, and D_eff the tokens discounted for repeated epochs of a small corpus
(Muennighoff et al. 2023, "Scaling Data-Constrained Language Models": repeated tokens are
worth less and less, with R* the repetitions at which they are worth 1/e of new ones). On
a 2-core CPU the smallest shape wins a one-minute budget (it takes the most steps), and
from about five minutes shapes of 1-2M parameters do (the corpus is seen a few times
and repeats are worth little); a faster machine moves up the ladder as its probe finds.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gptlab.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration: "90s" -> 90.0, "5m" -> 300.0, "1h30m" -> 5400.0, "45" -> 45.0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        compact = text.strip().lower().replace(" ", "")
        try:
            seconds = float(compact)
        except ValueError:
            parts = _DURATION.findall(compact)
            if not parts or "".join(n + u for n, u in parts) != compact:
                raise ConfigError(
                    f"--time {text!r} is not a duration: write e.g. 90s, 5m, 1h or 1h30m"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ConfigError(f"--time {text!r} is not a duration: write e.g. 90s, 5m or 1h")
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise ConfigError(
            f"--time {text!r} is too short: the smallest budget is {MIN_SECONDS:.0f}s "
            "(the probe and a final evaluation need a few seconds)"
        )
    return seconds


MIN_SECONDS = 20.0


def process_start_time() -> float:
    """When this process started (time.time() scale), so that a budget counts Python's and
    torch's start-up too; where /proc cannot tell (not Linux), the time gptlab was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


@dataclass(frozen=True)
class Shape:
    """One rung of the ladder: the model's size and the batch it trains on."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int

    def params(self) -> int:
        """Parameters without embeddings: 12 * n_layer * n_embd**2 (attention 4, MLP 8)."""
        return 12 * self.n_layer * self.n_embd**2

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size


# Small to large. The first is the `speedrun` preset's model; each next one costs about
# 1.3-2x the time per step. Heads stay 32 or 64 channels wide. Past the first, the context
# is 128 at batch 8 (the same 1,024 tokens a step), which beat block 64 (batch 16) and
# block 256 (batch 4) at 10 minutes (docs/time-budget.md, "Context").
LADDER: tuple[Shape, ...] = (
    Shape(3, 4, 128, 64, 16),
    Shape(4, 5, 160, 128, 8),
    Shape(4, 6, 192, 128, 8),
    Shape(6, 6, 192, 128, 8),
    Shape(6, 8, 256, 128, 8),
    Shape(6, 6, 384, 256, 16),
    Shape(8, 8, 512, 256, 32),
    Shape(12, 12, 768, 512, 32),
)
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size")


@dataclass(frozen=True)
class LossRule:
    """L(N, D, S) = E + A / N**alpha + B / D_eff**beta + C / S**gamma (module docstring)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    C: float
    gamma: float
    r_star: float  # repetitions at which repeated data is worth 1/e of fresh data

    def effective_tokens(self, tokens: float, unique: float) -> float:
        """D_eff: tokens past the first epoch count less and less (Muennighoff et al.)."""
        if unique <= 0 or tokens <= unique:
            return tokens
        repeats = tokens / unique - 1
        return unique + unique * self.r_star * (1 - math.exp(-repeats / self.r_star))

    def predict(self, params: float, tokens: float, unique: float, steps: float) -> float:
        d_eff = max(self.effective_tokens(tokens, unique), 1.0)
        return (self.E + self.A / params**self.alpha + self.B / d_eff**self.beta
                + self.C / max(steps, 1.0)**self.gamma)


# Fitted to the sweep and target runs of docs/time-budget.md (char Tiny Shakespeare, 2 CPU
# cores, 47 runs, RMS error 0.016): `python benchmarks/sweep_time.py --fit`.
RULE = LossRule(E=0.087424, A=43.176245, alpha=0.45, B=5.32562, beta=0.1, C=4.183562,
                gamma=0.45, r_star=1.0)


@dataclass
class Plan:
    """What `--time` picked, and why (printed before training, kept in config.json)."""

    budget_s: float
    train_s: float  # of the budget, the seconds left for optimizer steps
    shape: Shape
    max_iters: int
    learning_rate: float
    warmup_iters: int
    min_lr: float
    dropout: float
    eval_interval: int
    tokens: int
    epochs: float
    predicted_val_loss: float | None
    probe: list[dict[str, Any]]  # each probed shape: steps/s, tokens, predicted loss
    probe_s: float
    pinned: list[str] = field(default_factory=list)  # settings the user chose (kept)
    replanned_from: int | None = None  # the probe's max_iters, when the run's pace changed it
    # cosine beat wsd at every cooldown length tried (docs/time-budget.md); with a pinned
    # `--lr-schedule wsd` the run is replanned again where its cooldown begins
    lr_schedule: str = "cosine"
    lr_decay_start: int | None = None  # wsd: set by the replan at the cooldown's start
    dtype: str | None = None  # the autocast dtype, where the probe timed more than one
    decay_end: int | None = None  # where the decay ended, when the run went on at min_lr

    def model_settings(self) -> dict[str, Any]:
        return {"n_layer": self.shape.n_layer, "n_head": self.shape.n_head,
                "n_embd": self.shape.n_embd, "block_size": self.shape.block_size,
                "dropout": self.dropout}

    def train_settings(self) -> dict[str, Any]:
        settings = {"batch_size": self.shape.batch_size, "max_iters": self.max_iters,
                    "lr_decay_iters": self.decay_end or self.max_iters,
                    "learning_rate": self.learning_rate,
                    "lr_schedule": self.lr_schedule, "warmup_iters": self.warmup_iters,
                    "min_lr": self.min_lr, "eval_interval": self.eval_interval}
        if self.lr_decay_start is not None:
            settings["lr_decay_start"] = self.lr_decay_start
        if self.dtype is not None:
            settings["dtype"] = self.dtype
        return settings

    def is_winner(self, row: dict[str, Any]) -> bool:
        """Whether a probe row is the planned shape's."""
        return all(row[k] == getattr(self.shape, k) for k in SHAPE_FIELDS)

    def step_s(self) -> float:
        """Seconds per step of the planned shape, as the probe measured it."""
        return 1 / next(r["steps_per_s"] for r in self.probe if self.is_winner(r))

    def planned(self) -> dict[str, Any]:
        """Every setting the plan sets (model and training), the user's own ones left out."""
        settings = {**self.model_settings(), **self.train_settings(), "eval_iters": EVAL_ITERS,
                    "early_stop": self.early_stop}
        return {k: v for k, v in settings.items() if k not in self.pinned}

    def flags(self) -> str:
        """The planned settings as `gptlab train` flags (to repeat the run without --time)."""
        return " ".join(f"--{k.replace('_', '-')} {v if isinstance(v, str) else repr(v)}"
                        for k, v in self.planned().items())

    @property
    def early_stop(self) -> int:
        """Evaluations without a new best before stopping: only when evaluating mid-run."""
        return 2 if self.eval_interval < self.max_iters else 0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["shape"] = asdict(self.shape)
        return doc


# What the ladder trains with (the `speedrun` recipe's optimizer, scaled by the plan).
LEARNING_RATE = 1.2e-2
# a hundredth of it: at 10 minutes, 1.4617 against 1.4755 with nanoGPT's tenth (one seed,
# docs/time-budget.md)
MIN_LR = 1.2e-4
EVAL_ITERS = 20  # batches per split in each evaluation: enough to compare, cheap to run
_RESERVE_S = 1.0  # checkpoint writes and the end-of-run report, beyond the final evaluation
STEP_MARGIN = 0.97  # steps planned for 97% of the time left: a slower step must not overrun


def choose(
    rates: Sequence[tuple[Shape, float]],
    left_s: float,
    unique_tokens: int,
    rule: LossRule = RULE,
) -> tuple[Shape, float, list[dict[str, Any]]]:
    """The shape whose predicted val loss after training in `left_s` seconds is lowest.

    Args:
        rates: (shape, optimizer steps per second on this machine) for each probed shape.
        left_s: seconds left for training and the final evaluation.
        unique_tokens: tokens in the training split (for the epoch discount).

    Returns:
        (shape, its predicted loss, one row per shape for the printed table).
    """
    rows = []
    for shape, steps_per_s in rates:
        steps = _steps(steps_per_s, _train_seconds(left_s, steps_per_s, 1))
        tokens = steps * shape.tokens_per_step
        loss = rule.predict(shape.params(), tokens, unique_tokens, steps)
        rows.append({**asdict(shape), "params": shape.params(), "steps_per_s": steps_per_s,
                     "tokens": tokens, "predicted_val_loss": loss})
    best = min(rows, key=lambda r: r["predicted_val_loss"])
    shape = Shape(*(best[k] for k in SHAPE_FIELDS))
    return shape, best["predicted_val_loss"], rows


def make_plan(
    budget_s: float,
    elapsed_s: float,
    unique_tokens: int,
    measure: Callable[[Shape], float],
    fixed: dict[str, Any],
    rule: LossRule = RULE,
) -> Plan:
    """Probe shapes up the ladder (stopping once a larger shape predicts a worse loss) and
    plan the winner's steps to end inside the budget.

    Args:
        budget_s: the whole budget; elapsed_s: what is already spent (start-up).
        unique_tokens: tokens in the training split.
        measure: shape -> this machine's optimizer steps per second for it (the probe).
        fixed: shape fields the user set (n_layer, ..., batch_size): every rung has them.
    """
    start = time.perf_counter()
    rates: list[tuple[Shape, float]] = []
    best_loss = math.inf
    for rung in LADDER:
        shape = Shape(**{**asdict(rung), **{k: v for k, v in fixed.items() if k in SHAPE_FIELDS}})
        if shape in (s for s, _ in rates) or shape.n_embd % shape.n_head:
            continue
        rates.append((shape, measure(shape)))
        left = budget_s - elapsed_s - (time.perf_counter() - start)
        _, loss, _ = choose(rates[-1:], left, unique_tokens, rule)
        if loss > best_loss:  # past the best size for this budget: larger ones are worse
            break
        best_loss = loss
    if not rates:
        raise ConfigError(f"n_embd={fixed['n_embd']} is not divisible by any ladder head "
                          "count: pass --n-head too")
    rates = _steady(rates, measure)
    probe_s = time.perf_counter() - start
    left = budget_s - elapsed_s - probe_s
    shape, _, rows = choose(rates, left, unique_tokens, rule)
    rate = dict(rates)[shape]
    train_s = _train_seconds(left, rate, 1)
    steps = _steps(rate, train_s)
    interval = _eval_interval(steps, _epochs(steps, shape, unique_tokens))
    if interval < steps:  # evaluations along the way take their share of the time
        train_s = _train_seconds(left, rate, math.ceil(steps / interval))
        steps = _steps(rate, train_s)
        interval = _eval_interval(steps, _epochs(steps, shape, unique_tokens))
    if steps < 1:
        raise ConfigError(
            f"--time {budget_s:.0f}s leaves no time to train after start-up and the probe "
            f"({elapsed_s + probe_s:.1f} s): give a longer --time"
        )
    tokens, epochs = steps * shape.tokens_per_step, _epochs(steps, shape, unique_tokens)
    return Plan(
        budget_s=budget_s, train_s=train_s, shape=shape, max_iters=steps,
        learning_rate=LEARNING_RATE, warmup_iters=min(100, max(1, steps // 20)),
        min_lr=MIN_LR, dropout=_dropout(epochs, shape.params(), unique_tokens),
        eval_interval=interval, tokens=tokens, epochs=epochs,
        predicted_val_loss=rule.predict(shape.params(), tokens, unique_tokens, steps),
        probe=rows, probe_s=probe_s,
    )


def _steady(rates: list[tuple[Shape, float]],
            measure: Callable[[Shape], float]) -> list[tuple[Shape, float]]:
    """The probe's rates, with a shape that measured slower than a larger one measured once
    more: a larger shape is never faster, so such a rate caught a moment when the machine
    was busy elsewhere (one probe saw 3x128 at 6.3 steps/s, then 4x160 at 21.7; the same
    machine's other probes gave 3x128 35-41)."""
    return [(shape, measure(shape) if any(r > rate for _, r in rates[i + 1 :]) else rate)
            for i, (shape, rate) in enumerate(rates)]


def _train_seconds(left_s: float, steps_per_s: float, evaluations: int) -> float:
    """Of `left_s` seconds, those for training: the rest is the evaluations (each about
    EVAL_ITERS forward passes on each split, a third of a step each) and the writes."""
    eval_s = 2 * EVAL_ITERS / (3 * steps_per_s)
    return left_s - evaluations * eval_s - _RESERVE_S


def _steps(steps_per_s: float, train_s: float) -> int:
    return int(steps_per_s * train_s * STEP_MARGIN)


def _epochs(steps: int, shape: Shape, unique_tokens: int) -> float:
    return steps * shape.tokens_per_step / max(unique_tokens, 1)


MANY_EPOCHS = 8  # past this many epochs: dropout, and evaluations along the way
# The slowest the training loop has run against the probe's pace (docs/time-budget.md:
# 0.62-1.63x). Dropout is fixed when the model is built, before the replan measures the
# real pace, so it is chosen for the fewest epochs the run may get.
SLOWEST_PACE = 0.6


def _dropout(epochs: float, params: int, unique_tokens: int) -> float:
    """Dropout only for a model that can memorise its corpus: more parameters than the
    corpus has tokens, and more than MANY_EPOCHS epochs even at SLOWEST_PACE; then 0.1 up
    to 16 epochs and 0.2 past (the lecture's model uses 0.2 on its many epochs).

    The runs behind it (docs/time-budget.md), 3x128 (0.59M parameters) on Tiny
    Shakespeare (1.0M tokens): dropout 0.1 cost 0.06 of val loss at 4.7 epochs, and a
    10-minute run with it (13.8 epochs) ended at 1.567, the two without it (17.1 epochs)
    at 1.513-1.518. Evaluations along the way and early stopping (`_eval_interval`) guard
    every run past MANY_EPOCHS, dropout or not."""
    surely = epochs * SLOWEST_PACE
    if params < unique_tokens or surely <= MANY_EPOCHS:
        return 0.0
    return 0.1 if surely <= 2 * MANY_EPOCHS else 0.2


def _eval_interval(steps: int, epochs: float) -> int:
    """Evaluate only at the end, unless the corpus is seen many times: then every tenth of
    the run, so that best.safetensors keeps the best weights and training stops when the
    val loss turns up (early stopping)."""
    return steps if epochs <= MANY_EPOCHS else max(1, steps // 10)


def format_plan(plan: Plan) -> str:
    """The plan as a table: each probed shape, its speed and predicted loss, the winner."""
    lines = [f"--time {plan.budget_s:.0f}s: probed {len(plan.probe)} shape(s) in "
             f"{plan.probe_s:.1f} s",
             "  layers heads embd block batch   params  steps/s      tokens  pred. val"
             + ("  dtype" if plan.dtype else "")]
    for row in plan.probe:
        mark = "*" if plan.is_winner(row) else " "
        lines.append(
            f"{mark} {row['n_layer']:6d} {row['n_head']:5d} {row['n_embd']:4d} "
            f"{row['block_size']:5d} {row['batch_size']:5d} {row['params'] / 1e6:7.2f}M "
            f"{row['steps_per_s']:8.2f} {row['tokens']:11,d} {row['predicted_val_loss']:10.3f}"
            + (f"  {row['dtype']}" if plan.dtype else ""))
    lines.append(
        f"training the * shape: {plan.max_iters} steps in {plan.train_s:.0f} s, "
        f"{plan.tokens:,} tokens = {plan.epochs:.1f} epochs of the training split, lr "
        f"{plan.learning_rate:g} (warmup {plan.warmup_iters}, {plan.lr_schedule} to "
        f"{plan.min_lr:g}), "
        f"dropout {plan.dropout:g}, predicted val loss {plan.predicted_val_loss:.3f}")
    return "\n".join(lines)

