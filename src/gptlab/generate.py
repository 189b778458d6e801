"""Generation: one sampling config, the sampling rule, and the seed's loop with a KV cache.

`generate` returns the prompt and its continuation; `stream` yields the new tokens as
they are produced. Both take a `SamplingConfig` (`sampling=`) or its fields by keyword,
and drive any model with `forward(idx) -> (logits, loss)`: a GPT gets the KV cache, other
models (the bigram) the recompute loop over their context. The loop is `_sample_loop`,
seed 001's `generate`: logits of the last position → `sample_next_token` → append.

- Empty prompt: every row starts from `start_token` (the seed starts from token 0), and
  that token is part of the returned ids.
- `seed` draws from a private torch.Generator: the same seed gives the same tokens with or
  without the KV cache, and the global RNG is neither used nor advanced.
- Batches: idx is (B, T), every row the same length; `num_samples` repeats each row.
- Stop tokens: a row that samples one is finished; the stop token is kept and repeated as
  padding. Generation ends once every row has finished, so the result can be shorter
  than T + max_new_tokens.

The KV cache and the sliding window (`exact`). While prompt + generated tokens fit in
block_size, the cache gives exactly the cache-free result. Past block_size the seed's loop
crops to the last block_size tokens and re-runs them: every token's position and every
layer's view of the window changes. `exact=True` (the default) then does the same
recompute, a full-window forward per token, so outputs stay identical to the seed's loop
for every pos_encoding. `exact=False` (`gptlab sample --no-exact`, the server's
`"exact": false`) keeps one cached token per step, as an approximation:
- rope: a rolling cache (the newest token overwrites the oldest slot). RoPE makes cached
  keys position-independent, so this is exact *sliding-window attention*. It equals the
  cropped recompute only for a one-layer model; with more layers, a cached key was
  computed while its token still saw tokens that have since left the window.
- learned / sinusoidal: "restart": when the cache is full, re-run the last block_size // 2
  tokens from position 0, so each prediction sees between half and a full window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.checks import is_int, is_number
from gptlab.errors import ConfigError, GptlabError
from gptlab.model.gpt import GPT

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
        for name in ("greedy", "use_cache", "exact"):
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
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """probs (B, V) with all but the smallest most-likely set reaching `top_p` zeroed,
    renormalised: [0.5, 0.3, 0.15, 0.05] with top_p 0.8 → [0.625, 0.375, 0, 0]."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V)
    drop_sorted = mass_before >= top_p  # the most likely token always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # vocab order
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


def generate(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    **options: Any,
) -> Tensor:
    """Continue each prompt row by up to `max_new_tokens` tokens.

    Args:
        model: a GPT (KV cache) or any model with forward(idx) -> (logits, loss) (e.g.
            BigramLanguageModel); its train/eval mode is restored after every step.
        idx: prompt ids: a (B, T) tensor, a (T,) tensor or list (one row), or nested
            lists of equal length. T may exceed block_size (the model sees the last
            block_size tokens); T == 0 starts every row from `start_token`.
        sampling: how to sample (default: `SamplingConfig()`).
        **options: `SamplingConfig` fields by keyword; they override those of `sampling`.

    Returns:
        (B·num_samples, T + n) int64 ids on the model's device: the prompt (or the start
        token), then n new tokens (n < max_new_tokens only when every row has stopped).
    """
    prompt, config = _start(model, idx, max_new_tokens, sampling, options)
    new = [idx_next[:, None] for idx_next in _sample_loop(model, prompt, max_new_tokens, config)]
    return torch.cat([prompt, *new], dim=1)  # (B, T + n)


def stream(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    **options: Any,
) -> Iterator[Tensor]:
    """Yield the new tokens one step at a time, as they are produced.

    Takes `generate`'s arguments and checks them before the first step. Each step yields
    a (B,) int64 tensor, one new id per row, also when B == 1 (use `.item()`); rows that
    already stopped repeat their stop token. The prompt is not yielded.
    """
    prompt, config = _start(model, idx, max_new_tokens, sampling, options)
    return _sample_loop(model, prompt, max_new_tokens, config)


def _start(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig | None,
    options: dict[str, Any],
) -> tuple[Tensor, SamplingConfig]:
    """Check the arguments of `generate` / `stream`: the (B·num_samples, T) prompt on the
    model's device and the one SamplingConfig."""
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise GptlabError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    config = SamplingConfig(**options) if sampling is None else replace(sampling, **options)
    vocab_size = _vocab_size(model)
    for token in config.stop_tokens:
        _check_in_vocab("stop token", token, vocab_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return _prepare_prompt(idx, config, vocab_size, device), config


def _sample_loop(
    model: nn.Module, prompt: Tensor, max_new_tokens: int, config: SamplingConfig
) -> Iterator[Tensor]:
    """Seed 001's generate loop: the last position's logits → sample → append; yields
    each step's (B,) new ids. `_Decoder` decides between KV cache and recompute."""
    decoder = _Decoder(model, config.use_cache, config.exact)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(config.seed)
    B, T0 = prompt.shape
    stop_ids = torch.tensor(config.stop_tokens, dtype=torch.long, device=prompt.device)
    finished = torch.zeros(B, dtype=torch.bool, device=prompt.device)  # (B,)
    seq = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=prompt.device)
    seq[:, :T0] = prompt
    t, n_new = T0, T0  # tokens so far; how many of them the model has not seen yet
    for _ in range(max_new_tokens):
        logits = decoder.next_logits(seq[:, :t], n_new)  # (B, V) at the last position
        idx_next = sample_next_token(logits, config.temperature, config.top_k, config.top_p,
                                     config.greedy, generator)  # (B,)
        if config.stop_tokens:  # a finished row repeats its last token, its stop token
            idx_next = torch.where(finished, seq[:, t - 1], idx_next)
            finished |= torch.isin(idx_next, stop_ids)
        seq[:, t] = idx_next  # append (into a buffer allocated once)
        t, n_new = t + 1, 1
        yield idx_next
        if config.stop_tokens and finished.all():
            return


