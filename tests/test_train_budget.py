"""`--time`: durations, the loss rule, the plan, and a budgeted run's stop and records."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptlab import runtime
from gptlab.cli import main
from gptlab.errors import ConfigError
from gptlab.train import TrainConfig, Trainer, budget, timed
from gptlab.train.budget import RULE, LossRule, Shape, make_plan, parse_duration
from gptlab.train.config import pinned_settings, resolve_config
from gptlab.train.timed import BudgetClock, probe_dtypes

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, make_dataset  # noqa: E402

TINY_LADDER = (Shape(1, 2, 16, 16, 4), Shape(2, 2, 32, 16, 4), Shape(2, 4, 64, 32, 8))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_text) -> Path:
    return make_dataset(tiny_text, tmp_path_factory.mktemp("ds"))


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("45", 45), ("2.5m", 150),
    (" 10M ", 600), (120, 120),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, message", [
    ("5 minutes", "is not a duration"), ("", "is not a duration"), ("m", "is not a duration"),
    ("5m5", "is not a duration"), ("-5m", "is not a duration"), ("10s", "too short"),
    ("nan", "too short"), (True, "is not a duration"),
])
def test_bad_durations_say_what_to_write(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_duration(text)


@given(unique=st.floats(1e3, 1e8), tokens=st.floats(1, 1e10), more=st.floats(1, 1e9))
def test_repeated_tokens_count_less(unique, tokens, more):
    d = RULE.effective_tokens(tokens, unique)
    assert d <= tokens * (1 + 1e-12)
    assert d <= unique * (1 + RULE.r_star) * (1 + 1e-12)
    if tokens <= unique:
        assert d == tokens
    assert RULE.effective_tokens(tokens + more, unique) >= d  # never worse with more data


@pytest.mark.parametrize("unique, seconds, winner", [
    (1_003_854, 50, 0), (1_003_854, 580, 2), (18_431, 50, 0)])
def test_fitted_rule_picks_the_shapes_the_runs_found_best(unique, seconds, winner):
    """At the probe's rates on a 2-core CPU (2026-12-07, bf16), the rule picks 3x128 for a
    minute of Tiny Shakespeare, 4x192 for ten (1.475 measured with the cosine to 1.2e-3,
    1.455 to 1.2e-4; 3x128 1.513-1.518), and 3x128 for a minute of an 18k-token corpus
    (the-verdict: 1.731-1.758, where 4x192, the pick of a rule tried and dropped, ended at
    2.293)."""
    rates = [(budget.LADDER[i], r) for i, r in enumerate((34.49, 20.44, 16.08, 10.7, 7.2))]
    shape, _, _ = budget.choose(rates, seconds, unique)
    assert shape == budget.LADDER[winner]


def test_rule_predicts_lower_loss_with_more_tokens_parameters_and_steps():
    rule = LossRule(E=1.0, A=10.0, alpha=0.3, B=10.0, beta=0.3, C=2.0, gamma=0.5, r_star=5.0)
    assert rule.predict(1e6, 1e7, 1e9, 100) < rule.predict(1e6, 1e6, 1e9, 100)
    assert rule.predict(1e7, 1e7, 1e9, 100) < rule.predict(1e6, 1e7, 1e9, 100)
    assert rule.predict(1e6, 1e7, 1e9, 400) < rule.predict(1e6, 1e7, 1e9, 100)
    # the formula, by hand
    assert rule.predict(1e6, 1e7, 1e9, 400) == pytest.approx(
        1 + 10 / 1e6**0.3 + 10 / 1e7**0.3 + 2 / 20)


def test_a_shape_probed_slower_than_a_larger_one_is_probed_again(monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER)
    rates = {TINY_LADDER[0]: [5.0, 200.0], TINY_LADDER[1]: [100.0], TINY_LADDER[2]: [0.5]}
    probed = []

    def measure(shape):
        probed.append(shape)
        return rates[shape].pop(0)

    rule = LossRule(E=1.0, A=30.0, alpha=0.5, B=30.0, beta=0.5, C=0.0, gamma=1.0, r_star=5.0)
    plan = make_plan(60.0, 2.0, 10**6, measure, {}, rule)
    assert probed == [*TINY_LADDER, TINY_LADDER[0]]  # the first again: it was the slowest
    assert [row["steps_per_s"] for row in plan.probe] == [200.0, 100.0, 0.5]


def test_fitted_rule_matches_the_sweep_within_its_error():
    """The rule's constants are the fit to docs/time-sweep.jsonl and the target runs of
    docs/time-targets.jsonl that carry the sweep's fields (`sweep_time.py --fit`): every
    dropout-free cosine run to 1.2e-3 there is predicted within 0.06 (the fit's RMS error
    is ~0.02)."""
    docs = Path(__file__).parents[1] / "docs"
    rows = [json.loads(line) for name in ("time-sweep.jsonl", "time-targets.jsonl")
            for line in (docs / name).read_text().splitlines()]
    rows = [r for r in rows if "params" in r and not r.get("dropout")
            and r.get("lr_schedule", "cosine") == "cosine" and r.get("min_lr", 1.2e-3) == 1.2e-3]
    assert len(rows) >= 20
    for r in rows:
        predicted = RULE.predict(r["params"], r["tokens"], r["unique_tokens"], r["steps"])
        assert abs(predicted - r["val_loss"]) < 0.06, r


def test_plan_probes_up_the_ladder_until_larger_is_worse(monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER)
    rates = {TINY_LADDER[0]: 200.0, TINY_LADDER[1]: 100.0, TINY_LADDER[2]: 0.5}
    probed = []

    def measure(shape):
        probed.append(shape)
        return rates[shape]

    rule = LossRule(E=1.0, A=30.0, alpha=0.5, B=30.0, beta=0.5, C=0.0, gamma=1.0, r_star=5.0)
    plan = make_plan(60.0, 2.0, 10**6, measure, {}, rule)
    assert probed == list(TINY_LADDER)  # the third is probed, found worse: the end
    assert plan.shape == TINY_LADDER[1]
    predictions = [row["predicted_val_loss"] for row in plan.probe]
    assert predictions[1] == min(predictions)
    # the steps fit in what is left: budget - start-up - probe - evaluation - writes
    assert plan.max_iters / rates[plan.shape] <= 60.0 - 2.0
    assert plan.max_iters == int(rates[plan.shape] * plan.train_s * budget.STEP_MARGIN)
    eval_s = 2 * budget.EVAL_ITERS / 3 / rates[plan.shape]
    assert plan.train_s == pytest.approx(60.0 - 2.0 - plan.probe_s - eval_s - budget._RESERVE_S)
    assert plan.tokens == plan.max_iters * plan.shape.tokens_per_step
    assert plan.epochs == pytest.approx(plan.tokens / 10**6)
    assert 1 <= plan.warmup_iters <= 100 and plan.min_lr == pytest.approx(plan.learning_rate / 100)


def test_probe_times_bf16_too_only_on_a_cpu_that_multiplies_it(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    assert probe_dtypes("auto", False, "cpu") == ["float32", "bfloat16"]
    assert probe_dtypes("float32", True, "cpu") == ["float32"]  # the user chose: kept
    assert probe_dtypes("auto", False, "cuda") == ["auto"]  # auto is bf16 there already
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert probe_dtypes("auto", False, "cpu") == ["auto"]


def test_plan_keeps_what_the_user_fixed(monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER)
    plan = make_plan(60.0, 0.0, 10**6, lambda shape: 50.0, {"n_embd": 32, "batch_size": 2})
    assert all(row["n_embd"] == 32 and row["batch_size"] == 2 for row in plan.probe)
    assert all(row["n_embd"] % row["n_head"] == 0 for row in plan.probe)


def test_small_corpus_gets_dropout_and_early_stopping(monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER[:1])
    plan = make_plan(600.0, 0.0, 1000, lambda shape: 100.0, {})
    assert plan.epochs * budget.SLOWEST_PACE > 2 * budget.MANY_EPOCHS and plan.dropout == 0.2
    assert plan.eval_interval == plan.max_iters // 10 and plan.early_stop == 2
    # ten evaluations along the way: their time is taken from training
    assert plan.train_s == pytest.approx(600.0 - plan.probe_s - 11 * 2 * budget.EVAL_ITERS
                                         / 3 / 100.0 - budget._RESERVE_S, rel=1e-3)
    big = make_plan(600.0, 0.0, 10**9, lambda shape: 100.0, {})
    assert big.dropout == 0.0 and big.eval_interval == big.max_iters and big.early_stop == 0
    assert big.train_settings()["lr_schedule"] == "cosine"  # it beat wsd: time-budget.md
    assert "lr_decay_start" not in big.train_settings()
    # a few epochs more than MANY_EPOCHS, which a slower loop would not reach: evaluations
    # along the way and early stopping, but no dropout
    wide = {"n_embd": 192}  # 442k parameters
    first = make_plan(600.0, 0.0, 1, lambda shape: 100.0, wide)  # evaluations along the way
    unique = first.tokens // 10  # so ten epochs
    assert unique < 12 * 192**2  # a corpus the model could memorise
    some = make_plan(600.0, 0.0, unique, lambda shape: 100.0, wide)
    assert budget.MANY_EPOCHS < some.epochs < budget.MANY_EPOCHS / budget.SLOWEST_PACE
    assert some.dropout == 0.0 and some.early_stop == 2
    # many epochs of a corpus larger than the model: early stopping, no dropout
    large = make_plan(600.0, 0.0, 2 * TINY_LADDER[0].params(), lambda shape: 100.0, {})
    assert large.epochs > 100 and large.dropout == 0.0 and large.early_stop == 2


def test_no_time_left_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER[:1])
    with pytest.raises(ConfigError, match="leaves no time to train"):
        make_plan(30.0, 29.9, 10**6, lambda shape: 1.0, {})


def test_clock_stops_when_a_step_and_the_evaluation_would_pass_the_deadline(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    clock = BudgetClock(deadline=1010.0, eval_iters=30)
    assert not clock.out_of_time(0)  # no step timed yet
    clock.stepped(0.3)  # evaluation estimated at 2 * 30 * 0.1 = 6 s
    assert not clock.out_of_time(1)  # 1000 + 0.3 + 6 + 0.5 < 1010
    now[0] = 1003.3
    assert clock.out_of_time(2)
    clock.evaluated(1.0)  # a measured evaluation replaces the estimate
    assert not clock.out_of_time(2)
    assert not BudgetClock(None, 30).out_of_time(5)
    probed = BudgetClock(deadline=1010.0, eval_iters=30, step_s=0.3)
    probed.stepped(5.0)  # the first step (allocations) does not count
    assert probed.step_s == 0.3
    probed.stepped(0.6)
    assert probed.step_s == 0.6


def test_time_with_max_iters_is_refused(data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "r"), *TINY_FLAGS,
                 "--time", "30s", "--max-iters", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: --time picks the number of steps")
    assert not (tmp_path / "r").exists()


def test_time_setting_in_toml_and_its_base_preset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('time = "5m"\nn_layer = 2\n')
    name, model, train = resolve_config(None, path)
    assert name == "speedrun" and train.time == "5m" and model["n_layer"] == 2
    assert pinned_settings(None, path) == {"n_layer"}
    assert "n_embd" in pinned_settings("lecture", None, {"time": "5m"})
    assert "max_iters" not in pinned_settings("lecture", None, {"time": "5m"})
    with pytest.raises(ConfigError, match="not a duration"):
        TrainConfig(time="soon")


def test_budgeted_run_plans_records_and_repeats(data_dir, tmp_path, monkeypatch, capsys,
                                                caplog):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER[:2])
    monkeypatch.setattr(budget, "MIN_SECONDS", 1.0)
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)  # probe both dtypes
    caplog.set_level("INFO")
    # the "process" starts when the command does (not at pytest's start)
    monkeypatch.setattr(budget, "process_start_time", time.time)
    run = tmp_path / "timed"
    # wsd (not the default, cosine) to see the second replan, where its cooldown begins;
    # no early stopping, which on this tiny corpus could end the run before the cooldown
    flags = ["--device", "cpu", "--no-progress", "--sample-tokens", "0", "--lr-schedule", "wsd",
             "--early-stop", "0"]
    assert main(["train", "--data", str(data_dir), "--out", str(run), *flags,
                 "--time", "10s"]) == 0
    err = capsys.readouterr().err
    assert "probed 2 shape(s)" in caplog.text and "pred. val" in caplog.text
    config = json.loads((run / "config.json").read_text())
    plan = config["time_budget"]
    assert config["train"]["time"] == "10s"
    assert config["train"]["max_iters"] == plan["max_iters"]
    assert config["model"]["n_embd"] == plan["shape"]["n_embd"]
    # each shape timed in float32 and bfloat16, the faster kept: the run trains in it
    assert "dtype" in caplog.text and plan["dtype"] in ("float32", "bfloat16")
    assert config["train"]["dtype"] == plan["dtype"]
    assert {row["dtype"] for row in plan["probe"]} <= {"float32", "bfloat16"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and evals[0]["step"] > 0  # no evaluation at step 0: it would cost budget
    assert evals[-1]["step"] == records[-1]["step"]  # the run ends with an evaluation
    # wsd: replanned at the end of warmup and again where the cooldown began, which is
    # pinned; the rate is the peak from warmup to there, then falls
    train = config["train"]
    assert train["lr_schedule"] == "wsd" and caplog.text.count("training for") == 2
    start = train["lr_decay_start"]
    assert train["warmup_iters"] < start < train["max_iters"] == plan["max_iters"]
    assert plan["lr_decay_start"] == start and plan["lr_schedule"] == "wsd"
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert {lrs[i] for i in range(train["warmup_iters"] + 1, start + 1)} == {
        train["learning_rate"]}
    assert lrs[max(lrs)] < train["learning_rate"]
    # the printed flags repeat the plan without --time
    repeat = err.split("replace --time with: ")[1].splitlines()[0].split()
    again = tmp_path / "again"
    assert main(["train", "--data", str(data_dir), "--out", str(again), *flags,
                 *repeat]) == 0
    config2 = json.loads((again / "config.json").read_text())
    assert config2["model"] == config["model"]
    assert {k: v for k, v in config2["train"].items() if k != "time"} == {
        k: v for k, v in config["train"].items() if k != "time"}


def test_run_out_of_time_ends_with_evaluation_and_checkpoint(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER[:1])
    monkeypatch.setattr(budget, "MIN_SECONDS", 1.0)
    trainer = Trainer(tmp_path / "r", {}, TrainConfig(data=str(data_dir), time="30s",
                                                     device="cpu", sample_tokens=0),
                      progress=False)
    assert trainer.config.max_iters > 1
    trainer.deadline = time.time()  # the budget is already spent: stop at once
    result = trainer.run()
    assert result.stopped == "time" and not result.interrupted
    assert result.step < trainer.config.max_iters
    assert result.last_eval and math.isfinite(result.last_eval["val_loss"])
    assert (tmp_path / "r" / "state" / f"step-{result.step:08d}").is_dir()


def test_early_stop_after_evaluations_without_a_new_best(data_dir, tmp_path):
    trainer = Trainer(tmp_path / "r", {"n_layer": 1, "n_head": 2, "n_embd": 16,
                                       "block_size": 16},
                      TrainConfig(data=str(data_dir), max_iters=50, eval_interval=1,
                                  eval_iters=1, early_stop=2, device="cpu", sample_tokens=0,
                                  learning_rate=0.0, min_lr=0.0, warmup_iters=0),
                      progress=False)
    result = trainer.run()  # lr 0: every evaluation after the first misses the best
    assert result.stopped == "early_stop" and not result.interrupted
    assert result.step == 2


def test_replan_fits_max_iters_to_the_measured_pace(monkeypatch):
    from gptlab.train.budget import Plan
    from gptlab.train.distributed import DistInfo
    from gptlab.train.timed import replan

    now = [100.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    clock = BudgetClock(deadline=200.0, eval_iters=30, step_s=0.1)
    for _ in range(11):  # the first step starts the pace; ten more at 0.2 s each
        clock.stepped(0.2)
        now[0] += 0.2
    pace = (now[0] - 100.0) / 10  # wall seconds per step since the first one ended
    assert clock.steps_left(1) == int((200.0 - now[0] - 2 * 30 * 0.2 / 3 - 0.5) / pace
                                      * timed.REPLAN_MARGIN)
    plan = Plan(budget_s=100, train_s=90, shape=TINY_LADDER[0], max_iters=900,
                learning_rate=0.01, warmup_iters=10, min_lr=0.001, dropout=0.0,
                eval_interval=900, tokens=900 * 64, epochs=1.0, predicted_val_loss=None,
                probe=[], probe_s=1.0, pinned=["eval_interval"])
    config = TrainConfig(max_iters=900, lr_decay_iters=900, eval_interval=900, warmup_iters=10)
    new_plan, new_config = replan(plan, config, clock, 11, DistInfo())
    total = 11 + clock.steps_left(1)
    assert new_config.max_iters == new_config.lr_decay_iters == new_plan.max_iters == total
    assert new_config.eval_interval == 900  # pinned by the user: kept
    assert new_plan.replanned_from == 900 and new_plan.tokens == total * 64
    assert replan(plan, config, BudgetClock(200.0, 30), 11, DistInfo()) == (plan, config)
    # at the wsd cooldown's start: the same fit, and the cooldown pinned where it begins
    wsd = dataclasses.replace(config, lr_schedule="wsd", warmup_iters=4)
    cool_plan, cool_config = replan(plan, wsd, clock, 11, DistInfo())
    assert cool_config.lr_decay_start == cool_plan.lr_decay_start == 11
    assert cool_config.max_iters == total and cool_config.decay_start == 11
    assert new_plan.lr_decay_start is None and new_config.lr_decay_start is None
    # the prediction follows the new length (the corpus: 900 * 64 tokens = 1 epoch)
    predicted, _ = replan(dataclasses.replace(plan, predicted_val_loss=2.0), config, clock, 11,
                          DistInfo())
    assert predicted.predicted_val_loss == RULE.predict(TINY_LADDER[0].params(), total * 64,
                                                        900 * 64, total)
    assert predicted.epochs == pytest.approx(total / 900)


def test_a_run_ahead_of_its_plan_goes_on_at_min_lr(monkeypatch):
    """At the planned last step with time left, the run is extended at min_lr: the decay
    keeps its end, so the steps so far are what the repeat flags give; with little time
    left (under MIN_EXTENSION of the steps) nothing changes."""
    from gptlab.train.budget import Plan
    from gptlab.train.distributed import DistInfo
    from gptlab.train.optim import get_lr
    from gptlab.train.timed import replan

    now = [100.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    clock = BudgetClock(deadline=200.0, eval_iters=30, step_s=0.1)
    for _ in range(101):
        clock.stepped(0.1)
        now[0] += 0.1  # 10 s for 100 steps: 90 s left at the planned end
    plan = Plan(budget_s=100, train_s=90, shape=TINY_LADDER[0], max_iters=100,
                learning_rate=0.01, warmup_iters=10, min_lr=0.001, dropout=0.0,
                eval_interval=100, tokens=100 * 64, epochs=1.0, predicted_val_loss=None,
                probe=[], probe_s=1.0)
    config = TrainConfig(max_iters=100, lr_decay_iters=100, eval_interval=100, warmup_iters=10,
                         learning_rate=0.01, min_lr=0.001)
    new_plan, new_config = replan(plan, config, clock, 100, DistInfo())
    total = 100 + clock.steps_left(1)
    assert total > 800  # ~90 s at 0.1 s a step
    assert new_config.max_iters == new_plan.max_iters == new_config.eval_interval == total
    assert new_config.lr_decay_iters == new_plan.decay_end == 100
    assert [get_lr(i, new_config) for i in range(100)] == [get_lr(i, config) for i in range(100)]
    assert {get_lr(i, new_config) for i in range(100, total)} == {0.001}
    assert "--lr-decay-iters 100" in new_plan.flags() and f"--max-iters {total}" in new_plan.flags()
    assert new_plan.tokens == total * 64 and new_plan.epochs == pytest.approx(total / 100)
    predicting = dataclasses.replace(plan, predicted_val_loss=2.0)  # follows the new length
    longer, _ = replan(predicting, config, clock, 100, DistInfo())
    assert longer.predicted_val_loss == RULE.predict(TINY_LADDER[0].params(), total * 64,
                                                     100 * 64, total)
    # on time: nothing to add
    now[0] = 200.0 - 1.5
    assert replan(plan, config, clock, 100, DistInfo()) == (plan, config)


def test_replans_are_due_at_warmup_end_the_wsd_cooldown_and_the_planned_end():
    from gptlab.train.timed import replan_due

    wsd = TrainConfig(max_iters=110, warmup_iters=10, lr_schedule="wsd")
    assert [s for s in range(200) if replan_due(s, wsd)] == [10, 90, 110]
    cosine = TrainConfig(max_iters=110, warmup_iters=10)
    assert [s for s in range(200) if replan_due(s, cosine)] == [10, 110]
    short = TrainConfig(max_iters=110, warmup_iters=2, lr_schedule="wsd")  # too short to time
    assert [s for s in range(200) if replan_due(s, short)] == [88, 110]


def test_a_budgeted_run_resumes_without_planning_again(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "LADDER", TINY_LADDER[:1])
    monkeypatch.setattr(budget, "MIN_SECONDS", 1.0)
    monkeypatch.setattr(budget, "process_start_time", time.time)
    run = tmp_path / "r"
    flags = ["--device", "cpu", "--no-progress", "--sample-tokens", "0"]
    assert main(["train", "--data", str(data_dir), "--out", str(run), *flags,
                 "--time", "8s"]) == 0
    first = json.loads((run / "config.json").read_text())
    step = max(json.loads(line)["step"] for line in
               (run / "metrics.jsonl").read_text().splitlines())
    more = step + 5
    assert main(["train", "--out", str(run), "--resume", "--max-iters", str(more),
                 *flags]) == 0
    again = json.loads((run / "config.json").read_text())
    assert again["train"]["max_iters"] == more and again["model"] == first["model"]
    assert again["time_budget"] == first["time_budget"]
    last = (run / "metrics.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["step"] == more


def test_a_dtype_the_device_lacks_fails_before_the_data_is_read(tmp_path, capsys):
    """--dtype is checked first (the plan may change it later): no waiting for data."""
    missing = tmp_path / "no-such-data"
    assert main(["train", "--data", str(missing), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--dtype", "float16", "--time", "30s"]) == 1
    err = capsys.readouterr().err
    assert "--dtype float16 needs CUDA" in err and "no-such-data" not in err
    assert not (tmp_path / "run").exists()
