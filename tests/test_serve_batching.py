"""The server decodes running completions together: each one's text is what it gets alone
(bitwise, so the same text), rows leave on disconnect, and one row's failure is its own."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import torch
from test_serve_live import wait_until
from torch import nn

from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import DecodingError, ModelEngine, SamplingParams
from gptlab.serve.server import serve_in_thread

pytestmark = pytest.mark.anyio

# 12 requests: prompts shorter and longer than the block (16), budgets past it, greedy and
# sampled, top-k / top-p, stop strings, the no-exact path, n choices, streamed or not
REQUESTS = [
    {"prompt": "First Citizen:\nBefore we proceed", "max_tokens": 40, "temperature": 0},
    {"prompt": "All:", "max_tokens": 25, "temperature": 0.8, "seed": 1, "n": 3},
    {"prompt": "Speak, speak.", "max_tokens": 60, "temperature": 1.2, "top_k": 5, "seed": 2},
    {"prompt": "You", "max_tokens": 18, "top_p": 0.7, "seed": 3, "stream": True},
    {"prompt": "we are all resolved", "max_tokens": 50, "seed": 4, "stop": ["e", "\n"]},
    {"prompt": "let us die", "max_tokens": 33, "temperature": 0.6, "seed": 5,
     "exact": False},
    {"prompt": "a", "max_tokens": 45, "temperature": 0, "exact": False, "stream": True},
    {"prompt": "You are all resolved rather to die", "max_tokens": 12, "seed": 6, "n": 2,
     "stream": True},
    {"prompt": "Citizens", "max_tokens": 70, "temperature": 0.9, "top_k": 10, "top_p": 0.9,
     "seed": 7},
    {"prompt": "hear me", "max_tokens": 22, "seed": 8, "stop": ["ou"], "stream": True},
    {"prompt": "Before we proceed any further, hear me speak.", "max_tokens": 35,
     "temperature": 1.5, "seed": 9},
    {"prompt": "?", "max_tokens": 28, "seed": 10, "n": 2},
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def answer(response: httpx.Response, streamed: bool) -> list[tuple[str, str]]:
    """(text, finish_reason) of each choice, by index."""
    if not streamed:
        return [(c["text"], c["finish_reason"]) for c in response.json()["choices"]]
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    for event in response.text.strip().split("\n\n"):
        data = event.removeprefix("data: ")
        if data == "[DONE]":
            continue
        for c in json.loads(data)["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
            if c["finish_reason"]:
                finish[c["index"]] = c["finish_reason"]
    return [(texts[i], finish[i]) for i in sorted(texts)]


async def test_twelve_requests_together_get_the_text_each_gets_alone(tiny_run):
    engine = ModelEngine.from_run_dir(tiny_run)
    app = create_app(engine, ServerSettings(max_concurrency=12))
    decoder = engine.decoder
    most_running = 0
    step = decoder.step

    def counting_step():
        nonlocal most_running
        most_running = max(most_running, len(decoder.running))
        return step()

    decoder.step = counting_step
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 timeout=60) as client:

        async def post(body, delay_s=0.0):
            await asyncio.sleep(delay_s)
            r = await client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            return answer(r, body.get("stream", False))

        alone = [await post(body) for body in REQUESTS]
        assert most_running == 3  # n choices are rows decoded together
        most_running = 0
        together = await asyncio.gather(*[post(body, 0.003 * k)
                                          for k, body in enumerate(REQUESTS)])
    assert most_running >= 8  # they did overlap
    assert together == alone
    reasons = {reason for choices in alone for _, reason in choices}
    assert reasons == {"stop", "length"}
    assert decoder.free_slots == decoder.num_slots


def test_kv_cache_is_allocated_once_for_max_concurrency_rows(tiny_run):
    engine = ModelEngine.from_run_dir(tiny_run)
    create_app(engine, ServerSettings(max_concurrency=5))
    rows = engine.decoder.num_slots
    assert rows == 5
    # keys and values x 2 layers x rows x 2 heads x entries x 8 x fp32, the entries being
    # block 16 + 1 scratch rounded up to the attention's align (test_decoding)
    entries = engine.decoder.cache.capacity
    assert entries >= 17
    assert engine.kv_cache_bytes == 2 * 2 * rows * 2 * entries * 8 * 4


def test_a_client_that_goes_away_frees_its_row(tiny_run):
    engine = ModelEngine.from_run_dir(tiny_run)
    app = create_app(engine, ServerSettings(max_concurrency=4, max_tokens_limit=10**6))
    decoder = engine.decoder
    body = {"prompt": "a", "max_tokens": 10**6, "stream": True}  # minutes of tokens
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("POST", "/v1/completions", json=body) as r:
            first = next(line for line in r.iter_lines() if line)
            assert first.startswith("data: {")
            assert decoder.free_slots == decoder.num_slots - 1
        assert wait_until(lambda: decoder.free_slots == decoder.num_slots)
        assert wait_until(lambda: app.state.gptlab.slots.used == 0)
        # the row is reused: a new request runs to the end
        again = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 5})
        assert again.json()["choices"][0]["finish_reason"] == "length"


def test_completions_started_together_share_their_prefill_and_a_closed_one_frees_its_row(
        tiny_run, monkeypatch):
    """What the scheduler does with jobs that arrive together: each completion is started
    (it joins the batch) before any is read, so one step prefills all their prompts of one
    length; each text is still what it is alone. One started and closed unread frees its
    row at once."""
    from gptlab.decoding import DecodingEngine

    passes = []
    prefill = DecodingEngine._prefill_chunk
    monkeypatch.setattr(DecodingEngine, "_prefill_chunk",
                        lambda self, group: passes.append(len(group)) or prefill(self, group))
    engine = ModelEngine.from_run_dir(tiny_run)
    engine.reserve(6)
    params = [SamplingParams(max_tokens=12, seed=s, temperature=0.9) for s in range(3)]
    alone = [engine.complete("Speak", p).read() for p in params]
    assert passes == [1, 1, 1]
    passes.clear()
    burst = [engine.complete("Speak", p) for p in params]
    for completion in burst:
        completion.start()
    assert passes == []  # joined, not stepped
    assert [c.read() for c in burst] == alone
    assert passes == [3]
    unread = engine.complete("Speak", params[0])
    unread.start()
    assert engine.decoder.free_slots == engine.decoder.num_slots - 1
    unread.close()
    assert engine.decoder.free_slots == engine.decoder.num_slots


def test_non_finite_logits_end_only_that_completion(tiny_run):
    engine = ModelEngine.from_run_dir(tiny_run)
    engine.reserve(4)
    params = SamplingParams(max_tokens=30, seed=1)
    expected = engine.complete("All:", params).read()
    good, bad = engine.complete("All:", params), engine.complete("You", params)
    poisoned_slot = 1  # bad joins second, so it takes the second row

    def poison(_module, _inputs, logits):  # (rows, T, V): NaN in bad's row
        if logits.shape[0] == 2:  # a decode step of the two rows in use
            logits[poisoned_slot] = float("nan")
        return logits

    pieces = [next(good)]  # good joins (and prefills) first
    hook = engine.model.lm_head.register_forward_hook(poison)
    try:
        with pytest.raises(DecodingError, match="non-finite"):
            while True:  # the scheduler's turns: one piece of each in turn
                pieces.append(next(good))
                next(bad)
    finally:
        hook.remove()
    pieces += list(good)
    assert "".join(pieces) == good.text == expected
    assert engine.decoder.free_slots == engine.decoder.num_slots
    assert torch.isfinite(engine.decoder.cache.k).all()


def test_generate_with_batch_invariant_gives_the_served_numbers(tiny_run):
    engine = ModelEngine.from_run_dir(tiny_run)
    engine.reserve(8)
    prompt = "First Citizen:"
    ids = engine.encode(prompt)
    served = engine.decoder.add(torch.tensor([ids]), 20, SamplingParams(seed=3).sampling)
    others = [engine.decoder.add(torch.tensor([ids[:k]]), 30, SamplingParams(seed=k).sampling)
              for k in (2, 5, 9)]
    logits = []
    while not served.done:
        engine.decoder.step()
        logits.append(served.last_logits)
    assert all(not r.done for r in others)  # they ran beside it all along
    from gptlab.generate import stream

    alone = []
    hook = engine.model.lm_head.register_forward_hook(
        lambda _m, _i, out: alone.append(out[0, -1].clone()))
    try:
        tokens = list(stream(engine.model, torch.tensor([ids]), 20, seed=3, batch_invariant=True))
    finally:
        hook.remove()
    assert torch.equal(torch.cat(tokens), served.seq[0, len(ids):])
    assert all(torch.equal(a, s[0]) for a, s in zip(alone, logits, strict=True))


def test_start_up_says_when_a_lone_stream_is_padded(tiny_run, monkeypatch, capsys):
    import gptlab.serve.server
    from gptlab import row_invariant, row_kernel
    from gptlab.cli import main

    monkeypatch.setattr(row_kernel, "_kernel", [None])  # as without a C compiler
    monkeypatch.setattr(row_invariant, "_plans", {})
    monkeypatch.setattr(gptlab.serve.server, "run_server",
                        lambda app, host, port, on_ready: on_ready("http://127.0.0.1:1"))
    assert main(["serve", str(tiny_run)]) == 0
    err = capsys.readouterr().err
    assert "rows (gptlab/row_kernel.c not built" in err  # 2 on AVX-512
    monkeypatch.setattr(row_invariant, "_plans", {})
    monkeypatch.setattr(row_kernel, "_kernel", [])  # built again, where a compiler is
    assert main(["serve", str(tiny_run)]) == 0
    if row_kernel.load() is not None:
        assert "a lone stream" not in capsys.readouterr().err


def test_no_batch_invariant_decodes_exactly_the_rows_in_use(tiny_run, monkeypatch, capsys):
    import gptlab.serve.server
    from gptlab.cli import main

    engine = ModelEngine.from_run_dir(tiny_run)
    monkeypatch.setattr(ModelEngine, "from_run_dir", staticmethod(lambda *a, **k: engine))
    monkeypatch.setattr(gptlab.serve.server, "run_server",
                        lambda app, host, port, on_ready: on_ready("http://127.0.0.1:1"))
    assert main(["serve", str(tiny_run), "--no-batch-invariant", "--max-concurrency", "3"]) == 0
    assert engine.decoder.rows_invariant is None and engine.decoder.num_slots == 3
    # 2 (k, v) x 2 layers x 3 rows x 2 heads x 17 entries x 8 x 4 bytes = 0.0 MiB: printed
    assert "KV cache 0.0 MiB for 3 completions at once" in capsys.readouterr().err
    rows = []
    hook = engine.model.lm_head.register_forward_hook(lambda _m, _i, out: rows.append(out.shape[0]))
    try:
        engine.complete("All:", SamplingParams(max_tokens=3, seed=0)).read()
    finally:
        hook.remove()
    assert rows == [1, 1, 1]  # prefill, then two steps of the one row: no padding
    assert main(["serve", str(tiny_run), "--max-concurrency", "3"]) == 0  # the default
    assert engine.decoder.rows_invariant is not None  # min_rows: 1 with the one-row kernel
    copies = sum(m.weight.numel() for m in engine.model.modules() if isinstance(m, nn.Linear))
    assert engine.weight_copy_bytes == 4 * copies > 0
    assert f"{4 * copies / 2**20:.1f} MiB of transposed weights" in capsys.readouterr().err
