"""What the server needs from a model: encode a prompt, produce token ids, decode text.

`Engine` is the small interface the HTTP layer is written against; `ModelEngine` wraps a
gptlab run folder (model + tokenizer) and decodes every running completion in one batch
(`gptlab.decoding.DecodingEngine`). `Completion` decodes the whole continuation after
every token and emits only the new suffix, holding back an incomplete UTF-8 character (a
BPE token can end in the middle of one) and any tail that could still grow into a stop
string, so the concatenated pieces always equal the final text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from gptlab.decoding import DecodingEngine, Request
from gptlab.errors import GptlabError
from gptlab.generate import SamplingConfig
from gptlab.tokenizers import Tokenizer

if TYPE_CHECKING:
    from gptlab.model.gpt import GPT

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled"]
# Completions decoded together (the server's --max-concurrency) unless told otherwise: the
# batch gains on a 2-core CPU (docs/benchmarks.md, "Continuous batching (#14)").
DEFAULT_ROWS = 16

# What `decode` puts where the bytes so far end inside a multi-byte UTF-8 character.
REPLACEMENT_CHAR = "\ufffd"


class DecodingError(GptlabError):
    """Generation of one completion failed inside the model (e.g. non-finite logits); the
    server reports it as its own fault (500), not the client's."""


@dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt: the `SamplingConfig` fields the API exposes (checked by
    it, derived here as `sampling`: a bad value raises its SamplingError), plus the most
    new tokens, `max_tokens`, and the `stop` strings that end the completion (the stop
    string itself is not returned).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    exact: bool = True
    sampling: SamplingConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sampling = SamplingConfig(temperature=self.temperature, top_k=self.top_k,
                                  top_p=self.top_p, seed=self.seed, exact=self.exact)
        object.__setattr__(self, "sampling", sampling)  # frozen: set the derived field


class Engine:
    """A model and tokenizer behind the server; subclasses fill in the three methods.
    `model_id` is the name clients pass as `model`; `eot_id`, the end-of-text token id
    (or None), ends a completion with reason "stop"."""

    model_id: str
    block_size: int
    vocab_size: int
    eot_id: int | None = None
    tokenizer_name: str = ""
    kv_cache_bytes: int | None = None  # memory held for decoding, once `reserve` ran
    weight_copy_bytes: int = 0  # the row-invariant Linears' transposed weights
    min_rows: int = 1  # rows a decode step runs at least (a lone stream padded to them)

    def reserve(self, rows: int) -> None:
        """Allocate what decoding `rows` completions at once needs, before the first request."""

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; raises GptlabError for text the tokenizer cannot encode."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def generate_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield up to `params.max_tokens` new token ids after `prompt_ids`, one at a time."""
        raise NotImplementedError

    def start_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """`generate_tokens`, begun now: an engine that batches takes the request in here,
        so that requests started one after another share their first step. The default
        starts nothing until the tokens are read."""
        return self.generate_tokens(prompt_ids, params)

    def complete(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Completion:
        """Encode `prompt` now (a bad prompt fails before any output); iterating the
        `Completion` runs the model."""
        prompt_ids = self.encode(prompt)
        if not prompt_ids:
            if self.eot_id is None:
                raise GptlabError("prompt is empty and this model has no end-of-text token to "
                                  "start from: send at least one character")
            prompt_ids = [self.eot_id]
        return Completion(self, prompt_ids, params, cancel)


class Completion:
    """Iterator of text pieces for one prompt; `finish_reason` and `completion_tokens` are
    set as it runs ("stop": a stop string or end-of-text token, "length": max_tokens
    reached, "cancelled": `cancel` was set)."""

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams,
                 cancel: threading.Event | None = None) -> None:
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.params = params
        self.cancel = cancel or threading.Event()
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.text = ""
        self._tokens: Iterator[int] | None = None  # set by `start`
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def start(self) -> None:
        """Hand the prompt to the engine now (`Engine.start_tokens`); iterating starts it
        otherwise."""
        if self._tokens is None:
            self._tokens = self.engine.start_tokens(self.prompt_ids, self.params)

    def close(self) -> None:
        """Stop now (a no-op once finished); the engine's row for it is freed at once."""
        self._pieces.close()
        self._close_tokens()  # started but never read: `_run` did not begin

    def _close_tokens(self) -> None:
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()  # a generator or a joined request: frees its decoding row now

    def _run(self) -> Iterator[str]:
        self.start()
        assert self._tokens is not None
        try:
            yield from self._text_pieces(self._tokens)
        finally:
            self._close_tokens()

    def _text_pieces(self, tokens: Iterator[int]) -> Iterator[str]:
        engine, stops = self.engine, self.params.stop
        ids: list[int] = []
        emitted = 0  # characters of the decoded continuation already yielded
        for token in tokens:
            if self.cancel.is_set():
                self.finish_reason = "cancelled"
                return
            self.completion_tokens += 1
            if token == engine.eot_id:
                self.finish_reason = "stop"
                break
            ids.append(token)
            text = engine.decode(ids)
            cut = find_stop(text, stops, emitted)
            if cut is not None:
                self.text = text[:cut]
                if cut > emitted:
                    yield text[emitted:cut]
                self.finish_reason = "stop"
                return
            safe = safe_length(text, stops)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if self.finish_reason is None:
            # an engine that ends early has met a stop token of its own
            done = self.completion_tokens >= self.params.max_tokens
            self.finish_reason = "length" if done else "stop"
        self.text = engine.decode(ids)
        if len(self.text) > emitted:
            yield self.text[emitted:]

    def read(self) -> str:
        """Run to the end and return the whole text."""
        for _ in self._pieces:
            pass
        return self.text


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index in `text` where the earliest stop string begins (searching from `start`)."""
    hits = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(hits) if hits else None


def safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How many leading characters of `text` can be sent now: not a trailing incomplete
    UTF-8 character, nor a tail that is the start of a stop string."""
    end = len(text.rstrip(REPLACEMENT_CHAR))
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), held, -1):
            if text.endswith(stop[:k], 0, end):
                held = k
                break
    return end - held


