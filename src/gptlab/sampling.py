"""How to pick each next token: `SamplingConfig` (one place for every sampling field and
its checks) and `sample_next_token`, the rule both `gptlab.generate` and the batched
engine (`gptlab.decoding`) apply to a step's logits. Re-exported by `gptlab.generate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab.checks import is_int, is_number
from gptlab.errors import ConfigError

SEED_LIMIT = 2**63  # seeds lie in [0, SEED_LIMIT): what torch.Generator.manual_seed takes


class SamplingError(ConfigError):
    """A bad `SamplingConfig` field. `field`, `value` and `rule` let a caller word the
    message in its own terms (the CLI as `--top-p 1.5 must be in (0, 1]`)."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"{field} {rule}, got {value!r}")
        self.field, self.value, self.rule = field, value, rule


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each new token; a bad field raises `SamplingError` on construction.

    Args:
        temperature: divides the logits; 0 means greedy.
        top_k: keep only the k most likely tokens (clamped to the vocabulary; None: all).
        top_p: nucleus sampling threshold in (0, 1] (None or 1: no cut).
        seed: seeds a private generator, in [0, 2**63) (None: torch's global RNG).
        use_cache: use the KV cache (GPT only); False runs the seed's recompute loop.
        stop_tokens: ids that end a row; any iterable of ids, stored as a tuple.
        start_token: the id an empty prompt starts from.
        exact: past block_size, recompute the window (True: the seed's loop) or use the
            rolling / restart approximation (False).
        num_samples: continuations per prompt row (rows are repeated in place).
        batch_invariant: run the Linears row-invariantly (`gptlab.row_invariant`), so the
            tokens are bitwise those `gptlab serve` gives the same request, alone or under
            load. It costs a transposed copy of the weights (as much memory again) and,
            where no C compiler builds `gptlab.row_kernel`, one row alone runs ~0.8x as
            fast on CPU (a 2-row product), so off by default.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None
    use_cache: bool = True
    stop_tokens: tuple[int, ...] = ()
    start_token: int = 0
    exact: bool = True
    num_samples: int = 1
    batch_invariant: bool = False

    def __post_init__(self) -> None:
        rule = "must be a finite number >= 0 (0 means greedy)"
        if not is_number(self.temperature) or not 0 <= self.temperature < math.inf:
            raise SamplingError("temperature", self.temperature, rule)
        if self.top_k is not None and not (is_int(self.top_k) and self.top_k >= 1):
            raise SamplingError("top_k", self.top_k, "must be an integer >= 1 or None")
        if self.top_p is not None and not (is_number(self.top_p) and 0 < self.top_p <= 1):
            raise SamplingError("top_p", self.top_p, "must be in (0, 1]")
        if self.seed is not None and not is_int(self.seed):
            raise SamplingError("seed", self.seed, "must be an integer or None")
        if self.seed is not None and not 0 <= self.seed < SEED_LIMIT:
            raise SamplingError("seed", self.seed, "must be in [0, 2**63)")
        for name in ("greedy", "use_cache", "exact", "batch_invariant"):
            if not isinstance(getattr(self, name), bool):
                raise SamplingError(name, getattr(self, name), "must be True or False")
        try:
            stops = () if self.stop_tokens is None else tuple(self.stop_tokens)
        except TypeError:
            raise SamplingError("stop_tokens", self.stop_tokens,
                                "must be an iterable of token ids") from None
        object.__setattr__(self, "stop_tokens", stops)  # frozen: store the normalised form
        for token in stops:
            if not (is_int(token) and token >= 0):
                raise SamplingError("stop_tokens", token, "must be token ids (integers >= 0)")
        if not (is_int(self.start_token) and self.start_token >= 0):
            raise SamplingError("start_token", self.start_token,
                                "must be a token id (an integer >= 0)")
        if not (is_int(self.num_samples) and self.num_samples >= 1):
            raise SamplingError("num_samples", self.num_samples, "must be an integer >= 1")


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row from (B, V) next-token logits → (B,) int64 ids.

    Temperature divides the logits; top_k keeps the k most likely tokens (clamped to V);
    top_p keeps the smallest set of most likely tokens whose probability reaches p
    (nucleus sampling, Holtzman et al. 2019); the rest are sampled from, with `generator`
    (None: torch's global RNG). greedy or temperature 0 returns the argmax (the lowest id
    on ties).
    """
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def next_token_probs(
    logits: Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """The (B, V) float32 distribution `sample_next_token` draws from; each row computed on
    its own (the same numbers for a row alone or among others)."""
    # float64 and the row max subtracted first: a tiny temperature then sends the other
    # logits towards -inf instead of overflowing to nan
    logits = logits.double()
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1).float()  # (B, V)
    if top_p is not None and top_p < 1.0:
        probs = _nucleus(probs, top_p)
    return probs


def draw_tokens(probs: Tensor, generators: list[tuple[int, torch.Generator | None]]) -> Tensor:
    """One id per row of (R, V) probs, for several requests at once → (R,) int64.

    `generators` gives each request's row count and generator, in row order. The ids are
    those `torch.multinomial(probs_rows, 1, generator=g)` gives each request alone: it
    draws one sample as argmax(p / q), q ~ Exp(1) elementwise (the exponential race,
    pytorch#11931), which is what this does, one noise draw per request, then one argmax
    for all rows (tests check the two agree)."""
    noise = torch.cat([torch.empty_like(rows).exponential_(1, generator=generator)
                       for rows, (_, generator) in zip(
                           probs.split([n for n, _ in generators]), generators, strict=True)])
    return (probs / noise).argmax(dim=-1)


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """probs (B, V) with all but the smallest most-likely set reaching `top_p` zeroed,
    renormalised: [0.5, 0.3, 0.15, 0.05] with top_p 0.8 → [0.625, 0.375, 0, 0]."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V)
    drop_sorted = mass_before >= top_p  # the most likely token always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # vocab order
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


