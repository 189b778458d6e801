"""Serving a real run folder: a tiny GPT with a char tokenizer, written with write_run.

The served text must equal what `gptlab.generate.generate` produces for the same seed;
`gptlab serve` itself runs as a subprocess and exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess

import httpx
import pytest
import torch

from gptlab.checkpoint import load_run
from gptlab.generate import generate
from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import ModelEngine, SamplingParams

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def engine(tiny_run):
    return ModelEngine.from_run_dir(tiny_run)


def reference_text(run_dir, prompt: str, max_tokens: int, **sampling) -> str:
    """What the library's own generate() makes of the prompt (cropped to the block)."""
    run = load_run(run_dir)
    ids = run.tokenizer.encode(prompt)[-run.model.config.block_size:]
    out = generate(run.model, torch.tensor([ids]), max_tokens, **sampling)  # (1, T + new)
    return run.tokenizer.decode(out[0, len(ids):].tolist())


async def post(engine, body, **settings):
    app = create_app(engine, ServerSettings(**settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/v1/completions", json=body)


async def test_served_text_equals_generate_for_the_same_seed(engine, tiny_run):
    # the prompt is longer than block_size (16): both sides crop it the same way
    prompt = "First Citizen:\nBefore we proceed"
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0.9, "top_k": 20, "seed": 11}
    plain = await post(engine, body)
    streamed = await post(engine, {**body, "stream": True})
    expected = reference_text(tiny_run, prompt, 24, temperature=0.9, top_k=20, seed=11)
    assert plain.json()["choices"][0]["text"] == expected
    assert plain.json()["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 24,
                                     "total_tokens": len(prompt) + 24}
    events = [e.removeprefix("data: ") for e in streamed.text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert "".join(pieces) == expected


async def test_temperature_zero_is_greedy_and_top_p_reaches_the_sampler(engine, tiny_run):
    greedy = await post(engine, {"prompt": "All:", "max_tokens": 10, "temperature": 0})
    nucleus = await post(engine, {"prompt": "All:", "max_tokens": 10, "top_p": 0.5, "seed": 2})
    assert greedy.json()["choices"][0]["text"] == reference_text(tiny_run, "All:", 10,
                                                                 greedy=True)
    assert nucleus.json()["choices"][0]["text"] == reference_text(tiny_run, "All:", 10,
                                                                  top_p=0.5, seed=2)


async def test_exact_field_reaches_generation_past_the_window(engine, tiny_run):
    # block_size 16, 40 new tokens: the window slides. "exact": true (the default) is the
    # seed's recompute loop; false is generate(exact=False), here the half-window restart.
    body = {"prompt": "All:", "max_tokens": 40, "temperature": 0}
    default = (await post(engine, body)).json()["choices"][0]["text"]
    exact = (await post(engine, {**body, "exact": True})).json()["choices"][0]["text"]
    fast = (await post(engine, {**body, "exact": False})).json()["choices"][0]["text"]
    assert default == exact == reference_text(tiny_run, "All:", 40, greedy=True,
                                              use_cache=False)
    assert fast == reference_text(tiny_run, "All:", 40, greedy=True, exact=False)
    assert fast != exact


async def test_characters_outside_the_vocabulary_are_a_400(engine):
    r = await post(engine, {"prompt": "Speak ☃"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "prompt"
    assert "☃" in error["message"] or "U+2603" in error["message"]


def test_engine_reports_the_run(engine, tiny_run):
    assert (engine.model_id, engine.block_size) == ("tiny-char", 16)
    assert engine.vocab_size == load_run(tiny_run).tokenizer.vocab_size
    completion = engine.complete("All", SamplingParams(max_tokens=5, seed=0))
    assert len(completion.read()) == 5 and completion.finish_reason == "length"


def test_gptlab_serve_answers_then_exits_on_sigterm(tiny_run, gptlab_cmd, subprocess_env):
    proc = subprocess.Popen([*gptlab_cmd, "serve", str(tiny_run), "--port", "0",
                             "--drain-s", "1"],
                            env=subprocess_env, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline()]  # the ready line: the first, or a line after logs
        while lines[-1] and " on http://127.0.0.1:" not in lines[-1] and len(lines) < 20:
            lines.append(proc.stderr.readline())  # '' at EOF: the server ended
        assert " on http://127.0.0.1:" in lines[-1], "".join(lines)
        assert len(lines) == 1, "".join(lines)  # nothing printed before it
        url = lines[-1].split(" on ", 1)[1].split(" ", 1)[0]
        with httpx.Client(base_url=url, timeout=30) as client:
            health = client.get("/health")
            answer = client.post("/v1/completions",
                                 json={"prompt": "All:", "max_tokens": 6, "seed": 4})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert health.json() == {"status": "ok"}
    assert answer.json()["choices"][0]["text"] == reference_text(tiny_run, "All:", 6, seed=4)
    assert "Traceback" not in proc.stderr.read()
