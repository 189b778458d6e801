"""Row-invariant Linears: each row's bits do not depend on the rows beside it; the values
are F.linear's; the model is untouched outside the context."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlab.model import GPT, ModelConfig
from gptlab.row_invariant import RowInvariantForward, RowInvariantLinear, row_plan

CPU = torch.device("cpu")
# the lecture model's Linear shapes (in, out), where MKL's F.linear changes method with the
# row count, and a tiny one
SHAPES = [(384, 1152), (384, 1536), (1536, 384), (384, 65), (16, 48)]


def small_gpt(tie_weights: bool = True, bias: bool = True) -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32,
                         tie_weights=tie_weights, bias=bias)
    return GPT(config).eval()


@pytest.mark.parametrize(("n_in", "n_out"), SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_the_plan_holds_for_other_data(n_in, n_out, bias):
    plan = row_plan(n_in, n_out, CPU, torch.float32, 32, bias)
    assert 1 <= plan.pad <= plan.chunk
    g = torch.Generator().manual_seed(7)  # not the data the plan was measured on
    weight_t = torch.randn(n_in, n_out, generator=g)
    b = torch.randn(n_out, generator=g) if bias else None
    x = torch.randn(plan.chunk + 5, n_in, generator=g)  # past a chunk: split
    forward = RowInvariantForward(weight_t, b, plan)
    with torch.no_grad():
        full = forward(x)
        for m in range(1, x.shape[0]):  # padded, through the kernel, one product, chunks
            assert torch.equal(forward(x[:m]), full[:m]), f"{m} rows"
        if not plan.all_rows:  # torch's own product, where the plan uses it
            part = x[: plan.pad] @ weight_t if b is None else torch.addmm(b, x[: plan.pad],
                                                                          weight_t)
            assert torch.equal(part, full[: plan.pad])


def test_a_row_is_the_same_whatever_else_runs_beside_it():
    model = small_gpt()
    rows_invariant = RowInvariantLinear(model)
    g = torch.Generator().manual_seed(1)
    mine = torch.randn(1, 1, 32, generator=g)
    outputs = []
    with torch.no_grad(), rows_invariant:
        for others in range(rows_invariant.min_rows - 1, 40):
            batch = torch.randn(others + 1, 1, 32, generator=g)
            place = others // 2
            batch[place] = mine[0]
            for linear in rows_invariant.linears:
                if linear.in_features == 32:
                    outputs.append((linear, linear(batch)[place]))
    for linear in rows_invariant.linears:
        mine_everywhere = [out for owner, out in outputs if owner is linear]
        assert all(torch.equal(out, mine_everywhere[0]) for out in mine_everywhere)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_values_are_f_linear_and_the_model_is_untouched_outside(tie_weights):
    model = small_gpt(tie_weights=tie_weights)
    idx = torch.randint(0, 50, (5, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain, _ = model(idx)
        with RowInvariantLinear(model):
            inside, _ = model(idx)
        after, _ = model(idx)
    torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, plain)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_a_shared_weight_is_copied_once():
    shared = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    shared[1].weight = shared[0].weight
    assert RowInvariantLinear(shared).nbytes() == 8 * 8 * 4
    model = small_gpt()
    matrices = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert RowInvariantLinear(model).nbytes() == matrices * 4  # fp32


def test_a_weight_changed_in_place_or_replaced_is_copied_again():
    model = small_gpt(bias=False)
    rows_invariant = RowInvariantLinear(model)
    x = torch.randn(4, 1, 32)
    linear = model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        linear.weight.mul_(2.0)
        with rows_invariant:
            doubled = linear(x)
    torch.testing.assert_close(doubled, F.linear(x, linear.weight), rtol=1e-5, atol=1e-5)
    linear.weight = torch.nn.Parameter(torch.ones_like(linear.weight))  # a new tensor
    with torch.no_grad(), rows_invariant:
        ones = linear(x)
    torch.testing.assert_close(ones, F.linear(x, linear.weight), rtol=1e-5, atol=1e-5)


def test_fewer_rows_than_the_pad_and_more_than_a_chunk_are_padded_and_split(monkeypatch):
    from gptlab import row_invariant
    from gptlab.row_invariant import RowPlan

    model = small_gpt(bias=False)
    monkeypatch.setattr(row_invariant, "row_plan", lambda *a, **k: RowPlan(pad=4, chunk=5))
    rows_invariant = RowInvariantLinear(model)
    linear = model.transformer.h[0].mlp.c_fc
    x = torch.randn(13, 32)
    calls = []
    real = row_invariant._product
    monkeypatch.setattr(row_invariant, "_product",
                        lambda rows, w, b: calls.append(rows.shape[0]) or real(rows, w, b))
    with torch.no_grad(), rows_invariant:
        one = linear(x[:1])
        many = linear(x)
    assert calls == [4, 5, 5, 4]  # 1 row padded to 4; 13 rows as 5 + 5 + 3 (padded to 4)
    assert one.shape == (1, 128) and many.shape == (13, 128)
    torch.testing.assert_close(many, F.linear(x, linear.weight), rtol=1e-5, atol=1e-5)
    padded = torch.cat([x[:1], torch.zeros(3, 32)])
    assert torch.equal(one, real(padded, linear.weight.t().contiguous(), None)[:1])
