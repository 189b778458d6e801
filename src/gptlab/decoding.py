"""Batched decoding: many independent requests advanced by one forward pass per step.

The engine knows nothing about text: a request is a (B, T) block of prompt ids, a
`SamplingConfig` and a token budget; `step` returns the new ids. It is the server's
batch (`gptlab serve`) and the KV-cache path of `gptlab.generate` (one request). With
`batch_invariant` (the server) a request's tokens are the same alone or among others,
bitwise, for every pos_encoding and both attentions.

Design choices, and why:
- One `SlotKVCache` of `num_slots` rows × (block_size + 1, rounded up to a multiple of
  the attention's `align`) entries, allocated once; a request takes a run of B slots
  when it joins and gives them back (zeroed) when it leaves. One-row requests are moved
  down into the holes others leave, so the rows in use stay at the front and a step runs
  few idle ones. Entry block_size is scratch: rows that are not decoding this step write
  there, unseen.
- Each decode step runs the slots up to the highest in use, (R, 1) tokens at their own
  positions. Matmul kernels pick their method by shape, so a row of F.linear rounds
  differently with the number of rows beside it; with `batch_invariant` the step runs its
  Linears through `row_invariant.RowInvariantLinear` (x @ a transposed copy of the
  weight, whose rows agree bitwise for every row count from 2 up, measured per shape;
  a single row through `row_kernel`'s one-row product with the same bits, else padded
  to `min_rows` rows). LayerNorm and softmax are row-invariant.
- Attention in a decode step: one fused SDPA call for all rows, each row's keys masked
  past its own length and the keys padded to a multiple of `align` entries: a row then
  gets the same bits in any batch as alone (its length rounded up to `align`), measured
  at start-up (`row_invariant.attention_align`: 16 on an AVX-512 CPU; at other padded
  lengths SDPA rounds a row differently). Where no align works: one call per request
  over exactly its valid entries.
- A prompt is prefilled in chunks of `prefill_chunk` tokens, all B rows of a request in
  one pass (one chunk per request per step, so running rows are not stalled), with
  written-out masked attention; the same chunks alone or not. Requests in consecutive
  slots whose next chunks cover the same positions (a burst of prompts of one length)
  share the pass, through the row-invariant Linears, so each row keeps its bits.
- Past block_size a request follows `gptlab.generate`: `exact=True` recomputes the
  cropped window (the seed's loop), `exact=False` rolls the cache (rope) or restarts from
  the last half window (learned, sinusoidal).
- Sampling: requests with the same settings are sampled together, each with its own
  generator (`sampling.draw_tokens`: the ids `torch.multinomial` gives each alone); a
  row that samples a stop token repeats it until all B rows of its request have stopped.
- Logits that are not finite end that request (finish reason "error"), no other.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from gptlab.errors import GptlabError
from gptlab.model.gpt import GPT
from gptlab.row_invariant import ALIGNS, RowInvariantLinear, attention_align
from gptlab.sampling import SamplingConfig, draw_tokens, next_token_probs

PREFILL_CHUNK = 64

FinishReason = Literal["length", "stop", "cancelled", "error"]
Phase = Literal["prefill", "decode", "recompute", "done"]


@dataclass(eq=False)
class Request:
    """One request's state. `seq[:, :t]` holds the prompt (its last block_size tokens are
    what the model reads) and the tokens so far; `new_tokens` counts the latter."""

    seq: Tensor  # (B, T0 + max_new_tokens)
    t: int
    max_new_tokens: int
    config: SamplingConfig
    slots: list[int]
    generator: torch.Generator | None
    finished: list[bool]  # per row: sampled a stop token
    stop_set: frozenset[int]  # config.stop_tokens
    new_tokens: int = 0
    phase: Phase = "prefill"
    base: int = 0  # seq index of the token at cache position 0
    cached: int = 0  # tokens in the cache, positions 0..cached-1 (absolute when rolling)
    finish_reason: FinishReason | None = None
    last: list[int] = field(default_factory=list)  # the newest ids, as `last_tokens`
    last_logits: Tensor | None = field(default=None, repr=False)  # (B, V), the newest step's
    error: str | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def last_tokens(self) -> Tensor:
        """The newest (B,) ids."""
        return self.seq[:, self.t - 1]


class DecodingEngine:
    """Continuous batching over a fixed number of slots of one GPT.

    Args:
        model: the GPT; it is run in eval mode under no_grad (its mode is restored).
        num_slots: rows that can decode at once (at least `min_rows`).
        prefill_chunk: prompt tokens a joining row processes per step (default
            PREFILL_CHUNK, read when the engine is made).
        batch_invariant: run each step's Linears row-invariantly, so that a request's
            numbers do not depend on what else runs (the server); False runs the model as
            it is (one request alone: `gptlab.generate`'s default, which needs no
            transposed copy of the weights).
    """

    def __init__(self, model: GPT, num_slots: int, prefill_chunk: int | None = None,
                 *, batch_invariant: bool = True) -> None:
        prefill_chunk = PREFILL_CHUNK if prefill_chunk is None else prefill_chunk
        if not isinstance(model, GPT):
            raise GptlabError(f"DecodingEngine needs a GPT, got {type(model).__name__}")
        if num_slots < 1 or prefill_chunk < 1:
            raise GptlabError(f"num_slots and prefill_chunk must be >= 1, got "
                              f"{num_slots} and {prefill_chunk}")
        self.model = model
        self.window = model.config.block_size
        self.prefill_chunk = prefill_chunk
        # transposed weights; plans measured once per shape (row_invariant.row_plan)
        self.rows_invariant = RowInvariantLinear(model, num_slots) if batch_invariant else None
        self.min_rows = self.rows_invariant.min_rows if self.rows_invariant else 1
        # one scratch entry past the block (see the module docstring), and room to pad the
        # keys of a decode step to whole multiples of the attention's align
        cfg, weight = model.config, model.transformer.wte.weight
        heads = cfg.n_head if cfg.attention == "fused" else 1  # reference: a call per head
        align = attention_align(heads, cfg.head_size, _round_up(self.window + 1, ALIGNS[-1]),
                                weight.device, weight.dtype)
        self.cache = model.new_slot_cache(max(num_slots, self.min_rows),
                                          _round_up(self.window + 1, align or 1), align)
        self.num_slots = self.cache.k.shape[1]
        self.device = self.cache.k.device
        self.free: list[int] = list(range(self.num_slots))
        self.running: list[Request] = []
        self.rolling = model.config.pos_encoding == "rope"

    def cache_bytes(self) -> int:
        """Bytes of the KV cache, allocated once for all slots."""
        return self.cache.nbytes

    @property
    def free_slots(self) -> int:
        return len(self.free)

    def add(self, prompt: Tensor, max_new_tokens: int, config: SamplingConfig) -> Request:
        """Queue a (B, T ≥ 1) prompt on the model's device; it joins at the next `step`.
        Raises GptlabError when fewer than B slots are free."""
        B, T0 = prompt.shape
        start = self._free_run(B)
        if start is None:
            raise GptlabError(f"{B} rows asked for, {len(self.free)} of {self.num_slots} "
                              "decoding slots free: wait for a request to finish")
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(config.seed)
        seq = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=self.device)
        seq[:, :T0] = prompt
        slots = list(range(start, start + B))
        self.free = [slot for slot in self.free if not start <= slot < start + B]
        request = Request(seq, T0, max_new_tokens, config, slots, generator,
                          [False] * B, frozenset(config.stop_tokens),
                          base=max(0, T0 - self.window))
        self.running.append(request)
        if max_new_tokens == 0:
            self._finish(request, "length")
            self._compact()
        return request

    def cancel(self, request: Request) -> None:
        """End a request now (finish reason "cancelled"); its slots are free at once."""
        if not request.done:
            self._finish(request, "cancelled")
            self._compact()

    def step(self) -> list[Request]:
        """Advance every running request by one step; returns those that got a new
        token (their `last_tokens`), including ones that finished with it."""
        training = self.model.training
        if training:
            self.model.eval()
        try:
            with torch.no_grad():
                logits = self._step_logits()
        finally:
            if training:
                self.model.train()
        finished = len(self.running)
        self._sample(logits)
        if len(self.running) < finished:  # once a step, after every row that ended left
            self._compact()
        return [request for request, _ in logits]

    def _step_logits(self) -> list[tuple[Request, Tensor]]:
        """(request, (B, V) next-token logits) for each request that has them this step."""
        out: list[tuple[Request, Tensor]] = []
        phases = {phase: [r for r in self.running if r.phase == phase]
                  for phase in ("prefill", "decode", "recompute")}  # before any changes
        for group in self._prefill_groups(phases["prefill"]):
            out += self._prefill_chunk(group)
        if phases["decode"]:
            step_logits = self._decode(phases["decode"])  # (S, V)
            out += [(r, step_logits[r.slots[0] : r.slots[-1] + 1]) for r in phases["decode"]]
        for request in phases["recompute"]:
            context = request.seq[:, request.t - self.window : request.t]  # (B, block_size)
            logits, _ = self.model(context, last_only=True)  # (B, 1, V)
            out.append((request, logits[:, -1, :]))
        return out

    def _next_chunk(self, request: Request) -> tuple[int, int]:
        """(cache position, length) of a prefilling request's next prompt chunk."""
        remaining = request.t - request.base - request.cached
        return request.cached, min(self.prefill_chunk, remaining)

    def _prefill_groups(self, prefilling: list[Request]) -> list[list[Request]]:
        """Prefilling requests in runs that can share one forward pass: their slots follow
        one another and their next chunks cover the same positions (a burst of requests
        with prompts of one length joins in one pass instead of one each)."""
        groups: list[list[Request]] = []
        for request in sorted(prefilling, key=lambda r: r.slots[0]):
            last = groups[-1][-1] if groups else None
            if (last is not None and last.slots[-1] + 1 == request.slots[0]
                    and self._next_chunk(last) == self._next_chunk(request)):
                groups[-1].append(request)
            else:
                groups.append([request])
        return groups

    def _prefill_chunk(self, group: list[Request]) -> list[tuple[Request, Tensor]]:
        """Run the next prompt chunk of each request of `group` (B rows in all) in one
        forward pass, with written-out masked attention and, with `batch_invariant`,
        row-invariant Linears: each row's numbers are those it gets alone. → (request,
        (B_r, V) logits) for the requests whose prompt is now all in the cache."""
        cached, chunk = self._next_chunk(group[0])
        tokens = torch.cat([r.seq[:, r.base + cached : r.base + cached + chunk]
                            for r in group])  # (B, chunk)
        positions = torch.arange(cached, cached + chunk, device=self.device)
        positions = positions.expand(tokens.shape[0], chunk)  # (B, chunk)
        rows = slice(group[0].slots[0], group[-1].slots[-1] + 1)  # the group's slots are a run
        self.cache.begin(rows, positions, positions, self._mask(positions))
        with self.rows_invariant or contextlib.nullcontext():
            logits, _ = self.model(tokens, kv_cache=self.cache, last_only=True)  # (B, 1, V)
        out, row = [], 0
        for request in group:
            B = len(request.slots)
            request.cached += chunk
            if request.cached == request.t - request.base:  # its whole prompt is cached
                request.phase = "decode"
                out.append((request, logits[row : row + B, -1, :]))  # (B_r, V)
            row += B
        return out

    def _decode(self, decoding: list[Request]) -> Tensor:
        """One forward pass over the slots up to the highest in use (at least min_rows):
        each decoding row's newest token at its position; the other rows write to the
        scratch entry. → (S, V) logits."""
        top = max(slot for request in self.running for slot in request.slots) + 1
        S = max(top, self.min_rows)  # no Linear pads (see row_invariant)
        scratch = self.window
        idx = [0] * S
        positions = [0] * S
        entries = [scratch] * S  # idle rows write to the scratch entry, unseen
        groups = []  # (first row, end row, valid entries) per request: one attention call each
        for request in decoding:
            for slot, token in zip(request.slots, request.last, strict=True):
                idx[slot], positions[slot] = token, request.cached
                entries[slot] = request.cached % self.window
            length = min(request.cached + 1, self.window)
            groups.append((request.slots[0], request.slots[-1] + 1, length))
        as_column = dict(dtype=torch.long, device=self.device)
        self.cache.begin(slice(0, S), torch.tensor(positions, **as_column)[:, None],
                         torch.tensor(entries, **as_column)[:, None], sorted(groups))
        idx = torch.tensor(idx, **as_column)[:, None]  # (S, 1)
        with self.rows_invariant or contextlib.nullcontext():
            logits, _ = self.model(idx, kv_cache=self.cache, last_only=True)  # (S, 1, V)
        for request in decoding:
            request.cached += 1
        return logits[:, -1, :]

    def _mask(self, positions: Tensor) -> Tensor:
        """(B, T) positions → (B, 1, T, capacity): a query at position p sees the
        entries of positions ≤ p (all block_size of them once a rolling cache wrapped)."""
        entry = torch.arange(self.cache.capacity, device=self.device)  # (entries,)
        seen = (entry <= positions[..., None]) & (entry < self.window)  # (B, T, entries)
        return seen[:, None]

    def _sample(self, step: list[tuple[Request, Tensor]]) -> None:
        """generate's sampling step for every request that has logits: requests with the
        same settings are sampled together (`sampling.draw_tokens`: the same ids as one by
        one), then each handles its stop tokens and appends."""
        if not step:
            return
        finite = torch.isfinite(torch.cat([logits for _, logits in step])).all(dim=-1).tolist()
        groups: dict[tuple | None, list[tuple[Request, Tensor]]] = {}
        row = 0
        for request, logits in step:
            rows = logits.shape[0]
            if not all(finite[row : row + rows]):
                request.error = "the model produced non-finite logits (NaN or inf)"
                self._finish(request, "error")
            else:
                cfg = request.config
                greedy = cfg.greedy or cfg.temperature == 0
                key = None if greedy else (cfg.temperature, cfg.top_k, cfg.top_p)
                groups.setdefault(key, []).append((request, logits))
            row += rows
        for key, members in groups.items():
            logits = torch.cat([logits for _, logits in members])  # (R, V)
            if key is None:  # greedy
                ids = logits.argmax(dim=-1)
            else:
                probs = next_token_probs(logits, *key)  # (R, V)
                ids = draw_tokens(probs, [(lg.shape[0], r.generator) for r, lg in members])
            ids_list, start = ids.tolist(), 0  # one read of the ids for every row's checks
            for (request, logits), idx_next in zip(
                    members, ids.split([lg.shape[0] for _, lg in members]), strict=True):
                request.last_logits = logits
                self._append(request, idx_next, ids_list[start : start + len(idx_next)])
                start += len(idx_next)

    def _append(self, request: Request, idx_next: Tensor, ids: list[int]) -> None:
        """Stop tokens, then the (B,) new ids (also as the list `ids`) appended; finish or
        plan the next step. The stop checks run on the list: a few tensor ops per request
        per step cost ~10% of a 64-row step."""
        cfg, t = request.config, request.t
        if cfg.stop_tokens:
            if any(request.finished):  # a finished row repeats its last token, its stop token
                ids = [request.last[i] if done else token
                       for i, (token, done) in enumerate(zip(ids, request.finished, strict=True))]
                idx_next = torch.tensor(ids, dtype=torch.long, device=self.device)
            request.finished = [done or token in request.stop_set
                                for token, done in zip(ids, request.finished, strict=True)]
        request.seq[:, t] = idx_next
        request.last = ids
        request.t, request.new_tokens = t + 1, request.new_tokens + 1
        if cfg.stop_tokens and all(request.finished):
            self._finish(request, "stop")
        elif request.new_tokens == request.max_new_tokens:
            self._finish(request, "length")
        else:
            self._plan(request)

    def _plan(self, request: Request) -> None:
        """Choose how the newest token is run: cached, after a restart, or recomputed."""
        if request.phase != "decode" or request.cached < self.window:
            return
        if self.rolling and not request.config.exact:
            return  # the newest token overwrites the oldest entry
        if not request.config.exact:  # restart: the last half window from position 0
            request.phase, request.cached = "prefill", 0
            request.base = request.t - max(1, self.window // 2)
        else:  # the window slides: recompute it from now on, as the seed's loop does
            request.phase = "recompute"

    def _finish(self, request: Request, reason: FinishReason) -> None:
        request.phase, request.finish_reason = "done", reason
        self.running.remove(request)
        for slot in request.slots:
            self.cache.clear(slot)
        self.free += request.slots  # compacted once the step (or `cancel`) is over

    def _compact(self) -> None:
        """Move one-row requests from the top down into the free slots below them, so the
        rows in use stay at the front and a step runs few idle rows. Requests of several
        rows stay where they are: their slots remain one run (one attention call)."""
        owner = {slot: r for r in self.running for slot in r.slots}
        movable = sorted((s for s, r in owner.items() if len(r.slots) == 1), reverse=True)
        for hole in range(self.num_slots):
            if not movable or movable[0] < hole:
                break
            if hole in owner:
                continue
            top = movable.pop(0)
            self.cache.move(top, hole)
            request = owner.pop(top)
            request.slots = [hole]
            owner[hole] = request
        self.free = [slot for slot in range(self.num_slots) if slot not in owner]

    def _free_run(self, rows: int) -> int | None:
        """The first slot of `rows` consecutive free slots, or None."""
        free = set(self.free)
        for start in range(self.num_slots - rows + 1):
            if all(slot in free for slot in range(start, start + rows)):
                return start
        return None


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
