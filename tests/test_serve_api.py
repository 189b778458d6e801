"""The HTTP API in process (httpx against the ASGI app): shapes, streaming, errors, auth,
limits. The engine is the scripted `CharEngine`; test_serve_model.py serves a real run."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_engine import CharEngine

from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import SamplingParams

pytestmark = pytest.mark.anyio

ENVELOPE_KEYS = {"message", "type", "param", "code"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@asynccontextmanager
async def client_for(engine=None, **settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine or CharEngine(), ServerSettings(**settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.app = app
        yield client


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an event stream, checking the framing on the way."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


def assert_error(response: httpx.Response, status: int, type: str, param=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ENVELOPE_KEYS
    assert (error["type"], error["param"], error["code"]) == (type, param, code)
    assert "Traceback" not in response.text
    return error["message"]


async def test_health_models_and_playground_page():
    async with client_for(api_key="sekret") as client:
        health = await client.get("/health")
        page = await client.get("/")
        models = await client.get("/v1/models", headers={"Authorization": "Bearer sekret"})
        model = await client.get("/v1/models/char-test", headers={"Authorization": "Bearer sekret"})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="generate"' in page.text and 'id="stop"' in page.text
    assert "<script src" not in page.text and "<link" not in page.text  # self-contained
    assert "/v1/completions" in page.text
    card = {"id": "char-test", "object": "model", "created": 0, "owned_by": "gptlab",
            "block_size": 32, "vocab_size": len(CharEngine().vocab), "tokenizer": "char",
            "max_tokens_limit": 1024, "max_concurrency": 16, "kv_cache_bytes": None}
    assert models.json() == {"object": "list", "data": [card]}
    assert model.json() == card


async def test_completion_shape_and_usage():
    async with client_for() as client:
        r = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 5, "seed": 1})
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "text_completion" and body["model"] == "char-test"
    assert body["id"].startswith("cmpl-")
    [c] = body["choices"]
    expected = CharEngine().complete("Hi", SamplingParams(max_tokens=5, seed=1)).read()
    assert c == {"index": 0, "text": expected, "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


async def test_stop_string_and_end_of_text_give_finish_reason_stop():
    async with client_for(CharEngine(script="one two\x00 three", eot=True)) as client:
        stopped = await client.post("/v1/completions",
                                    json={"prompt": "a", "max_tokens": 20, "stop": [" t"]})
        eot = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 20})
    assert stopped.json()["choices"][0]["text"] == "one"
    assert stopped.json()["choices"][0]["finish_reason"] == "stop"
    assert eot.json()["choices"][0]["text"] == "one two"
    assert eot.json()["usage"]["completion_tokens"] == 8


async def test_stream_framing_and_same_text_as_non_stream():
    request = {"prompt": "ab", "max_tokens": 12, "seed": 7, "temperature": 0.9}
    async with client_for() as client:
        plain = await client.post("/v1/completions", json=request)
        streamed = await client.post(
            "/v1/completions",
            json={**request, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    *pieces, final, usage = chunks
    assert all(p["choices"][0]["finish_reason"] is None for p in pieces)
    assert final["choices"] == [{"index": 0, "text": "", "logprobs": None,
                                 "finish_reason": "length"}]
    assert usage["choices"] == [] and usage["usage"] == plain.json()["usage"]
    text = "".join(p["choices"][0]["text"] for p in pieces)
    assert text == plain.json()["choices"][0]["text"] and len(text) == 12


async def test_same_seed_same_text_also_concurrently():
    request = {"prompt": "x", "max_tokens": 16, "seed": 1234}
    async with client_for(CharEngine(delay_s=0.001), max_concurrency=8) as client:
        responses = await asyncio.gather(
            *[client.post("/v1/completions", json=request) for _ in range(6)],
            client.post("/v1/completions", json={**request, "seed": 99}),
        )
    texts = [r.json()["choices"][0]["text"] for r in responses]
    assert len(set(texts[:6])) == 1 and texts[6] != texts[0]


async def test_several_prompts_and_n_choices():
    request = {"prompt": ["ab", "cde"], "n": 2, "max_tokens": 4, "seed": 5}
    async with client_for() as client:
        body = (await client.post("/v1/completions", json=request)).json()
        again = (await client.post("/v1/completions", json=request)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in body["choices"]]
    assert texts == [c["text"] for c in again["choices"]]
    assert texts[0] != texts[1]  # the second choice uses seed + 1
    assert texts[0] == texts[2]  # same seed, prompts differ only in context
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}


BAD_REQUESTS = [
    (b"{not json", None, "not valid JSON"),
    (b"\xff\xfe{}", None, "not valid JSON"),
    (b"[" * 50_000, None, "nested too deeply"),
    (b"[1, 2]", None, "must be a JSON object, not an array"),
    (b'"prompt"', None, "must be a JSON object, not a string"),
    (b"{}", "prompt", "`prompt` is required"),
    (b'{"prompt": 5}', "prompt", "must be a string or a non-empty array"),
    (b'{"prompt": []}', "prompt", "non-empty array"),
    (b'{"prompt": [1, 2]}', "prompt", "token-id prompts are not supported"),
    (b'{"prompt": "a", "max_tokens": 0}', "max_tokens", "between 1 and 64, got 0"),
    (b'{"prompt": "a", "max_tokens": -3}', "max_tokens", "between 1 and 64, got -3"),
    (b'{"prompt": "a", "max_tokens": 65}', "max_tokens", "between 1 and 64, got 65"),
    (b'{"prompt": "a", "max_tokens": "9"}', "max_tokens", "must be an integer, not a string"),
    (b'{"prompt": "a", "max_tokens": true}', "max_tokens", "must be an integer, not a boolean"),
    (b'{"prompt": "a", "max_tokens": 2.5}', "max_tokens", "must be an integer, not a number"),
    (b'{"prompt": "a", "temperature": -0.5}', "temperature",
     "`temperature` must be a finite number >= 0 (0 means greedy), got -0.5"),
    (b'{"prompt": "a", "temperature": 2.5}', "temperature",
     "`temperature` must be at most 2 (as in the OpenAI API), got 2.5"),
    (b'{"prompt": "a", "temperature": NaN}', "temperature", "finite number, got nan"),
    (b'{"prompt": "a", "temperature": Infinity}', "temperature", "finite number, got inf"),
    (b'{"prompt": "a", "temperature": -Infinity}', "temperature", "finite number, got -inf"),
    (b'{"prompt": "a", "temperature": 1e999}', "temperature", "finite number, got inf"),
    (b'{"prompt": "a", "temperature": 10000000000000}', "temperature", "out of range"),
    (b'{"prompt": "a", "temperature": "hot"}', "temperature", "must be a number"),
    (b'{"prompt": "a", "top_p": 0}', "top_p", "in (0, 1], got 0"),
    (b'{"prompt": "a", "top_p": 1.5}', "top_p", "in (0, 1], got 1.5"),
    (b'{"prompt": "a", "top_p": 2}', "top_p", "`top_p` must be in (0, 1], got 2"),
    (b'{"prompt": "a", "top_p": NaN}', "top_p", "finite number"),
    (b'{"prompt": "a", "top_k": -1}', "top_k", "at least 0, got -1"),
    (b'{"prompt": "a", "n": 0}', "n", "between 1 and 8, got 0"),
    (b'{"prompt": "a", "seed": -1}', "seed", "`seed` must be in [0, 2**63), got -1"),
    (b'{"prompt": "a", "seed": 9223372036854775808}', "seed", "must be in [0, 2**63)"),
    (b'{"prompt": "a", "seed": "7"}', "seed", "must be an integer"),
    (b'{"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}', "stop", "too many stop strings: 5"),
    (b'{"prompt": "a", "stop": [""]}', "stop", "non-empty string"),
    (b'{"prompt": "a", "stop": 3}', "stop", "non-empty string"),
    (b'{"prompt": "a", "stream": "yes"}', "stream", "must be a boolean"),
    (b'{"prompt": "a", "exact": "no"}', "exact", "`exact` must be a boolean, not a string"),
    (b'{"prompt": "a", "exact": 0}', "exact", "`exact` must be a boolean, not a number"),
    (b'{"prompt": "a", "echo": true}', "echo", "not supported"),
    (b'{"prompt": "a", "logprobs": 2}', "logprobs", "not supported"),
    (b'{"prompt": "caf\\u00e9"}', "prompt", "not in the vocabulary: ['\u00e9']"),
]


@pytest.mark.parametrize(("raw", "param", "message"), BAD_REQUESTS,
                         ids=[r[0][:30].decode("latin-1") for r in BAD_REQUESTS])
async def test_bad_requests_get_400_with_the_reason(raw, param, message):
    async with client_for(max_tokens_limit=64) as client:
        r = await client.post("/v1/completions", content=raw,
                              headers={"Content-Type": "application/json"})
    assert message in assert_error(r, 400, "invalid_request_error", param)


async def test_unknown_model_and_path_get_404_wrong_method_405():
    async with client_for() as client:
        model = await client.post("/v1/completions", json={"prompt": "a", "model": "gpt-9"})
        card = await client.get("/v1/models/gpt-9")
        path = await client.get("/v1/chat")
        method = await client.get("/v1/completions")
    assert "'gpt-9' does not exist" in assert_error(model, 404, "invalid_request_error",
                                                    "model", "model_not_found")
    assert_error(card, 404, "invalid_request_error", "model", "model_not_found")
    assert assert_error(path, 404, "not_found_error") == "no such endpoint: GET /v1/chat"
    assert "Method Not Allowed" in assert_error(method, 405, "invalid_request_error")


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic sekret", "Bearer", "sekret"])
async def test_api_key_missing_or_wrong_gets_401(header):
    headers = {"Authorization": header} if header else {}
    async with client_for(api_key="sekret") as client:
        completion = await client.post("/v1/completions", json={"prompt": "a"}, headers=headers)
        models = await client.get("/v1/models", headers=headers)
        good = await client.post("/v1/completions", json={"prompt": "a"},
                                 headers={"Authorization": "Bearer sekret"})
    for r in (completion, models):
        assert "Bearer" in assert_error(r, 401, "authentication_error", None, "invalid_api_key")
    assert good.status_code == 200


async def test_body_over_limit_gets_413_before_parsing():
    big = b"{" + b" " * (1 << 20)  # not JSON either: 413 wins because nothing is parsed

    async def chunked():  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * 65536

    async with client_for() as client:
        declared = await client.post("/v1/completions", content=big)
        streamed = await client.post("/v1/completions", content=chunked())
        at_limit = await client.post("/v1/completions",
                                     content=b'{"prompt": "a"}' + b" " * ((1 << 20) - 15))
    for r in (declared, streamed):
        assert "larger than 1048576 bytes" in assert_error(r, 413, "invalid_request_error",
                                                           None, "request_too_large")
    assert at_limit.status_code == 200


class GatedEngine(CharEngine):
    """Blocks every generation until `gate` is set; counts the ones waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def generate_tokens(self, prompt_ids, params):
        self.gate.wait(timeout=10)
        yield from super().generate_tokens(prompt_ids, params)


