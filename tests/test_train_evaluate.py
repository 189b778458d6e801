"""Evaluation: the seed's estimate_loss and its batch stacking, whole-split loss, the
metrics sink (metrics.jsonl and TensorBoard)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptlab.data import RandomBatches
from gptlab.model import GPT, ModelConfig
from gptlab.train.evaluate import MetricsLog, estimate_loss, evaluate_tokens, mean_batch_loss


def _tiny_gpt() -> GPT:
    return GPT(ModelConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))


@pytest.fixture
def model_and_batches():
    torch.manual_seed(0)
    tokens = torch.randint(0, 17, (500,))

    def make(split):
        return RandomBatches(tokens, split, batch_size=3, block_size=8, seed=7)

    return _tiny_gpt().eval(), make


def test_stacked_eval_equals_batch_by_batch(model_and_batches):
    """estimate_loss stacks eval batches into big forward calls: same mean as one by one."""
    model, make = model_and_batches
    model.train()
    one_by_one = estimate_loss(model, make, 10, splits=("val",), tokens_per_forward=1)
    stacked = estimate_loss(model, make, 10, splits=("val",), tokens_per_forward=3 * 8 * 4)
    default = estimate_loss(model, make, 10, splits=("val",))  # all 10 batches in one call
    model.eval()
    batches = make("val")
    expected = sum(model(*batches.get_batch())[1].item() for _ in range(10)) / 10
    assert one_by_one["val"] == pytest.approx(expected, rel=1e-6)
    assert stacked["val"] == pytest.approx(expected, rel=1e-5)
    assert default["val"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tokens_per_forward", [3 * 8 * 3, 3 * 8 * 4, None])
def test_mean_batch_loss_stacked_equals_one_batch_at_a_time(model_and_batches,
                                                            tokens_per_forward):
    """The stacking helper, groups that divide 10 batches evenly or not: the seed's mean."""
    model, make = model_and_batches
    with torch.no_grad():
        seed_way = make("val")
        losses = torch.zeros(10)
        for k in range(10):
            X, Y = seed_way.get_batch()
            _, loss = model(X, Y)
            losses[k] = loss.item()
        stacked = mean_batch_loss(model, make("val"), 10, tokens_per_forward=tokens_per_forward)
        single = mean_batch_loss(model, make("val"), 10, tokens_per_forward=1)
    assert stacked == pytest.approx(losses.mean().item(), rel=1e-5)
    assert single == pytest.approx(losses.mean().item(), rel=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_estimate_loss_restores_the_models_mode(model_and_batches, training):
    model, make = model_and_batches
    model.train(training)
    seen = []
    real_forward = model.forward

    def forward(*args, **kw):
        seen.append(model.training)
        return real_forward(*args, **kw)

    model.forward = forward
    out = estimate_loss(model, make, 2)
    assert set(out) == {"train", "val"}
    assert seen and not any(seen)  # evaluated in eval mode (no dropout)
    assert all(m.training is training for m in model.modules())


def test_estimate_loss_restores_the_mode_after_an_error(model_and_batches):
    model, _ = model_and_batches
    model.train()

    def broken(split):
        raise RuntimeError("no batches")

    with pytest.raises(RuntimeError):
        estimate_loss(model, broken, 2)
    assert model.training


def test_evaluate_tokens_restores_the_models_mode():
    model = _tiny_gpt().train()
    tokens = np.random.default_rng(0).integers(0, 17, 100)
    loss, count = evaluate_tokens(model, tokens, batch_size=4)
    assert count == (len(tokens) - 1) // 8 * 8 and loss > 0
    assert model.training


class _FakeWriter:
    def __init__(self):
        self.scalars, self.closed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_metrics_log_is_one_sink_for_jsonl_and_tensorboard(tmp_path):
    writer = _FakeWriter()
    log = MetricsLog(tmp_path / "metrics.jsonl", writer)
    train = {"kind": "train", "step": 1, "loss": 2.5, "lr": 1e-3, "tokens": 64, "time": 0.1}
    evaluation = {"kind": "eval", "step": 2, "tokens": 128, "time": 0.3, "train_loss": 2.4,
                  "val_loss": 2.45, "val_ppl": 11.6}
    log.write(train)
    log.write(evaluation)
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == [json.dumps(train), json.dumps(evaluation)]
    assert writer.scalars == [("train/loss", 2.5, 1), ("train/lr", 1e-3, 1),
                              ("eval/train_loss", 2.4, 2), ("eval/val_loss", 2.45, 2),
                              ("eval/val_ppl", 11.6, 2)]
    assert writer.closed


def test_metrics_log_truncate_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3):
        log.write({"kind": "train", "step": step, "loss": 1.0})
    log.close()
    path.write_text(path.read_text() + '{"kind": "tra')  # a torn last line
    log.truncate_after(2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
