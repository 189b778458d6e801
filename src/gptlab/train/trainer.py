"""The training loop: seed 001's loop made resumable, observable and multi-process.

Step numbering: `step` counts optimizer updates done. Evaluation (and a checkpoint) happens
at step 0, every `eval_interval` steps and at `max_iters`, so "val loss at step 2000" is
measured after 2000 updates, as the seed prints it.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from gptlab import checkpoint as ckpt
from gptlab import runtime
from gptlab.data import RandomBatches
from gptlab.errors import GptlabError
from gptlab.files import write_errors, write_json
from gptlab.integrity import verify_file
from gptlab.model import GPT, ModelConfig
from gptlab.tokenizers import Tokenizer, same_tokenizer
from gptlab.train import distributed as dist_util
from gptlab.train.budget import Plan
from gptlab.train.config import TrainConfig
from gptlab.train.console import ProgressBar, StopOnSignal
from gptlab.train.data import load_training_data
from gptlab.train.evaluate import MetricsLog, estimate_loss, loss_metrics, tensorboard_writer
from gptlab.train.optim import configure_optimizer, get_lr
from gptlab.train.timed import BudgetClock, plan_run, replan, replan_due

log = logging.getLogger(__name__)

_EVAL_SEED_OFFSET = 1_000_003  # eval batches come from their own, fixed stream


class TrainingDiverged(GptlabError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    step: int
    max_iters: int
    tokens: int  # trained by this call (a resumed run counts from where it resumed)
    elapsed: float
    interrupted: bool
    best_val_loss: float | None
    last_eval: dict[str, float] = field(default_factory=dict)
    sample: str | None = None
    is_main: bool = True
    start_step: int = 0  # the step this call started from (> 0 when resumed)
    stopped: str | None = None  # why it ended before max_iters: "time", "early_stop"
    plan: Plan | None = None  # what --time picked
    data_s: float = 0.0  # seconds spent finding or preparing the dataset


class Trainer:
    """Train a GPT into a run folder.

    Args:
        run_dir: created; must be new or empty unless `resume`.
        model_settings: ModelConfig fields (vocab_size comes from the dataset).
        resume: continue from RUN_DIR's latest checkpoint (config already merged by caller).
        progress: show a tqdm bar on stderr (rank 0 only).
        pinned: the settings the user chose; with `config.time` the budget plans the others
            (`gptlab.train.budget`).
        started: when the budget's clock started (time.time(); None: now). Preparing the
            dataset is not counted against it.
    """

    def __init__(
        self,
        run_dir: Path,
        model_settings: dict[str, Any],
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        pinned: Collection[str] = (),
        started: float | None = None,
    ) -> None:
        started = time.time() if started is None else started
        self.run_dir = Path(run_dir)
        self.config = config
        self.resume = resume
        self.progress = progress
        self.stop_requested = False
        self.dist, self.device = dist_util.setup(runtime.resolve_device(config.device))
        self.micro_steps = dist_util.micro_steps_per_rank(
            config.gradient_accumulation_steps, self.dist)
        runtime.resolve_dtype(config.dtype, self.device)  # a wrong --dtype fails before the data
        runtime.enable_tf32(self.device)
        if not resume and self.dist.is_main:
            self._check_new_run_dir()
        data_start = time.time()
        self.data = load_training_data(config, self.run_dir, self.dist)
        self.data_s = time.time() - data_start
        self.deadline: float | None = None
        self.plan: Plan | None = None
        if config.time and not resume:
            started += self.data_s  # preparing data is reported apart
            model_settings = self._plan_budget(model_settings, set(pinned), started)
        elif config.time:
            log.info("resuming: --time %s planned this run at its start; training on to "
                     "step %d", config.time, config.max_iters)
        self.ptdtype = runtime.resolve_dtype(self.config.dtype, self.device)  # the plan's
        self.autocast = runtime.autocast_factory(self.device, self.ptdtype)
        self._setup_model(model_settings)
        self.step = 0
        self.best_val_loss: float | None = None
        self.evals_since_best = 0  # for early_stop
        self.last_eval: dict[str, float] = {}
        self.metrics = MetricsLog(self.run_dir / ckpt.METRICS_FILE)
        if resume:
            self._restore()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            ckpt.write_tokenizer(self.run_dir, self.data.tokenizer_path)
        self._wrap_model()

    # ------------------------------------------------------------------ setup

    def _check_new_run_dir(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise GptlabError(f"--out {self.run_dir} is a file: pass a folder for the run")
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise GptlabError(
                f"--out {self.run_dir} already holds files: add --resume to continue that run, "
                "or pass a new --out"
            )

    def _plan_budget(
        self, model_settings: dict[str, Any], pinned: set[str], started: float
    ) -> dict[str, Any]:
        """Probe, pick and apply the --time plan; returns the model settings to build."""
        self.plan, model_settings, self.config = plan_run(
            model_settings, self._model_settings(model_settings), self.config, pinned, started,
            int(self.data.facts["train_tokens"]), self.device, self.dist)
        self.deadline = started + self.plan.budget_s
        return model_settings

    def _make_batches(self, split: str, seed: int) -> RandomBatches:
        return RandomBatches(self.data.dir, split, self.config.batch_size,
                             self.model_config.block_size, device=self.device, seed=seed)

    def _model_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings for ModelConfig: from init_from's run when fine-tuning, vocab from data."""
        settings = dict(settings)
        if self.config.init_from != "scratch":
            base = ckpt.read_run_config(Path(self.config.init_from))["model"]
            ignored = sorted(k for k in settings if k != "dropout" and base.get(k) != settings[k])
            if ignored:
                log.info("init_from %s: keeping its model shape (ignoring %s)",
                         self.config.init_from, ", ".join(ignored))
            settings = {**base, "dropout": settings.get("dropout", base.get("dropout", 0.0))}
        data_vocab, vocab = int(self.data.meta["vocab_size"]), settings.get("vocab_size")
        if vocab is not None and vocab < data_vocab:
            if self.config.init_from != "scratch":
                raise GptlabError(
                    f"the dataset's tokenizer has {data_vocab} tokens but --init-from "
                    f"{self.config.init_from} has vocab_size {vocab}: prepare the data with "
                    "the run's tokenizer"
                )
            log.info("vocab_size %d is below the dataset's %d tokens: using %d",
                     vocab, data_vocab, data_vocab)
        if vocab is None or vocab < data_vocab:
            settings["vocab_size"] = data_vocab
        return settings

    def _setup_model(self, settings: dict[str, Any]) -> None:
        self.model_config = ModelConfig.from_dict(self._model_settings(settings))
        runtime.seed_everything(self.config.seed)
        self.model = GPT(self.model_config)
        if self.config.init_from != "scratch":
            self._load_init_weights()
        self.model.to(self.device)
        self.optimizer = configure_optimizer(self.model, self.config, self.device.split(":")[0])
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.ptdtype == torch.float16 and self.device.startswith("cuda"))
        self.train_batches = self._make_batches("train", self.config.seed + self.dist.rank)

    def _load_init_weights(self) -> None:
        init_dir = Path(self.config.init_from)
        tok_path = init_dir / ckpt.TOKENIZER_FILE
        if tok_path.is_file() and not same_tokenizer(tok_path, self.data.tokenizer_path):
            raise GptlabError(
                f"--init-from {init_dir}: its tokenizer differs from the dataset's "
                f"({self.data.tokenizer_path}): prepare the data with its tokenizer, "
                f"`gptlab prepare --tokenizer-file {tok_path} --input TEXT --out DIR`, "
                "or pass --input TEXT instead of --data"
            )
        weights = init_dir / ckpt.BEST_WEIGHTS
        if not weights.exists():
            weights = init_dir / ckpt.LATEST_WEIGHTS
        ckpt.load_weights(weights, self.model)
        log.info("starting from the weights of %s", weights)

    def _wrap_model(self) -> None:
        self.raw_model = self.model
        if self.config.compile:
            self.model = torch.compile(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda") else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)

    def _write_config(self) -> None:
        doc = ckpt.run_config_dict(self.model_config, self.config.to_dict(), self.data.facts)
        if self.plan is not None:
            doc["time_budget"] = self.plan.to_dict()
        elif self.resume and (kept := ckpt.read_run_config(self.run_dir).get("time_budget")):
            doc["time_budget"] = kept  # a resumed --time run keeps the record of its plan
        write_json(self.run_dir / ckpt.CONFIG_FILE, doc)

    def _restore(self) -> None:
        tok_path = self.run_dir / ckpt.TOKENIZER_FILE
        if tok_path.is_file():
            verify_file(tok_path, f"copy the dataset's {self.data.tokenizer_path} over it")
        if tok_path.is_file() and not same_tokenizer(tok_path, self.data.tokenizer_path):
            raise GptlabError(
                f"{tok_path} differs from the dataset's tokenizer ({self.data.tokenizer_path}): "
                "resume with the dataset this run was trained on (--data)"
            )
        skipped: list[tuple[Path, GptlabError]] = []  # corrupt step folders passed over
        state = ckpt.load_checkpoint(self.run_dir, self.model, self.optimizer, self.device,
                                     on_skip=lambda step_dir, exc: skipped.append((step_dir, exc)))
        self.step = state["step"]
        self.best_val_loss = state.get("best_val_loss")
        runtime.set_rng_state(state["rng"])
        samplers = state["sampler"]
        if len(samplers) == self.dist.world_size:
            self.train_batches.load_state_dict(samplers[self.dist.rank])
        else:
            log.warning("resuming with %d processes instead of %d: batches are re-seeded",
                        self.dist.world_size, len(samplers))
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)
            for step_dir, exc in skipped:
                self.metrics.write(ckpt.set_aside_corrupt(self.run_dir, step_dir, exc, self.step))
            if self.step < self.config.max_iters:  # a resume with nothing to train keeps it
                self._write_config()
        log.info("resumed %s at step %d", self.run_dir, self.step)

    def save(self, is_best: bool = False) -> None:
        """Write a resumable checkpoint for the current step (all ranks gather, 0 writes)."""
        samplers = dist_util.gather_objects(self.train_batches.state_dict(), self.dist)
        if self.dist.is_main:
            state = {"step": self.step, "best_val_loss": self.best_val_loss,
                     "rng": runtime.rng_state(), "sampler": samplers,
                     "world_size": self.dist.world_size}
            ckpt.save_checkpoint(self.run_dir, self.raw_model, self.optimizer, state,
                                 keep_last=self.config.keep_last, is_best=is_best)
        self._saved_step = self.step

    # ------------------------------------------------------------------ the loop

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer update over all processes (accumulation is split by rank)."""
        return (self.config.batch_size * self.model_config.block_size
                * self.config.gradient_accumulation_steps)

    def run(self) -> TrainResult:
        """Train until max_iters (or a stop request) and return what happened.

        Seed 001's loop: every eval_interval steps estimate the loss on both splits (and
        checkpoint), then one optimisation step on a training batch, then log it. A resumed
        run does not evaluate again the step it resumed at: its checkpoint did.
        """
        cfg, start_step = self.config, self.step
        self._saved_step = self.step if self.resume else -1
        if cfg.tensorboard and self.dist.is_main:
            self.metrics.writer = tensorboard_writer(self.run_dir / "tensorboard")
        bar = ProgressBar(cfg.max_iters, self.step, self.tokens_per_step,
                           enabled=self.progress and self.dist.is_main)
        t0, train_time = time.time(), 0.0
        clock = BudgetClock(self.deadline, cfg.eval_iters,
                            self.plan.step_s() if self.plan else None)
        stopped = None
        with StopOnSignal(self), logging_redirect_tqdm():
            while True:
                if clock.budgeted and stopped is None and dist_util.all_ranks_any(
                        clock.out_of_time(self.step), self.dist, self.device):
                    stopped = "time"  # every rank together: each asks every step
                # every once in a while evaluate the loss on train and val sets, and save
                due = (self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters
                       or stopped is not None)
                # a --time run spends no budget on evaluating its untrained model
                skip = (self.resume and self.step == start_step) or (
                    clock.budgeted and self.step == 0 and stopped is None)
                if due and not skip and self._evaluate_and_save(t0, clock) and not stopped:
                    stopped = "early_stop"
                if stopped or self.step >= cfg.max_iters or self._should_stop():
                    break
                # one optimisation step: a batch, the loss, backward, update
                t = time.time()
                loss = self.train_step()
                dt = time.time() - t
                clock.stepped(dt)
                if clock.budgeted and not self.resume and replan_due(self.step, cfg):
                    cfg = self._replan(clock, bar)
                train_time += dt
                if self.step % cfg.log_interval == 0:
                    self._log({"kind": "train", "step": self.step, "loss": loss,
                               "lr": self.optimizer.param_groups[0]["lr"],
                               "tokens": self.tokens, "time": round(train_time, 3)})
                bar.update(loss, dt)
        bar.close()
        self._finish(stopped)
        return TrainResult(self.run_dir, self.step, cfg.max_iters,
                           (self.step - start_step) * self.tokens_per_step,
                           time.time() - t0, self.step < cfg.max_iters and stopped is None,
                           self.best_val_loss, self.last_eval,
                           is_main=self.dist.is_main, start_step=start_step, stopped=stopped,
                           plan=self.plan, data_s=self.data_s)

    def _replan(self, clock: BudgetClock, bar: ProgressBar) -> TrainConfig:
        """Fit max_iters to the pace the loop really runs at (`timed.replan`)."""
        self.plan, self.config = replan(self.plan, self.config, clock, self.step, self.dist)
        bar.bar.total = self.config.max_iters
        if self.dist.is_main:
            self._write_config()
        return self.config

    def _evaluate_and_save(self, t0: float, clock: BudgetClock) -> bool:
        """Estimate the losses, log them and checkpoint; True when training should stop
        early (`early_stop`)."""
        t = time.time()
        losses = self.evaluate()
        clock.evaluated(time.time() - t)
        is_best = self._note_eval(losses)
        self._log({"kind": "eval", "step": self.step, "tokens": self.tokens,
                   "time": round(time.time() - t0, 3), **losses})
        self.save(is_best=is_best)
        return self._early_stop()

    def _finish(self, stopped: str | None) -> None:
        """Say why the run stopped early, write the last checkpoint, close the log."""
        if stopped == "time":
            log.info("the --time budget is spent: stopped at step %d of %d", self.step,
                     self.config.max_iters)
        elif stopped == "early_stop":
            log.info("val loss missed its best %d evaluations in a row: stopped at step %d; "
                     "best.safetensors holds the best weights", self.config.early_stop,
                     self.step)
        if self._saved_step != self.step:
            self.save()
        self.metrics.close()
        if self.dist.enabled:
            log.info("rank %d weights %s", self.dist.rank,
                     dist_util.weights_digest(self.raw_model))

    @property
    def tokens(self) -> int:
        """Tokens trained on up to the current step."""
        return self.step * self.tokens_per_step

    def _log(self, record: dict[str, Any]) -> None:
        """Write one metrics record (rank 0 writes), and say an evaluation on stderr."""
        if not self.dist.is_main:
            return
        self.metrics.write(record)
        if record["kind"] == "eval":
            extra = "".join(f", val {k} {record['val_' + k]:.4f}" for k in ("bpc", "bpb")
                            if "val_" + k in record)
            log.info("step %d: train loss %.4f, val loss %.4f%s", self.step,
                     record["train_loss"], record["val_loss"], extra)

    def _note_eval(self, metrics: dict[str, float]) -> bool:
        """Keep an evaluation's results; True when its val loss is the best so far."""
        self.last_eval = metrics
        is_best = self.best_val_loss is None or metrics["val_loss"] < self.best_val_loss
        if is_best:
            self.best_val_loss = metrics["val_loss"]
        self.evals_since_best = 0 if is_best else self.evals_since_best + 1
        return is_best

    def _early_stop(self) -> bool:
        """True once `early_stop` evaluations in a row have missed the best val loss (the
        same on every rank: the losses are averaged over ranks)."""
        return 0 < self.config.early_stop <= self.evals_since_best

    def _should_stop(self) -> bool:
        return dist_util.all_ranks_any(self.stop_requested, self.dist, self.device)

    def evaluate(self) -> dict[str, float]:
        """estimate_loss on train and val, averaged over ranks, plus ppl / bpc / bpb."""
        rank_seed = self.config.seed + _EVAL_SEED_OFFSET + 7919 * self.dist.rank
        losses = estimate_loss(
            self.model, lambda split: self._make_batches(split, rank_seed + (split == "val")),
            self.config.eval_iters, self.autocast)
        if self.dist.enabled:
            t = torch.tensor([losses["train"], losses["val"]], device=self.device)
            torch.distributed.all_reduce(t)
            losses = {"train": t[0].item() / self.dist.world_size,
                      "val": t[1].item() / self.dist.world_size}
        val = loss_metrics(losses["val"], self.data.facts["val_chars_per_token"],
                           self.data.facts["val_bytes_per_token"])
        return {"train_loss": losses["train"], **{f"val_{k}": v for k, v in val.items()}}

    def train_step(self) -> float:
        """One optimizer update over `micro_steps` micro-batches; returns the mean loss."""
        lr = get_lr(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(self.micro_steps):
            x, y = self.train_batches.get_batch()  # (B, T) each
            if self.dist.enabled:
                self.model.require_backward_grad_sync = micro == self.micro_steps - 1
            with self.autocast():
                _, loss = self.model(x, y)
                loss = loss / self.micro_steps
            self.scaler.scale(loss).backward()
            total += loss.detach().float()
        if self.dist.enabled:
            torch.distributed.all_reduce(total)
            total /= self.dist.world_size
        loss_value = total.item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(self._diverged_message(loss_value))
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value

    def _diverged_message(self, loss_value: float) -> str:
        last = ckpt.latest_checkpoint_dir(self.run_dir)
        kept = (f"the last good checkpoint ({last.name}) is kept in {self.run_dir}"
                if last else "no checkpoint was written")
        return (f"loss is {loss_value} at step {self.step + 1}: training stopped; {kept}. "
                "Lower --learning-rate or set --grad-clip 1.0")


def train(
    run_dir: Path,
    model_settings: dict[str, Any],
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    pinned: Collection[str] = (),
    started: float | None = None,
) -> TrainResult:
    """Train (or resume) a run; see `Trainer`. Leaves the process group when distributed."""
    trainer, finished = None, False
    try:
        with write_errors(run_dir, lambda: ckpt.intact_checkpoint_note(Path(run_dir))):
            trainer = Trainer(run_dir, model_settings, config, resume=resume, progress=progress,
                              pinned=pinned, started=started)
            result = trainer.run()
        trained = result.step > result.start_step
        if (trainer.config.sample_tokens and trainer.dist.is_main and trained
                and not result.interrupted):
            result.sample = sample_text(trainer.raw_model, trainer.data.tokenizer,
                                        trainer.config.sample_tokens, config.seed)
        finished = True
        return result
    finally:
        # Drop the DDP wrapper (it holds the process group) while the interpreter is whole,
        # then leave the group together: a rank that tears gloo down alone, at exit, can
        # abort the process.
        trainer = None
        gc.collect()
        dist_util.teardown(barrier=finished)


def sample_text(
    model: torch.nn.Module, tokenizer: Tokenizer, max_new_tokens: int, seed: int
) -> str:
    """A short sample from a newline (or token 0) context, as the seed prints after training."""
    from gptlab.generate import generate

    device = next(model.parameters()).device
    try:
        start = tokenizer.encode("\n") or [0]
    except GptlabError:  # a vocabulary without a newline
        start = [0]
    idx = torch.tensor([start], dtype=torch.long, device=device)  # (1, t)
    was_training = model.training
    model.eval()
    out = generate(model, idx, max_new_tokens, seed=seed)  # (1, t + max_new_tokens)
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())
