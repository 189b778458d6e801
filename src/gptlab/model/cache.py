"""The key/value cache that lets generation process each new token once.

Each attention layer keeps the keys and values of the tokens already seen, so a step
computes only the new token's query, key and value instead of re-running the whole context.

Two ways to use the space (capacity = block_size slots per layer):
- linear (`rolling=False`): token t goes to slot t; the cache is full after block_size
  tokens and the caller must recompute or restart (absolute position encodings need this:
  once the window slides every token's position changes).
- rolling (`rolling=True`, rope only): token t goes to slot t % capacity, overwriting the
  oldest token, so a new token attends to the latest block_size tokens. RoPE keys carry
  their absolute position as a rotation, and attention depends only on relative positions,
  so a cached key never needs updating. See `gptlab.generate` for how this differs from
  re-running the cropped window (it is sliding-window attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab.errors import GptlabError


def key_mask(lengths: list[int], padded: int, device: torch.device) -> Tensor:
    """(R, 1, 1, padded) bool: row r sees its first `lengths[r]` entries."""
    seen = torch.arange(padded, device=device) < torch.tensor(lengths, device=device)[:, None]
    return seen[:, None, None, :]


def padded_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """One query per row over the entries its `key_mask` row lets it see, all rows in one
    fused call over the first mask.shape[-1] entries: q (R, nh, 1, hs), k and v (R, nh, ≥
    that, hs) → (R, nh, 1, hs)."""
    padded = mask.shape[-1]
    return F.scaled_dot_product_attention(q, k[:, :, :padded], v[:, :, :padded],
                                          attn_mask=mask, scale=scale)


class KVCache:
    """Keys and values of all layers for a batch, in preallocated buffers.

    Buffers have shape (n_layer, B, nh, capacity, hs). `pos` counts the tokens already
    processed, which is also the absolute position of the next token. A forward pass
    writes every layer with `write`, then calls `advance` once.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_size: int,
        capacity: int,
        *,
        rolling: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch_size, n_head, capacity, head_size)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.rolling = rolling
        self.pos = 0

    def check_room(self, n_new: int) -> None:
        """Raise unless `n_new` tokens can be written at the current position."""
        if self.pos + n_new <= self.capacity:
            return
        if not self.rolling:
            raise GptlabError(
                f"KV cache full: {self.pos} + {n_new} tokens exceed its {self.capacity} "
                "slots (block_size); recompute the cropped window or start a new cache"
            )
        if n_new != 1:
            raise GptlabError(
                f"a rolling KV cache past its {self.capacity} slots takes one token per "
                f"step, got {n_new}"
            )

    def write(
        self, layer: int, k: Tensor, v: Tensor, head: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Store the new keys/values of one layer and return all keys/values to attend to.

        Args:
            k, v: new keys/values of `layer`, (B, nh, T, hs), or (B, T, hs) for one `head`.
            head: write only this head (the reference attention's per-head modules).

        Returns:
            keys and values (B, nh, L, hs) (or (B, L, hs) for one head), L the number of
            cached tokens including the new ones. The new tokens are the last T of them
            unless a rolling cache has wrapped (then T == 1 and order does not matter:
            the single query attends to every slot).
        """
        n_new = k.shape[-2]
        k_buf, v_buf = self.k[layer], self.v[layer]  # (B, nh, cap, hs)
        if head is not None:
            k_buf, v_buf = k_buf[:, head], v_buf[:, head]  # (B, cap, hs)
        if self.pos + n_new <= self.capacity:
            k_buf[..., self.pos : self.pos + n_new, :] = k
            v_buf[..., self.pos : self.pos + n_new, :] = v
            end = self.pos + n_new
            return k_buf[..., :end, :], v_buf[..., :end, :]
        slot = self.pos % self.capacity  # rolling, one token: overwrite the oldest
        k_buf[..., slot : slot + 1, :] = k
        v_buf[..., slot : slot + 1, :] = v
        return k_buf, v_buf

    def advance(self, n_new: int) -> None:
        """Record that `n_new` tokens were written to every layer."""
        self.pos += n_new


class SlotKVCache:
    """Keys and values for a fixed number of independent rows ("slots"), each with its own
    length and positions: the cache of batched decoding (`gptlab.decoding`).

    Buffers have shape (n_layer, S, nh, capacity, hs), allocated once. Before each forward
    pass the caller names the slots it runs (`begin`): a contiguous range, with each row's
    new tokens' absolute positions, the cache entries they are written to and what each
    query may attend to (a mask, or each request's number of valid entries). `attend`
    keeps a row's shapes, so its numbers, independent of the batch (see `gptlab.decoding`).
    """

    def __init__(
        self,
        n_layer: int,
        num_slots: int,
        n_head: int,
        head_size: int,
        capacity: int,
        *,
        align: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, num_slots, n_head, capacity, head_size)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.rows = slice(0, num_slots)
        self.positions = torch.zeros(num_slots, 1, dtype=torch.long, device=device)
        self.entries = self.positions
        self.mask = torch.ones(num_slots, 1, 1, capacity, dtype=torch.bool, device=device)
        self.row_index = torch.arange(num_slots, device=device)[:, None]
        self.cos_sin: tuple[Tensor, Tensor] | None = None  # rope: set by the model
        # one query per row: attend in one fused call over keys padded to a multiple of
        # `align` (row_invariant.attention_align), or None: one call per request
        self.align = align
        self.key_mask: Tensor | None = None  # this step's, with an align: (B, 1, 1, padded)

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value buffers."""
        return self.k.numel() * self.k.element_size() * 2

    def begin(self, rows: slice, positions: Tensor, entries: Tensor,
              mask: Tensor | list[tuple[int, int, int]]) -> None:
        """Set up one forward pass over the slots `rows` (B of them).

        Args:
            positions: (B, T) absolute positions of the new tokens (position encodings).
            entries: (B, T) cache entries in [0, capacity) the new keys/values go to.
            mask: what each query attends to: a (B, 1, T, capacity) bool tensor, True
                where a query may see an entry; or, for one new token per row (T == 1),
                sorted (first row, end row, n) groups whose rows see their first n
                entries (rows in no group are idle: they see entry 0, and are ignored).
        """
        self.rows, self.positions, self.entries, self.mask = rows, positions, entries, mask
        B, T = entries.shape
        self.row_index = torch.arange(B, device=entries.device)[:, None].expand(B, T)  # (B, T)
        self.cos_sin = None
        self.key_mask = None
        if isinstance(mask, list) and self.align is not None:  # once a step, for all layers
            lengths = [1] * B  # idle rows see entry 0: no row is wholly masked
            for first, end, n in mask:
                lengths[first:end] = [n] * (end - first)
            padded = -(-max(lengths) // self.align) * self.align
            self.key_mask = key_mask(lengths, padded, entries.device)

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src`'s keys and values to slot `dst` and clear `src`."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]
        self.clear(src)

    def clear(self, slot: int) -> None:
        """Zero one slot, so that stale values (a NaN) never reach a later row's matmuls."""
        self.k[:, slot].zero_()
        self.v[:, slot].zero_()

    def write(
        self, layer: int, k: Tensor, v: Tensor, head: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Store new keys/values (B, nh, T, hs) (or (B, T, hs) for one `head`) and return
        the rows' whole buffers, (B, nh, capacity, hs) (or (B, capacity, hs))."""
        k_buf, v_buf = self.k[layer, self.rows], self.v[layer, self.rows]  # (B, nh, cap, hs)
        row = self.row_index  # (B, T)
        if head is None:
            # advanced indices around a slice put their dims first: (B, T, nh, hs)
            k_buf[row, :, self.entries] = k.transpose(1, 2)
            v_buf[row, :, self.entries] = v.transpose(1, 2)
            return k_buf, v_buf
        k_buf, v_buf = k_buf[:, head], v_buf[:, head]  # (B, cap, hs)
        k_buf[row, self.entries] = k  # (B, T, hs)
        v_buf[row, self.entries] = v
        return k_buf, v_buf

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """softmax(q·kᵀ·scale, masked) · v: q (B, [nh,] T, hs), k and v (B, [nh,] cap, hs)
        → (B, [nh,] T, hs). With a mask, written out over every entry (torch's CPU SDPA
        rounds a row differently with the batch size; these matmuls do not). With groups
        (one query per row): one fused call for all rows over keys padded to a multiple
        of `align`, which gives each row the bits it gets alone
        (`row_invariant.attention_align`); without an align, one SDPA call per group (a
        request's rows) over exactly its valid entries."""
        if isinstance(self.mask, list):
            if q.dim() == 3:  # one head's (B, T, hs): as (B, 1, T, hs)
                return self.attend(q[:, None], k[:, None], v[:, None], scale)[:, 0]
            if self.key_mask is not None:
                return padded_attention(q, k, v, self.key_mask, scale)
            return self._attend_each(q, k, v, scale)
        mask = self.mask if q.dim() == 4 else self.mask[:, 0]  # (B, [1,] T, cap)
        att = (q @ k.transpose(-2, -1)) * scale  # (B, [nh,] T, hs) @ (.., hs, cap) -> (.., T, cap)
        att = att.masked_fill(~mask, float("-inf"))
        return F.softmax(att, dim=-1) @ v  # (.., T, cap) @ (.., cap, hs) -> (.., T, hs)

    def _attend_each(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """One SDPA call per group over exactly its valid entries: the same shapes whatever
        else is in the batch (idle rows get zeros)."""
        assert isinstance(self.mask, list)
        pieces, done = [], 0
        for first, end, n in self.mask:
            if first > done:  # idle rows: zeros
                pieces.append(q.new_zeros(first - done, *q.shape[1:]))
            r = slice(first, end)  # 4-d (rows, nh, 1, hs): torch's fused CPU kernel
            pieces.append(F.scaled_dot_product_attention(q[r], k[r, :, :n], v[r, :, :n],
                                                         scale=scale))
            done = end
        if done < q.shape[0]:
            pieces.append(q.new_zeros(q.shape[0] - done, *q.shape[1:]))
        return torch.cat(pieces)
