"""POST /v1/inspect on a tiny real run: shapes, agreement with gptlab.inspect, options,
truncation, bad bodies (4xx envelope naming the field), auth and limits."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
import torch
from test_serve_api import ENVELOPE_KEYS, assert_error
from test_serve_engine import CharEngine

from gptlab.inspect import attention_maps, next_token_table, token_table
from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.engine import ModelEngine
from gptlab.serve.inspect import attention_json

pytestmark = pytest.mark.anyio

TEXT = "First Citizen:\nBefore"  # 21 characters: longer than block_size (16)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def engine(tiny_run):
    return ModelEngine.from_run_dir(tiny_run)


async def post(engine, body, headers=None, **settings) -> httpx.Response:
    app = create_app(engine, ServerSettings(**settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await client.post("/v1/inspect", content=content, headers=headers)


async def test_shapes_and_agreement_with_the_library(engine):
    text = TEXT[:12]
    r = await post(engine, {"text": text, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["object"], body["model"], body["truncated"], body["dropped"]) == (
        "inspect", "tiny-char", False, 0)
    table = token_table(engine.tokenizer, text)
    assert body["tokens"] == [{"id": t.id, "piece": t.piece, "start": t.start, "end": t.end}
                              for t in table.rows]
    T = len(body["tokens"])
    assert T == len(text)
    att = body["attention"]
    assert (att["n_layer"], att["n_head"], att["T"]) == (2, 2, T)
    weights = torch.tensor(att["weights"], dtype=torch.float64)
    assert weights.shape == (2, 2, T, T)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, T, dtype=torch.float64), atol=1e-3)
    assert (weights.triu(1) == 0).all()
    expected = attention_maps(engine.model, table.ids).weights.double()
    assert torch.allclose(weights, expected, atol=0.5e-4 + 1e-9)  # rounded to 4 decimals
    library = next_token_table(engine.model, engine.tokenizer, text, k=3)
    assert len(body["next"]) == T
    for sent, row in zip(body["next"], library.rows, strict=True):
        assert (sent["next_id"], sent["next_piece"]) == (row.next_id, row.next_piece)
        if row.next_prob is None:
            assert sent["prob"] is None and sent["surprisal_bits"] is None
        else:
            assert sent["prob"] == pytest.approx(row.next_prob, abs=1e-4)
            assert sent["surprisal_bits"] == pytest.approx(row.surprisal_bits, abs=1e-4)
        assert [a["id"] for a in sent["top"]] == [a.id for a in row.top]
        assert [a["prob"] for a in sent["top"]] == pytest.approx([a.prob for a in row.top],
                                                                 abs=1e-4)
    assert body["mean_surprisal_bits"] == pytest.approx(library.mean_surprisal_bits, abs=1e-4)


async def test_text_longer_than_the_block_inspects_its_last_block(engine):
    body = (await post(engine, {"text": TEXT})).json()
    assert (body["truncated"], body["dropped"]) == (True, len(TEXT) - 16)
    assert len(body["tokens"]) == len(body["next"]) == body["attention"]["T"] == 16
    assert body["tokens"][0]["start"] == len(TEXT) - 16  # spans are in the text sent
    assert "".join(TEXT[t["start"]:t["end"]] for t in body["tokens"]) == TEXT[-16:]


async def test_views_k_layer_and_head_select_what_is_sent(engine):
    only_tokens = (await post(engine, {"text": "Fir", "views": ["tokens"]})).json()
    assert "next" not in only_tokens and "attention" not in only_tokens
    assert len(only_tokens["tokens"]) == 3
    nxt = (await post(engine, {"text": "Fir", "views": ["next", "next"], "k": 7})).json()
    assert "tokens" not in nxt and "attention" not in nxt
    assert all(len(row["top"]) == 7 for row in nxt["next"])
    full = (await post(engine, {"text": "Fire", "views": ["attention"]})).json()
    one = (await post(engine, {"text": "Fire", "views": ["attention"], "layer": 1,
                               "head": 0})).json()
    layer = (await post(engine, {"text": "Fire", "views": ["attention"], "layer": 0})).json()
    assert (one["attention"]["layer"], one["attention"]["head"]) == (1, 0)
    assert one["attention"]["weights"] == [[full["attention"]["weights"][1][0]]]
    assert layer["attention"]["weights"] == [full["attention"]["weights"][0]]
    assert full["attention"]["layer"] is None and full["attention"]["head"] is None


def test_attention_json_rounds_to_four_decimals_and_keeps_four_levels():
    weights = torch.tensor([[[[1.0, 0.0], [0.123456, 0.876544]]]])  # (1, 1, 2, 2)
    assert attention_json(weights) == "[[[[1.0,0.0],[0.1235,0.8765]]]]"
    maps = torch.rand(2, 3, 4, 4)
    one = json.loads(attention_json(maps, layer=1, head=2))
    assert one == json.loads(attention_json(maps[1:2, 2:3]))
    assert torch.tensor(json.loads(attention_json(maps, head=2))).shape == (2, 1, 4, 4)


BAD_BODIES = [
    (b"{not json", None, "not valid JSON"),
    (b"[1]", None, "must be a JSON object"),
    (b"{}", "text", "`text` is missing"),
    (b'{"text": ""}', "text", "`text` is empty"),
    (b'{"text": 5}', "text", "`text` is not a string"),
    (b'{"text": ["a"]}', "text", "`text` is not a string"),
    (b'{"text": "caf\\u00e9"}', "text", "not in the char tokenizer's"),
    (b'{"text": "a", "k": 0}', "k", "between 1 and 20, got 0"),
    (b'{"text": "a", "k": 21}', "k", "between 1 and 20, got 21"),
    (b'{"text": "a", "k": "5"}', "k", "must be an integer, not a string"),
    (b'{"text": "a", "k": true}', "k", "must be an integer, not a boolean"),
    (b'{"text": "a", "views": []}', "views", "non-empty array"),
    (b'{"text": "a", "views": "tokens"}', "views", "non-empty array"),
    (b'{"text": "a", "views": ["pictures"]}', "views", "'tokens', 'next', 'attention'"),
    (b'{"text": "a", "layer": 2}', "layer", "between 0 and 1, got 2"),
    (b'{"text": "a", "layer": -1}', "layer", "between 0 and 1, got -1"),
    (b'{"text": "a", "head": 1.5}', "head", "must be an integer, not a number"),
    (b'{"text": "a", "model": 3}', "model", "must be a string"),
]


@pytest.mark.parametrize(("raw", "param", "message"), BAD_BODIES,
                         ids=[r[0][:30].decode("latin-1") for r in BAD_BODIES])
async def test_bad_bodies_get_400_naming_the_field(engine, raw, param, message):
    r = await post(engine, raw, headers={"Content-Type": "application/json"})
    assert message in assert_error(r, 400, "invalid_request_error", param)


async def test_unknown_model_404_big_body_413_no_model_501(engine):
    unknown = await post(engine, {"text": "a", "model": "gpt-9"})
    big = await post(engine, b'{"text": "' + b"a" * 2000 + b'"}', max_body_bytes=1000)
    stub = await post(CharEngine(), {"text": "a"})
    assert_error(unknown, 404, "invalid_request_error", "model", "model_not_found")
    assert "larger than 1000 bytes" in assert_error(big, 413, "invalid_request_error", None,
                                                    "request_too_large")
    assert "gptlab serve RUN_DIR" in assert_error(stub, 501, "invalid_request_error", None,
                                                  "not_implemented")


@pytest.mark.parametrize("header", [None, "Bearer wrong", "sekret"])
async def test_api_key_missing_or_wrong_gets_401(engine, header):
    headers = {"Authorization": header} if header else {}
    r = await post(engine, {"text": "a"}, headers=headers, api_key="sekret")
    good = await post(engine, {"text": "a"}, headers={"Authorization": "Bearer sekret"},
                      api_key="sekret")
    assert "Bearer" in assert_error(r, 401, "authentication_error", None, "invalid_api_key")
    assert good.status_code == 200


async def test_burst_of_good_and_bad_bodies_never_5xx_and_frees_every_slot(engine):
    bodies = [{"text": TEXT}, {"text": ""}, {"text": "\u00e9"}, {"text": "Fi", "k": 99},
              {"text": None}, {"text": "Fir", "layer": 0, "head": 1}, [1, 2], "x"]
    app = create_app(engine, ServerSettings(max_concurrency=64))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*[
            client.post("/v1/inspect", content=json.dumps(b).encode()) for b in bodies * 6])
        completion = await client.post("/v1/completions", json={"prompt": "Fi", "max_tokens": 3})
    statuses = [r.status_code for r in responses]
    assert all(s < 500 for s in statuses), statuses
    assert statuses.count(200) == 12
    for r in responses:
        if r.status_code != 200:
            assert set(r.json()["error"]) == ENVELOPE_KEYS
    assert completion.status_code == 200
    assert app.state.gptlab.slots.used == 0


async def test_inspect_shares_the_completion_slots(engine):
    app = create_app(engine, ServerSettings(max_concurrency=1))
    app.state.gptlab.slots.try_acquire()  # a completion is running
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        busy = await client.post("/v1/inspect", json={"text": "a"})
    assert "retry shortly" in assert_error(busy, 429, "rate_limit_error", None,
                                           "too_many_requests")
    assert math.isfinite(float(busy.headers["retry-after"]))
