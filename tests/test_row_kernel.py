"""The C kernel: a single row gets the bits the multi-row product gives it, so a request
alone is not padded; where torch's product has no agreeing row counts the kernel runs
every row; without a compiler, or where it disagrees, rows are padded as before."""

from __future__ import annotations

import shutil

import pytest
import torch

from gptlab import row_invariant, row_kernel
from gptlab.row_invariant import RowInvariantLinear, row_plan

CPU = torch.device("cpu")
# the lecture model's Linear shapes (in, out), GPT-2's feed-forward output (3072 inputs:
# several blocks of 384), a tiny one
SHAPES = [(384, 1152), (384, 1536), (1536, 384), (384, 65), (3072, 768), (16, 48)]
needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture
def fresh_kernel(monkeypatch):
    """No compiled kernel and no measured plans: the next row_plan starts over."""
    monkeypatch.setattr(row_kernel, "_kernel", [])
    monkeypatch.setattr(row_invariant, "_plans", {})


@needs_compiler
@pytest.mark.parametrize(("n_in", "n_out"), SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_one_row_gets_the_bits_of_many_rows(n_in, n_out, bias):
    plan = row_plan(n_in, n_out, CPU, torch.float32, 32, bias)
    assert plan.one_row is not None  # a compiler: the kernel serves one row, or all rows
    g = torch.Generator().manual_seed(11)  # not the data the plan was measured on
    weight_t = torch.randn(n_in, n_out, generator=g)
    b = torch.randn(n_out, generator=g) if bias else None
    x = torch.randn(max(8, plan.pad), n_in, generator=g)
    if plan.all_rows:  # torch's product has no agreeing row counts on this CPU
        many = row_kernel.product(x, weight_t, b, plan.one_row)
    else:  # a row count the plan runs torch's product on
        many = x @ weight_t if b is None else torch.addmm(b, x, weight_t)
    for row in range(8):
        one = row_kernel.product(x[row : row + 1], weight_t, b, plan.one_row)
        assert torch.equal(one[0], many[row]), f"row {row}"
    alone = x[:1] @ weight_t if b is None else torch.addmm(b, x[:1], weight_t)
    if n_in > 16 and not plan.all_rows:  # why: torch's 1-row product rounds otherwise
        assert not torch.equal(alone[0], many[0])


@needs_compiler
@pytest.mark.parametrize(("n_in", "n_out"), [(384, 1536), (1536, 384), (384, 65), (16, 48)])
def test_the_kernel_rounds_a_row_the_same_in_any_batch_at_any_place(n_in, n_out):
    g = torch.Generator().manual_seed(5)
    weight_t, b = torch.randn(n_in, n_out, generator=g), torch.randn(n_out, generator=g)
    mine = torch.randn(1, n_in, generator=g)
    alone = row_kernel.product(mine, weight_t, b, 384)
    for rows in (2, 3, 4, 5, 8, 13):  # whole 4-row tiles and partial ones
        for place in (0, rows // 2, rows - 1):
            batch = torch.randn(rows, n_in, generator=g)
            batch[place] = mine[0]
            assert torch.equal(row_kernel.product(batch, weight_t, b, 384)[place], alone[0])
    torch.testing.assert_close(alone, torch.addmm(b, mine, weight_t), rtol=1e-5, atol=1e-4)


@needs_compiler
def test_where_no_row_counts_agree_the_kernel_runs_every_row(fresh_kernel, monkeypatch):
    real = row_invariant._product

    def shifty(rows, w, b):  # a product whose rounding moves with a row's place
        return real(rows, w, b) + torch.arange(rows.shape[0])[:, None] * 1e-3
    monkeypatch.setattr(row_invariant, "_product", shifty)
    plan = row_plan(384, 384, CPU, torch.float32, 32, True)
    assert plan.all_rows and plan.one_row == row_kernel.BLOCKS[0]
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 384)
    rows_invariant = RowInvariantLinear(linear)
    x = torch.randn(7, 384)
    with torch.no_grad(), rows_invariant:
        one, seven = linear(x[3:4]), linear(x)
    assert rows_invariant.min_rows == 1
    assert torch.equal(one[0], seven[3])
    torch.testing.assert_close(seven, torch.nn.functional.linear(x, linear.weight, linear.bias),
                               rtol=1e-5, atol=1e-4)


@needs_compiler
def test_a_linear_of_one_row_runs_the_kernel_unpadded(monkeypatch):
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    calls = []
    real = row_invariant._product
    monkeypatch.setattr(row_invariant, "_product",
                        lambda rows, w, b: calls.append(rows.shape[0]) or real(rows, w, b))
    rows_invariant = RowInvariantLinear(linear)
    x = torch.randn(5, 384)
    with torch.no_grad(), rows_invariant:
        one, five = linear(x[2:3]), linear(x)
    assert rows_invariant.min_rows == 1
    plan = rows_invariant._forwards[0].plan
    # the one row went through the kernel, not a padded product (5 rows too, below a pad)
    assert calls == ([5] if plan.pad <= 5 and not plan.all_rows else [])
    assert torch.equal(one[0], five[2])


@pytest.mark.parametrize("compiler", ["/nonexistent/cc", "false"])  # missing; fails
def test_without_a_compiler_one_row_is_padded_to_two(fresh_kernel, monkeypatch, compiler):
    monkeypatch.setenv("CC", compiler)
    assert row_kernel.load() is None
    plan = row_plan(384, 384, CPU, torch.float32, 32, True)
    assert plan.one_row is None and not plan.all_rows and plan.pad > 1  # 2 on AVX-512
    linear = torch.nn.Linear(384, 384)
    assert RowInvariantLinear(linear).min_rows == plan.pad


@needs_compiler
def test_a_kernel_that_rounds_otherwise_is_not_used(fresh_kernel, monkeypatch):
    monkeypatch.setattr(row_kernel, "BLOCKS", (128, 256))  # MKL sums 384 inputs at a time
    plan = row_plan(384, 1536, CPU, torch.float32, 32, False)
    assert plan.one_row is None or plan.all_rows  # all rows: where MKL has no short range
    assert row_plan(16, 48, CPU, torch.float32, 32, False).one_row == 128  # one block: agrees


def test_a_temp_folder_that_fails_leaves_the_padding(fresh_kernel, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(row_kernel.tempfile, "TemporaryDirectory", full)
    assert row_kernel.load() is None  # no traceback: the server starts, padded


@needs_compiler
def test_cc_with_options_in_it_is_split(fresh_kernel, monkeypatch):
    monkeypatch.setenv("CC", "cc -O1")
    assert row_kernel.load() is not None


def test_the_kernel_is_only_tried_on_cpu_float32(fresh_kernel):
    x, weight_t = torch.randn(2, 8, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    assert row_kernel.find_block(x, weight_t, None, x @ weight_t) is None
    assert row_kernel._kernel == []  # not even compiled


@needs_compiler
def test_a_request_alone_decodes_the_bits_it_gets_among_others_in_a_wider_model():
    """Through the whole model: 192 channels, so the feed-forward output sums 768 inputs
    (two of MKL's 384-input blocks). Alone, a request's rows go through the kernel; among
    four others, through torch's product: the same logits, bitwise, at every step."""
    from gptlab.decoding import DecodingEngine
    from gptlab.model import GPT, ModelConfig
    from gptlab.sampling import SamplingConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=32, n_layer=2, n_head=3, n_embd=192))
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(1))
    single, busy = DecodingEngine(model.eval(), 1), DecodingEngine(model, 5)
    assert single.min_rows == 1  # no padding: the kernel serves one row
    mine = single.add(prompt, 10, SamplingConfig(seed=3))
    for j in range(4):
        other = torch.randint(0, 50, (1, 2 + j), generator=torch.Generator().manual_seed(j))
        busy.add(other, 10, SamplingConfig(seed=j))
    theirs = busy.add(prompt, 10, SamplingConfig(seed=3))
    while not mine.done:
        single.step()
        busy.step()
        assert torch.equal(mine.last_logits, theirs.last_logits)
    assert torch.equal(mine.seq, theirs.seq)
