"""gptlab.serve.engine: text pieces from token ids, stop strings, incomplete UTF-8.

Also home of the scripted engines the other serve tests import.
"""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.errors import GptlabError
from gptlab.generate import SamplingConfig, SamplingError
from gptlab.serve.engine import Engine, SamplingParams, find_stop, safe_length

ALPHABET = string.ascii_letters + string.digits + " \n.,:;!?'-"


class CharEngine(Engine):
    """A char-level stand-in for a model: seeded random characters, or a fixed script.

    Args:
        delay_s: sleep before each token (a slow model).
        fail_after: raise RuntimeError after this many tokens (a model that breaks).
        script: yield these characters instead of sampling.
    """

    def __init__(
        self,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        script: str | None = None,
        eot: bool = False,
    ) -> None:
        self.vocab = ALPHABET + ("\x00" if eot else "")
        self.model_id = "char-test"
        self.block_size = 32
        self.vocab_size = len(self.vocab)
        self.eot_id = self.vocab.index("\x00") if eot else None
        self.tokenizer_name = "char"
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.script = script
        self.started = threading.Event()

    def encode(self, text: str) -> list[int]:
        bad = sorted({c for c in text if c not in ALPHABET})
        if bad:
            raise GptlabError(f"characters not in the vocabulary: {bad!r}")
        return [self.vocab.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def generate_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        self.started.set()
        rng = random.Random(params.seed)
        for step in range(params.max_tokens):
            if self.fail_after is not None and step >= self.fail_after:
                raise RuntimeError("the model broke")
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.script is not None:
                if step >= len(self.script):
                    return
                yield self.vocab.index(self.script[step])
            elif params.temperature == 0:
                yield (prompt_ids[-1] + step + 1) % len(ALPHABET)
            else:
                yield rng.randrange(len(ALPHABET))


class ByteEngine(Engine):
    """One token per UTF-8 byte, decoded with replacement characters, like byte-level BPE."""

    model_id, block_size, vocab_size, eot_id = "bytes", 64, 256, None

    def __init__(self, script: str) -> None:
        self.script = script.encode()

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def generate_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        yield from self.script[: params.max_tokens]


def run(engine: Engine, **params) -> tuple[list[str], object]:
    completion = engine.complete("a", SamplingParams(**params))
    pieces = list(completion)
    return pieces, completion


def test_multibyte_characters_are_never_split():
    text = "héllo wörld — 🙂 ok"
    pieces, completion = run(ByteEngine(text), max_tokens=100)
    assert "".join(pieces) == text == completion.text
    assert all("\ufffd" not in p for p in pieces)
    assert "🙂" in pieces  # four tokens, one piece
    assert completion.finish_reason == "stop"  # the engine ended before max_tokens
    assert completion.completion_tokens == len(text.encode())


def test_finish_reason_is_length_when_max_tokens_is_reached():
    text = "héllo"
    _, completion = run(ByteEngine(text), max_tokens=len(text.encode()))
    assert (completion.text, completion.finish_reason) == (text, "length")
    _, cut = run(ByteEngine(text), max_tokens=1)
    assert (cut.text, cut.finish_reason) == ("h", "length")


def test_stop_string_spanning_tokens_is_cut_and_not_returned():
    pieces, completion = run(CharEngine(script="hello world, bye"), max_tokens=50, stop=("o w",))
    assert "".join(pieces) == "hell" == completion.text
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == len("hello w")


def test_earliest_of_several_stop_strings_wins():
    pieces, completion = run(
        CharEngine(script="abc. def: ghi"), max_tokens=50, stop=(":", ". d", "zz")
    )
    assert "".join(pieces) == "abc"
    assert completion.finish_reason == "stop"


def test_length_finish_and_token_count():
    pieces, completion = run(CharEngine(), max_tokens=7, seed=3)
    assert len("".join(pieces)) == 7
    assert (completion.finish_reason, completion.completion_tokens) == ("length", 7)
    assert completion.prompt_tokens == 1


def test_end_of_text_token_stops_without_text():
    pieces, completion = run(CharEngine(script="ab\x00cd", eot=True), max_tokens=10)
    assert "".join(pieces) == "ab"
    assert (completion.finish_reason, completion.completion_tokens) == ("stop", 3)


def test_same_seed_same_text_other_seed_other_text():
    engine = CharEngine()
    texts = [engine.complete("x", SamplingParams(max_tokens=20, seed=s)).read()
             for s in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


def test_cancel_ends_the_completion():
    engine = CharEngine()
    cancel = threading.Event()
    completion = engine.complete("x", SamplingParams(max_tokens=100, seed=0), cancel)
    first = next(completion)
    cancel.set()
    assert list(completion) == []
    assert len(first) == 1 and completion.finish_reason == "cancelled"


def test_unencodable_prompt_fails_before_generating():
    engine = CharEngine()
    with pytest.raises(GptlabError, match="not in the vocabulary: \\['é'\\]"):
        engine.complete("café", SamplingParams())
    assert not engine.started.is_set()


def test_empty_prompt_starts_from_end_of_text_or_fails():
    completion = CharEngine(eot=True).complete("", SamplingParams(max_tokens=3, seed=0))
    assert completion.prompt_ids == [CharEngine(eot=True).eot_id]
    with pytest.raises(GptlabError, match="prompt is empty"):
        CharEngine().complete("", SamplingParams())


def test_sampling_params_are_checked_by_the_one_sampling_config():
    params = SamplingParams(max_tokens=5, temperature=0.7, top_k=3, top_p=0.9, seed=2,
                            exact=False, stop=("x",))
    assert params.sampling == SamplingConfig(temperature=0.7, top_k=3, top_p=0.9, seed=2,
                                             exact=False)
    with pytest.raises(SamplingError, match="temperature must be a finite number") as info:
        SamplingParams(temperature=-1.0)
    assert info.value.field == "temperature"
    with pytest.raises(SamplingError, match=r"seed must be in \[0, 2\*\*63\)"):
        SamplingParams(seed=2**63)


def test_safe_length_holds_back_stop_prefixes_and_partial_characters():
    assert safe_length("hello wo", ("world",)) == len("hello ")
    assert safe_length("hello w", ("xyz",)) == len("hello w")
    assert safe_length("abc\ufffd\ufffd", ()) == 3
    assert safe_length("abcab", ("abc",)) == 3
    assert find_stop("a.b.c", (".c", "b")) == 2
    assert find_stop("abc", ("x",)) is None


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\ufffd"),
                 max_size=40),
    stops=st.lists(st.text(alphabet="ab\u00e9\U0001f642 ", min_size=1, max_size=3), max_size=3),
)
def test_pieces_concatenate_to_the_text_cut_at_the_first_stop(text, stops):
    pieces, completion = run(ByteEngine(text), max_tokens=1000, stop=tuple(stops))
    # Reference: generation ends at the first token after which a stop string is in the text.
    # max_tokens (1000) is never reached: the engine ending on its own is a "stop"
    data, expected, reason = text.encode(), text, "stop"
    for k in range(1, len(data) + 1):
        so_far = data[:k].decode("utf-8", errors="replace")
        hits = [i for i in (so_far.find(s) for s in stops) if i >= 0]
        if hits:
            expected, reason = so_far[: min(hits)], "stop"
            break
    assert "".join(pieces) == expected == completion.text
    assert all(pieces) and all("\ufffd" not in p for p in pieces)
    assert completion.finish_reason == reason


def test_scheduler_runs_jobs_a_step_each_in_one_thread_then_stops_when_idle():
    from gptlab.serve.app import Scheduler

    log: list[tuple[str, int, int]] = []
    both_submitted = threading.Event()

    class StubJob:
        def __init__(self, name: str, n: int) -> None:
            self.name, self.n = name, n

        def steps(self) -> Iterator[None]:
            both_submitted.wait(5)
            for i in range(self.n):
                log.append((self.name, i, threading.get_ident()))
                yield

    scheduler = Scheduler(idle_s=0.05)
    scheduler.submit(StubJob("a", 3))
    scheduler.submit(StubJob("b", 3))
    both_submitted.set()
    deadline = time.monotonic() + 5
    while (len(log) < 6 or scheduler._thread is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    names = [name for name, _, _ in log]
    assert sorted(names) == ["a"] * 3 + ["b"] * 3
    assert names.index("b") < len(names) - 1 - names[::-1].index("a")  # b starts before a ends
    assert len({ident for _, _, ident in log}) == 1 and log[0][2] != threading.get_ident()
    assert scheduler._thread is None  # idle: the worker thread has exited