async def wait_for(condition, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_over_capacity_gets_429_and_health_answers_during_generation():
    engine = GatedEngine()
    async with client_for(engine, max_concurrency=2) as client:
        slots = client.app.state.gptlab.slots
        running = [asyncio.ensure_future(client.post("/v1/completions", json={"prompt": "a"}))
                   for _ in range(2)]
        await wait_for(lambda: slots.used == 2)
        busy = await client.post("/v1/completions", json={"prompt": "a"})
        health = await client.get("/health")  # the event loop is free while models run
        engine.gate.set()
        done = await asyncio.gather(*running)
        after = await client.post("/v1/completions", json={"prompt": "a"})
    assert "retry shortly" in assert_error(busy, 429, "rate_limit_error", None,
                                           "too_many_requests")
    assert busy.headers["retry-after"] == "1"
    assert health.status_code == 200
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200 and slots.used == 0


async def test_failure_mid_stream_sends_error_event_then_done():
    async with client_for(CharEngine(fail_after=3)) as client:
        streamed = await client.post("/v1/completions",
                                     json={"prompt": "a", "max_tokens": 10, "stream": True})
        plain = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 10})
        slots = client.app.state.gptlab.slots
    events = sse_events(streamed.text)
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["text"] for e in events[:3]]
    assert len("".join(pieces)) == 3
    error = json.loads(events[3])["error"]
    assert error == {"message": "generation failed: see the server log", "type": "server_error",
                     "param": None, "code": None}
    assert len(events) == 5
    assert "generation failed" in assert_error(plain, 500, "server_error")
    assert slots.used == 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6,
)
FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
          "stream", "model", "stream_options", "echo", "best_of", "exact"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6)
       | JSON_VALUES)
def test_any_json_body_gets_a_clean_answer(body):
    async def post():
        async with client_for(max_tokens_limit=32) as client:
            raw = json.dumps(body, allow_nan=True).encode()
            return await client.post("/v1/completions", content=raw)

    r = asyncio.run(post())
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code != 200 and not r.headers["content-type"].startswith("text/event-stream"):
        assert set(r.json()["error"]) == ENVELOPE_KEYS
