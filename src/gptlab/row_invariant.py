"""Matmuls whose rows do not depend on the batch: how batched decoding keeps a request's
tokens the same alone or among others, at about the cost of decoding it alone.

A matmul kernel picks its method by shape. With torch 2.13 on CPU (MKL), `F.linear` of one
row rounds one way alone, another in 2-3 rows, a third in a block of 4 or 16 rows (which
depends on the CPU): a row's numbers change with how many other rows share the step.
Multiplying by the weight stored transposed, `x @ Wᵀ` with Wᵀ a contiguous (in, out)
copy, is steadier: measured on an AVX-512 CPU (docs/benchmarks.md), every row count from
2 up gives each row the same bits, wherever it sits; only 1 row (a matrix-vector product)
differs, and with 2 threads some shapes (e.g. 1536 → 384) switch method past 16 rows.
Other machines differ (with MKL's AVX2 code a row's bits change with its place in a
6-row tile), which is why `row_plan` measures rather than assumes.

So `RowInvariantLinear` runs each `F.linear` of a forward pass as `x @ Wᵀ` over chunks of
rows, each padded to at least `pad` rows and at most `chunk` long, where [pad, chunk] is a
range of row counts `row_plan` measured to agree, bitwise, for that weight's shape on this
device. Its cost: one transposed copy of each weight matrix (from 16 rows on the copy is the
faster of the two). Fewer rows than the pad (one row alone, on AVX-512) would pay for a
padded product (~1.2-1.4x a 1-row `F.linear`): where `gptlab.row_kernel`'s C product is
checked to give them the multi-row bits, they run through it instead, at the 1-row speed.
Where no range agrees, the C product runs every row (it rounds each row the same by
construction, at 1.2-1.6x MKL's time from 2 rows on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gptlab import row_kernel
from gptlab.model.cache import key_mask, padded_attention

PADS = (1, 2, 4, 8, 16, 32, 64)  # candidate smallest row counts, smallest first
MIN_CHUNK = 16  # a plan must let at least this many rows share one product
PROBE_ROWS = 64  # row counts checked, up to this (or the batch, if larger)

logger = logging.getLogger(__name__)
_plans: dict[tuple, RowPlan] = {}  # row_plan's answers (see its key)


@dataclass(frozen=True)
class RowPlan:
    """Run a product over `chunk`-row pieces, each padded to at least `pad` rows: every
    row count in [pad, chunk] gives a row the same bits. `one_row`: the block size at
    which `row_kernel.product` gives fewer than `pad` rows those bits too (no padding:
    a request alone), or None.
    `all_rows`: no range agrees on this machine, so the kernel runs every row (block
    `one_row`), which rounds each row the same by construction."""

    pad: int
    chunk: int
    one_row: int | None = None
    all_rows: bool = False


def row_plan(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype,
             rows: int = PROBE_ROWS, bias: bool = False) -> RowPlan:
    """The `RowPlan` for `x @ Wᵀ (+ bias)` with Wᵀ of shape (n_in, n_out), measured on
    random data once per shape, device, dtype, row count and torch thread count
    (milliseconds for a small model): the smallest pad in PADS whose agreeing range
    reaches MIN_CHUNK rows, and the longest such range up to max(rows, PROBE_ROWS); fewer
    rows than the pad go through the C kernel (`row_kernel`) where it gives them those
    bits. Where no range agrees, or only from more than 2 rows and the kernel does not
    match, the kernel runs every row (CPU float32); without it, the range as found, or,
    with a warning, the largest pad alone."""
    top = max(rows, PROBE_ROWS)
    key = (n_in, n_out, bias, device, dtype, top, torch.get_num_threads())  # threads matter
    if key not in _plans:
        _plans[key] = _measure_plan(n_in, n_out, bias, device, dtype, top)
    return _plans[key]


def _measure_plan(n_in: int, n_out: int, bias: bool, device: torch.device,
                  dtype: torch.dtype, top: int) -> RowPlan:
    gen = torch.Generator().manual_seed(0)
    weight_t = torch.randn(n_in, n_out, generator=gen).to(device, dtype)
    b = torch.randn(n_out, generator=gen).to(device, dtype) if bias else None
    x = torch.randn(top + 1, n_in, generator=gen).to(device, dtype)
    with torch.no_grad():
        products = [_product(x[:m], weight_t, b) for m in range(1, top + 2)]  # m = 1..top+1
        # agrees[m]: m rows give the same bits as the first m rows of m + 1
        agrees = [False] + [torch.equal(products[m - 1], products[m][:m])
                            for m in range(1, top + 1)]
        plan = next((RowPlan(pad, chunk) for pad, chunk in _ranges(agrees, top)
                     if _same_anywhere(x[0], weight_t, b, pad, chunk)), None)
    if plan is not None and plan.pad > 1:  # the kernel below the pad, if it rounds a row
        block = row_kernel.find_block(  # the way `chunk` rows do
            x[:4], weight_t, b, products[plan.chunk - 1][:4])
        if block is not None:
            return RowPlan(plan.pad, plan.chunk, block)
    if plan is not None and plan.pad <= 2:  # at most one idle row beside a lone one
        return plan
    if row_kernel.available(device, dtype):
        logger.debug("matmul rows change with the batch for %dx%d here: the C kernel runs "
                     "them", n_in, n_out)
        return RowPlan(1, top, row_kernel.BLOCKS[0], all_rows=True)
    if plan is not None:
        return plan
    logger.warning("no row count keeps matmul rows independent of the batch for %dx%d on %s: "
                   "texts may differ a little under load", n_in, n_out, device)
    return RowPlan(PADS[-1], PADS[-1])


def _ranges(agrees: list[bool], top: int) -> list[tuple[int, int]]:
    """(pad, chunk) for each pad in PADS, smallest first, whose row counts pad..chunk
    agree and reach MIN_CHUNK rows."""
    out = []
    for pad in PADS:
        chunk = pad
        while chunk < top and agrees[chunk]:
            chunk += 1
        if chunk >= MIN_CHUNK:
            out.append((pad, chunk))
    return out


def _same_anywhere(row: Tensor, weight_t: Tensor, bias: Tensor | None, pad: int,
                   chunk: int) -> bool:
    """One row copied into every place of a `pad`- and a `chunk`-row product: all equal?"""
    alone = _product(row.expand(pad, -1).contiguous(), weight_t, bias)  # (pad, n_out)
    full = _product(row.expand(chunk, -1).contiguous(), weight_t, bias)  # (chunk, n_out)
    return bool((alone == alone[0]).all() and (full == alone[0]).all())


class RowInvariantLinear:
    """Within `with RowInvariantLinear(model):`, every nn.Linear of `model` (the tied
    lm_head too) computes each row's result independently of the other rows (see the
    module docstring); outside it the model is untouched.

    Entering puts a row-invariant forward on each Linear (leaving takes it off again),
    made from a transposed copy of its weight, remade when a weight is replaced or
    changed in place (its version counter moves) or torch's thread count changes. Not
    for a model that another thread runs at the same time."""

    def __init__(self, model: nn.Module, rows: int = PROBE_ROWS) -> None:
        self.rows = rows
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self._made_for: tuple = ()
        self._forwards: list[RowInvariantForward] = []
        self._refresh()

    @property
    def min_rows(self) -> int:
        """Fewest rows every product takes in one piece: run at least this many (idle ones
        are fine) and no Linear pads (1 where the C kernel serves every Linear's few rows)."""
        return max(1 if forward.plan.one_row else forward.plan.pad
                   for forward in self._forwards)

    def nbytes(self) -> int:
        """Bytes held by the transposed copies (tied weights are copied once)."""
        copies = {id(f.weight_t): f.weight_t for f in self._forwards}
        return sum(t.numel() * t.element_size() for t in copies.values())

    def _refresh(self) -> None:
        made_for = (torch.get_num_threads(),
                    *((id(m.weight), m.weight._version) for m in self.linears))
        if made_for == self._made_for:
            return
        copies: dict[int, Tensor] = {}  # a tied weight is copied once
        self._forwards = []
        for linear in self.linears:
            weight = linear.weight
            if id(weight) not in copies:
                copies[id(weight)] = weight.detach().t().contiguous()  # (in, out)
            plan = row_plan(weight.shape[1], weight.shape[0], weight.device, weight.dtype,
                            self.rows, linear.bias is not None)
            self._forwards.append(RowInvariantForward(copies[id(weight)], linear.bias, plan))
        self._made_for = made_for

    def __enter__(self) -> RowInvariantLinear:
        self._refresh()
        for linear, forward in zip(self.linears, self._forwards, strict=True):
            linear.__dict__["forward"] = forward  # an instance attribute, found before the class's
        return self

    def __exit__(self, *exc: object) -> None:
        for linear in self.linears:
            del linear.__dict__["forward"]


class RowInvariantForward:
    """nn.Linear's forward as x @ Wᵀ (+ bias, in the same addmm) over chunks of
    `plan.chunk` rows, each padded to `plan.pad` rows: (..., in) → (..., out), each row
    the same whatever the others."""

    def __init__(self, weight_t: Tensor, bias: Tensor | None, plan: RowPlan) -> None:
        self.weight_t, self.bias, self.plan = weight_t, bias, plan

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (R, in)
        n, plan = rows.shape[0], self.plan
        if plan.all_rows or (n < plan.pad and plan.one_row):  # the C kernel: a request alone
            out = row_kernel.product(rows.contiguous(), self.weight_t, self.bias, plan.one_row)
        elif plan.pad <= n <= plan.chunk:  # the common case: one product
            out = _product(rows, self.weight_t, self.bias)
        else:
            out = self._in_chunks(rows)
        return out.view(*x.shape[:-1], -1)  # (..., out)

    def _in_chunks(self, rows: Tensor) -> Tensor:
        pad, chunk = self.plan.pad, self.plan.chunk
        pieces = []
        for start in range(0, rows.shape[0], chunk):
            piece = rows[start : start + chunk]
            n = piece.shape[0]
            if n < pad and self.plan.one_row:
                pieces.append(row_kernel.product(piece.contiguous(), self.weight_t,
                                                 self.bias, self.plan.one_row))
                continue
            if n < pad:
                piece = torch.cat([piece, piece.new_zeros(pad - n, piece.shape[1])])
            pieces.append(_product(piece, self.weight_t, self.bias)[:n])  # (n, out)
        return torch.cat(pieces)


def _product(rows: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """(R, in) @ (in, out) (+ bias): the product `row_plan` measures."""
    return rows @ weight_t if bias is None else torch.addmm(bias, rows, weight_t)


ALIGNS = (8, 16, 32, 64)  # candidate key-length multiples for attention, smallest first
_aligns: dict[tuple, int | None] = {}  # attention_align's answers (see its key)


def attention_align(n_head: int, head_size: int, capacity: int, device: torch.device,
                    dtype: torch.dtype) -> int | None:
    """The smallest key-length multiple `align` (of ALIGNS) at which fused attention is
    row-invariant for decoding: one query per row, keys padded to a multiple of `align`
    and masked past each row's own length, every row gets the same bits in any batch and
    at any padded length up to `capacity` as alone over its length rounded up to `align`.
    None when no candidate does (then each request needs its own call over exactly its
    entries). Measured on random data once per shape, device, dtype and thread count.

    Why a multiple: measured on an AVX-512 CPU, a row's bits agree at every padded length
    that is a multiple of 16 and not at others (docs/benchmarks.md, "One attention call
    per decode step"); likely torch's CPU kernel sums keys in 16-wide vector pieces."""
    key = (n_head, head_size, capacity, device, dtype, torch.get_num_threads())
    if key not in _aligns:
        _aligns[key] = next((align for align in ALIGNS if _aligned_attention_agrees(
            n_head, head_size, capacity, device, dtype, align)), None)
        if _aligns[key] is None:
            logger.debug("padded attention is not row-invariant on %s for %d heads of %d: "
                         "one attention call per request", device, n_head, head_size)
    return _aligns[key]


def _aligned_attention_agrees(n_head: int, head_size: int, capacity: int,
                              device: torch.device, dtype: torch.dtype, align: int) -> bool:
    """Rows of edge and random lengths, all at once padded to the longest length that
    fits, against each alone padded to its own multiple of `align`: all equal?"""
    gen = torch.Generator().manual_seed(align)
    top = capacity - capacity % align  # the longest padded length that fits
    if top < align:
        return False
    edges = [n for n in (1, align - 1, align, align + 1, top // 2 + 1, top) if 1 <= n <= top]
    rounds = [edges, *(torch.randint(1, top + 1, (8,), generator=gen).tolist() for _ in "ab")]
    scale = head_size**-0.5
    for lengths in rounds:
        rows = len(lengths)
        q, k, v = (torch.randn(rows, n_head, t, head_size, generator=gen).to(device, dtype)
                   for t in (1, top, top))
        with torch.no_grad():
            together = padded_attention(q, k, v, key_mask(lengths, top, device), scale)
            for row, n in enumerate(lengths):
                own = key_mask([n], -(-n // align) * align, device)
                alone = padded_attention(q[row : row + 1], k[row : row + 1], v[row : row + 1],
                                         own, scale)
                if not torch.equal(alone[0], together[row]):
                    return False
    return True