class ModelEngine(Engine):
    """A gptlab model and tokenizer, e.g. from a run folder (`from_run_dir`).

    Prompts are cropped to their last `block_size` tokens (the model cannot see more).
    Every completion is a request in one `DecodingEngine`, so all running completions
    advance together, one forward pass per token; with `batch_invariant` (the default)
    each one's tokens are those it gets alone, and those of `gptlab.generate(...,
    batch_invariant=True)`. Not thread-safe: the server calls it from its one worker
    thread.
    """

    def __init__(
        self, model: GPT, tokenizer: Tokenizer, model_id: str, device: str = "cpu"
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.block_size = int(model.config.block_size)
        self.vocab_size = int(tokenizer.vocab_size)
        self.eot_id = tokenizer.eot_id
        self.tokenizer_name = tokenizer.name
        self.decoder: DecodingEngine | None = None
        # row-invariant Linears: the same text alone or under load (`reserve`)
        self.batch_invariant = True

    @classmethod
    def from_run_dir(
        cls, run_dir: Path, which: Literal["best", "latest"] = "best", device: str = "cpu"
    ) -> ModelEngine:
        """Load the `which` checkpoint of the run folder `run_dir`; the model id is the
        folder's name."""
        from gptlab.checkpoint import load_run

        run_dir = Path(run_dir)
        run = load_run(run_dir, which=which, device=device)
        return cls(run.model, run.tokenizer, model_id=run_dir.resolve().name, device=device)

    def reserve(self, rows: int) -> None:
        self.decoder = DecodingEngine(self.model, rows, batch_invariant=self.batch_invariant)
        self.kv_cache_bytes = self.decoder.cache_bytes()
        rows_invariant = self.decoder.rows_invariant
        self.weight_copy_bytes = rows_invariant.nbytes() if rows_invariant is not None else 0
        self.min_rows = self.decoder.min_rows

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def generate_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Join the batch (waiting for a free row), then yield this completion's tokens;
        each time it has none ready, the whole batch takes a step."""
        tokens = self.start_tokens(prompt_ids, params)
        try:
            yield from tokens
        finally:
            tokens.close()

    def start_tokens(self, prompt_ids: list[int], params: SamplingParams) -> RequestTokens:
        """Join the batch now (waiting for a free row) without stepping it: completions
        that start one after another are prefilled together at the next step."""
        if self.decoder is None:
            self.reserve(DEFAULT_ROWS)
        decoder = self.decoder
        assert decoder is not None
        idx = torch.tensor([prompt_ids[-self.block_size :]], dtype=torch.long, device=self.device)
        stop_tokens = () if self.eot_id is None else (self.eot_id,)
        sampling = replace(params.sampling, stop_tokens=stop_tokens)
        while decoder.free_slots == 0:
            decoder.step()
        return RequestTokens(decoder, decoder.add(idx, params.max_tokens, sampling))  # (1, T)


class RequestTokens:
    """The new token ids of one request in a `DecodingEngine`: each time none is ready,
    the whole batch takes a step. `close` ends the request and frees its row at once."""

    def __init__(self, decoder: DecodingEngine, request: Request) -> None:
        self.decoder, self.request = decoder, request
        self.start, self.sent = request.t, 0

    def __iter__(self) -> RequestTokens:
        return self

    def __next__(self) -> int:
        request = self.request
        try:
            while self.sent == request.new_tokens and not request.done:
                self.decoder.step()
        except BaseException:
            self.close()
            raise
        if self.sent == request.new_tokens:  # done, every token sent
            self.close()
            if request.finish_reason == "error":
                raise DecodingError(f"generation failed: {request.error}")
            raise StopIteration
        self.sent += 1
        if self.sent == request.new_tokens:  # the newest, as a list: no tensor read
            return request.last[0]
        return int(request.seq[0, self.start + self.sent - 1])

    def close(self) -> None:
        self.decoder.cancel(self.request)  # a no-op once finished