class _Decoder:
    """Next-token logits for a growing sequence: KV cache, restart, or recompute."""

    def __init__(self, model: nn.Module, use_cache: bool, exact: bool) -> None:
        self.model = model
        self.window: int | None = getattr(model, "context_size", None)
        self.use_cache = use_cache and isinstance(model, GPT)
        rope = self.use_cache and model.config.pos_encoding == "rope"
        self.rolling = self.use_cache and not exact and rope
        self.restart = self.use_cache and not exact and not rope
        self.cache = None

    def next_logits(self, seq: Tensor, n_new: int) -> Tensor:
        """seq (B, t): the whole sequence, whose last n_new tokens are new → (B, V).

        Runs in eval mode (no dropout). A model in training mode is switched for the step
        and back; one in eval mode is left alone, as switching walks every module.
        """
        training = self.model.training
        if training:
            self.model.eval()
        try:
            with torch.no_grad():
                return self._cached(seq, n_new) if self.use_cache else self._recompute(seq)
        finally:
            if training:
                self.model.train()

    def _recompute(self, seq: Tensor) -> Tensor:
        context = seq if self.window is None else seq[:, -self.window :]  # (B, ≤ window)
        if isinstance(self.model, GPT):
            logits, _ = self.model(context, last_only=True)
        else:
            logits, _ = self.model(context)
        return logits[:, -1, :]

    def _run(self, tokens: Tensor) -> Tensor:
        logits, _ = self.model(tokens, kv_cache=self.cache, last_only=True)  # (B, 1, V)
        return logits[:, -1, :]

    def _cached(self, seq: Tensor, n_new: int) -> Tensor:
        model: GPT = self.model  # type: ignore[assignment]
        window = model.config.block_size
        if self.cache is None:  # prefill: the prompt's last window, processed once
            self.cache = model.new_kv_cache(seq.shape[0], rolling=self.rolling)
            return self._run(seq[:, -window:])
        if self.cache.pos + n_new <= window or self.rolling:
            return self._run(seq[:, -n_new:])
        if self.restart:  # approximate: re-run the last half window from position 0
            self.cache = model.new_kv_cache(seq.shape[0])
            return self._run(seq[:, -max(1, window // 2) :])
        self.use_cache = False  # exact: the window slides, recompute from now on
        self.cache = None
        return self._recompute(seq)


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        size = getattr(model, "vocab_size", None)  # e.g. BigramLanguageModel
    return None if size is None else int(size)


def _check_in_vocab(name: str, token: int, vocab_size: int | None) -> None:
    if vocab_size is not None and token >= vocab_size:
        raise GptlabError(f"{name}={token} is outside the vocabulary 0..{vocab_size - 1}")


def _prepare_prompt(
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    config: SamplingConfig,
    vocab_size: int | None,
    device: torch.device,
) -> Tensor:
    """Any accepted prompt form → a (B·num_samples, T ≥ 1) int64 tensor on `device`."""
    if not isinstance(idx, Tensor):
        try:
            idx = torch.tensor(idx, dtype=torch.long)
        except (TypeError, ValueError) as exc:
            message = f"prompt must be a list of token ids or of equal-length rows ({exc})"
            raise GptlabError(message) from exc
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dtype.is_complex:
        raise GptlabError(f"prompt ids must be integers, got a {idx.dtype} tensor")
    if idx.dim() == 1:
        idx = idx[None, :]  # (1, T)
    if idx.dim() != 2 or idx.shape[0] == 0:
        raise GptlabError(f"prompt must be (B, T) token ids with B ≥ 1 (or one list of ids), "
                          f"got shape {tuple(idx.shape)}")
    idx = idx.to(device=device, dtype=torch.long)
    if idx.shape[1] == 0:
        _check_in_vocab("start_token", config.start_token, vocab_size)
        idx = torch.full((idx.shape[0], 1), config.start_token, dtype=torch.long, device=device)
    elif vocab_size is not None and (idx.min() < 0 or idx.max() >= vocab_size):
        bad = idx[(idx < 0) | (idx >= vocab_size)][0].item()
        raise GptlabError(f"prompt token id {bad} is outside the vocabulary 0..{vocab_size - 1}")
    if config.num_samples != 1:
        idx = idx.repeat_interleave(config.num_samples, dim=0)  # (B·num_samples, T)
    return idx
