"""A --time run's two moving parts: the probe and plan at its start, and the clock that
ends it in time (the maths of the plan is `gptlab.train.budget`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import torch

from gptlab import runtime
from gptlab.errors import ConfigError
from gptlab.model import GPT, ModelConfig
from gptlab.train import distributed as dist_util
from gptlab.train.budget import (
    RULE,
    SHAPE_FIELDS,
    Plan,
    Shape,
    format_plan,
    make_plan,
    parse_duration,
)
from gptlab.train.config import TrainConfig
from gptlab.train.optim import configure_optimizer

log = logging.getLogger(__name__)


def plan_run(
    model_settings: dict[str, Any],
    resolved: dict[str, Any],
    config: TrainConfig,
    pinned: set[str],
    started: float,
    train_tokens: int,
    device: str,
    dist: dist_util.DistInfo,
) -> tuple[Plan, dict[str, Any], TrainConfig]:
    """Probe this machine, plan `config.time`, and apply the plan to what the user left
    open.

    Args:
        model_settings: the run's ModelConfig settings; resolved: the same with the
            dataset's vocab_size (what the probe builds).
        pinned: the settings the user chose (kept); started: when the budget's clock began.

    Returns:
        (plan, model settings, TrainConfig) to train with.
    """
    if "max_iters" in pinned:
        raise ConfigError("--time picks the number of steps: drop --max-iters, or drop "
                          "--time to train for a fixed number of steps")
    budget_s = parse_duration(config.time)
    values = {**resolved, "batch_size": config.batch_size}
    fixed = {k: values[k] for k in SHAPE_FIELDS if k in pinned}
    dtypes = probe_dtypes(config.dtype, "dtype" in pinned, device)
    fastest: dict[Shape, str] = {}

    def measure(shape: Shape) -> float:
        rates = {d: probe_steps_per_second(resolved, config, shape, device, d) for d in dtypes}
        fastest[shape] = max(rates, key=rates.__getitem__)
        return rates[fastest[shape]]

    plan = make_plan(budget_s, time.time() - started, train_tokens, measure, fixed)
    if len(dtypes) > 1:
        plan.dtype = fastest[plan.shape]
        for row in plan.probe:
            row["dtype"] = fastest[Shape(*(row[k] for k in SHAPE_FIELDS))]
    plan = dist_util.gather_objects(plan, dist)[0]  # every rank trains rank 0's plan
    plan.pinned = sorted(pinned)
    plan.lr_schedule = config.lr_schedule if "lr_schedule" in pinned else plan.lr_schedule
    planned = plan.planned()
    model_fields = set(plan.model_settings())
    config = dataclasses.replace(
        config, **{k: v for k, v in planned.items() if k not in model_fields})
    if dist.is_main:
        log.info("%s", format_plan(plan))
    return plan, {**model_settings, **{k: v for k, v in planned.items() if k in model_fields}}, \
        config


def probe_dtypes(dtype: str, pinned: bool, device: str) -> list[str]:
    """The autocast dtypes the probe times each shape in: the run's own, or on a CPU that
    multiplies bfloat16 natively (AVX512-BF16, AMX) both float32 and bfloat16, as it is
    not always faster there (a small model's steps are mostly not matmuls: docs/time-budget.md,
    "bf16 on a CPU")."""
    if pinned or not (device == "cpu" and runtime.native_bf16(device)):
        return [dtype]
    return ["float32", "bfloat16"]


def probe_steps_per_second(
    model_settings: dict[str, Any],
    config: Any,
    shape: Shape,
    device: str,
    dtype: str | None = None,
    min_seconds: float = 0.4,
    min_steps: int = 3,
) -> float:
    """Optimizer steps per second of `shape` on this machine: a throwaway model and
    optimizer, random tokens, one untimed step (allocations, kernel choice) then at least
    `min_steps` timed ones and `min_seconds`. Seeds are left as they were.

    Args:
        model_settings: ModelConfig fields (the shape's fields replace the size ones).
        config: the run's TrainConfig (optimizer, batch size replaced by the shape's).
        dtype: the autocast dtype (TrainConfig.dtype's names); None: the run's.
    """
    autocast = runtime.autocast_factory(
        device, runtime.resolve_dtype(dtype or config.dtype, device))
    settings = {**model_settings, **{k: getattr(shape, k) for k in SHAPE_FIELDS[:4]}}
    model_config = ModelConfig.from_dict(settings)
    probe_config = dataclasses.replace(config, batch_size=shape.batch_size, time=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(model_config).to(device)
        optimizer = configure_optimizer(model, probe_config, device.split(":")[0])
        x = torch.randint(model_config.vocab_size, (shape.batch_size, shape.block_size),
                          device=device)  # (B, T)

        def step() -> None:
            with autocast():
                _, loss = model(x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # waits for the device

        step()
        steps, start = 0, time.perf_counter()
        while steps < min_steps or time.perf_counter() - start < min_seconds:
            step()
            steps += 1
        return steps / (time.perf_counter() - start)


# Of the time left at a replan, the share planned for steps. Less slack than the probe's
# plan (budget.STEP_MARGIN): the loop's own pace is measured by then, the machine drifts by
# a few percent either way (a 1-minute run at 0.97 ended at 91% of its budget when the
# steps after warmup ran 4% faster), and `out_of_time` still ends a slower run in time.
REPLAN_MARGIN = 0.99


class BudgetClock:
    """When a --time run must stop stepping: when one more step, the final evaluation and
    the writes would pass the deadline. Steps and evaluations are timed as they run; before
    the first evaluation its time is estimated from the steps (a forward pass is about a
    third of a training step). It also measures the loop's real pace (steps per second of
    wall time, everything included) for `replan`."""

    _WRITES_S = 0.5  # the final checkpoint and report

    def __init__(self, deadline: float | None, eval_iters: int, step_s: float | None = None):
        self.deadline = deadline
        self.eval_iters = eval_iters
        self.step_s = step_s  # from the probe, until steps are timed
        self.eval_s: float | None = None
        self.first = True
        self.paced_from: float | None = None  # when the first step ended
        self.paced_steps = 0  # steps since then

    @property
    def budgeted(self) -> bool:
        return self.deadline is not None

    def stepped(self, seconds: float) -> None:
        if self.paced_from is None:
            self.paced_from = time.time()
        else:
            self.paced_steps += 1
        if self.first and self.step_s is not None:  # the first step also allocates: not typical
            self.first = False
            return
        self.first = False
        # the slowest of recent steps, decaying: a slow stretch is not forgotten at once
        self.step_s = seconds if self.step_s is None else max(seconds, 0.9 * self.step_s)

    def evaluated(self, seconds: float) -> None:
        self.eval_s = seconds

    def _eval_s(self) -> float:
        step_s = self.step_s or 0.0
        return self.eval_s if self.eval_s is not None else 2 * self.eval_iters * step_s / 3

    def out_of_time(self, step: int) -> bool:
        if self.deadline is None or self.step_s is None:
            return False
        return time.time() + self.step_s + self._eval_s() + self._WRITES_S > self.deadline

    def steps_left(self, evaluations: int) -> int | None:
        """Steps that fit before the deadline at the pace measured so far, leaving time for
        `evaluations` evaluations and the writes; None before there is a pace."""
        if self.deadline is None or self.paced_steps < 3:
            return None
        pace = (time.time() - self.paced_from) / self.paced_steps  # seconds per step
        left = self.deadline - time.time() - evaluations * self._eval_s() - self._WRITES_S
        return max(0, int(left / pace * REPLAN_MARGIN))


def replan_due(step: int, config: TrainConfig) -> bool:
    """Whether a --time run fits its length to its pace after this step: at the end of
    warmup, with wsd where the cooldown begins — the points whose learning rate max_iters
    leaves alone (`replan`) — and at the planned last step, to go on at min_lr while time
    is left (`extend`)."""
    wsd = config.lr_schedule == "wsd" and config.decay_lr and step > config.warmup_iters
    return (step == config.warmup_iters >= 4 or (wsd and step == config.decay_start)
            or step == config.max_iters)


def replan(
    plan: Plan, config: TrainConfig, clock: BudgetClock, step: int, dist: dist_util.DistInfo
) -> tuple[Plan, TrainConfig]:
    """The plan and config with max_iters set to what the measured pace fits in the budget.

    Called at the end of the warmup and, with the wsd schedule, again where its cooldown
    begins (which that call pins at `step`); at the planned last step it hands over to
    `extend`. The learning rate up to either of the first two points does not
    depend on max_iters, so the run stays exactly what its config.json then says (the
    probe times bare steps; the loop also fetches batches and logs, and the machine may be
    busier or quieter), and the second call, from the pace of most of the run, lands the
    last step on the deadline."""
    if step == config.max_iters:
        return extend(plan, config, clock, step, dist)
    interval_all = config.eval_interval >= config.max_iters
    evaluations = 1 if interval_all else math.ceil((config.max_iters - step) /
                                                    config.eval_interval)
    left = dist_util.gather_objects(clock.steps_left(evaluations), dist)[0]
    if left is None:
        return plan, config
    total = max(step + 1, step + left)
    cooldown = config.lr_schedule == "wsd" and step > config.warmup_iters
    changes = {"max_iters": total, "lr_decay_iters": total,
               "eval_interval": total if interval_all else max(1, total // 10),
               **({"lr_decay_start": step} if cooldown else {})}
    changes = {k: v for k, v in changes.items() if k not in plan.pinned}
    plan = _with_length(plan, total, replanned_from=plan.replanned_from or plan.max_iters,
                        eval_interval=changes.get("eval_interval", plan.eval_interval),
                        lr_decay_start=changes.get("lr_decay_start"))
    if dist.is_main:
        log.info("--time: at step %d the loop runs %.2f steps/s; training for %d steps in "
                 "all (planned %d)", step, clock.paced_steps / (time.time() - clock.paced_from),
                 total, plan.replanned_from)
    return plan, dataclasses.replace(config, **changes)


# Extend a run by at least this share of its steps, or not at all: a few steps at min_lr
# are not worth a second look at the plan.
MIN_EXTENSION = 0.01


def extend(
    plan: Plan, config: TrainConfig, clock: BudgetClock, step: int, dist: dist_util.DistInfo
) -> tuple[Plan, TrainConfig]:
    """At the planned last step, with time left (the loop ran faster than it did at the
    end of warmup): go on at min_lr for the steps that fit. The decay keeps its end
    (lr_decay_iters), so every step so far is what config.json says and the repeat flags
    give the same run; the evaluations along the way, if any, keep their interval."""
    interval_all = config.eval_interval >= config.max_iters
    left = dist_util.gather_objects(clock.steps_left(1), dist)[0]
    if left is None or left < MIN_EXTENSION * step:
        return plan, config
    total, decay_end = step + left, config.decay_iters
    changes = {"max_iters": total, "lr_decay_iters": decay_end,
               **({"eval_interval": total} if interval_all else {})}
    changes = {k: v for k, v in changes.items() if k not in plan.pinned}
    plan = _with_length(plan, total, decay_end=decay_end,
                        eval_interval=changes.get("eval_interval", plan.eval_interval))
    if dist.is_main:
        log.info("--time: the decay ended at step %d with time left: %d more steps at min_lr "
                 "(%d in all)", step, left, total)
    return plan, dataclasses.replace(config, **changes)


def _with_length(plan: Plan, total: int, **fields: Any) -> Plan:
    """The plan at `total` steps (its tokens, epochs and predicted loss follow), with
    `fields` replaced."""
    tokens = total * plan.shape.tokens_per_step
    unique = plan.tokens / plan.epochs if plan.epochs else tokens  # the training split's
    predicted = plan.predicted_val_loss and RULE.predict(plan.shape.params(), tokens, unique,
                                                         total)
    return dataclasses.replace(plan, max_iters=total, tokens=tokens, epochs=tokens / unique,
                               predicted_val_loss=predicted, **fields)
