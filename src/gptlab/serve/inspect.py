"""`POST /v1/inspect`: the playground's Inspect view as JSON (gptlab's own, not OpenAI's).

One request runs up to three `gptlab.inspect` views of a text: its tokens (`token_table`),
the next-token predictions (`next_token_table`) and the attention maps (`attention_maps`).
Auth, body limits, the error envelope and the completion slots are the completions
endpoint's. The model work runs as one step of the app's completion `Scheduler`, in its
one worker thread, so it never runs beside a generation step: `attention_maps` hooks the
model's blocks for one forward pass, and a generation in another thread would pass through
those hooks too. Encoding the attention maps (up to 6 × 6 × 256 × 256 numbers for the
lecture model) is the slow part of the answer; `attention_json` writes them with a lookup
table of the 10,001 four-decimal strings instead of `json.dumps` on floats.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
import torch
from starlette.requests import Request
from starlette.responses import Response

from gptlab.errors import GptlabError
from gptlab.inspect import AttentionMaps, attention_maps, next_token_table, token_table
from gptlab.serve.engine import ModelEngine
from gptlab.serve.guards import Slots, busy_error, check_auth, check_model, read_body
from gptlab.serve.protocol import ApiError, _int, _optional, invalid, parse_json_body

VIEWS = ("tokens", "next", "attention")
MAX_K = 20
DECIMALS = 4  # attention weights are sent rounded: enough for a heatmap, a third the bytes


@dataclass(frozen=True)
class InspectRequest:
    """A validated POST /v1/inspect body."""

    text: str
    k: int = 5
    views: tuple[str, ...] = VIEWS
    layer: int | None = None
    head: int | None = None
    model: str | None = None


def parse_inspect_request(body: dict[str, Any], n_layer: int, n_head: int) -> InspectRequest:
    """Validate an inspect request for a model of `n_layer` × `n_head`; raises ApiError(400)
    naming the bad field."""
    model = _optional(body, "model", str)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        what = "empty" if text == "" else "missing" if text is None else "not a string"
        raise invalid(f"`text` is {what}: send the text to inspect as a non-empty string",
                      "text")
    k = _int(body, "k", 5, 1, MAX_K)
    views = _views(body)
    layer = _int(body, "layer", -1, 0, n_layer - 1)
    head = _int(body, "head", -1, 0, n_head - 1)
    return InspectRequest(text, k, views, None if layer < 0 else layer,
                          None if head < 0 else head, model)


def _views(body: dict[str, Any]) -> tuple[str, ...]:
    views = body.get("views")
    if views is None:
        return VIEWS
    if (not isinstance(views, list) or not views
            or not all(isinstance(v, str) and v in VIEWS for v in views)):
        raise invalid(f"`views` must be a non-empty array of {', '.join(map(repr, VIEWS))}, "
                      f"got {json.dumps(views)[:80]}", "views")
    return tuple(v for v in VIEWS if v in views)  # one order, no repeats


def run_inspection(engine: ModelEngine, req: InspectRequest) -> tuple[dict, AttentionMaps | None]:
    """The model work of one request: the response body without its attention maps, and
    the maps (None unless asked for). Raises GptlabError for text the tokenizer refuses."""
    model, tokenizer = engine.model, engine.tokenizer
    table = token_table(tokenizer, req.text)
    dropped = max(0, len(table.ids) - model.config.block_size)
    body: dict[str, Any] = {"object": "inspect", "model": engine.model_id,
                            "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                            "block_size": model.config.block_size, "truncated": dropped > 0,
                            "dropped": dropped}
    if "tokens" in req.views:
        body["tokens"] = [{"id": r.id, "piece": r.piece, "start": r.start, "end": r.end}
                          for r in table.rows[dropped:]]
    if "next" in req.views:
        nxt = next_token_table(model, tokenizer, req.text, req.k)
        body["next"] = [{"next_id": r.next_id, "next_piece": r.next_piece, "prob": r.next_prob,
                         "surprisal_bits": r.surprisal_bits,
                         "top": [a.to_dict() for a in r.top]} for r in nxt.rows]
        body["mean_surprisal_bits"] = nxt.mean_surprisal_bits
    maps = attention_maps(model, table.ids) if "attention" in req.views else None
    return body, maps


def attention_json(weights: torch.Tensor, layer: int | None = None,
                   head: int | None = None) -> str:
    """`weights` (n_layer, n_head, T, T) as JSON nested lists [layer][head][T][T], each
    number rounded to 4 decimals; `layer` / `head` keep only that one (the lists stay 4
    deep). E.g. a (1, 1, 2, 2) map [[1, 0], [0.25, 0.75]] -> "[[[[1.0,0.0],[0.25,0.75]]]]"."""
    if layer is not None:
        weights = weights[layer : layer + 1]
    if head is not None:
        weights = weights[:, head : head + 1]
    L, H, T, _ = weights.shape
    scale = 10**DECIMALS
    steps = torch.round(weights.float() * scale).clamp(0, scale).to(torch.int64)  # (L, H, T, T)
    strings = _FOUR_DECIMALS[steps.numpy()].reshape(L * H, T, T)  # the same shape, as text
    maps = ("[" + ",".join("[" + ",".join(row) + "]" for row in grid) + "]" for grid in strings)
    heads = list(maps)
    layers = ("[" + ",".join(heads[i * H : (i + 1) * H]) + "]" for i in range(L))
    return "[" + ",".join(layers) + "]"


# "0.0", "0.0001", ..., "0.9999", "1.0": repr of i / 10**4 is the shortest such string
_FOUR_DECIMALS = np.array([repr(i / 10**DECIMALS) for i in range(10**DECIMALS + 1)], dtype=object)


def response_json(body: dict[str, Any], maps: AttentionMaps | None, req: InspectRequest) -> bytes:
    """The whole response: `body` with the attention object (written by `attention_json`)
    as its last member."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if maps is None:
        return text.encode()
    n_layer, n_head, T, _ = maps.weights.shape
    head = json.dumps({"n_layer": n_layer, "n_head": n_head, "T": T, "layer": req.layer,
                       "head": req.head, "decimals": DECIMALS})
    weights = attention_json(maps.weights, req.layer, req.head)
    return f'{text[:-1]},"attention":{head[:-1]},"weights":{weights}}}}}'.encode()


class InspectJob:
    """One inspection for the app's `Scheduler`: a single step that runs `work` and hands
    its result (or exception) to `future` on the event loop; frees the slot when done."""

    def __init__(self, work: Callable[[], Any], slots: Slots) -> None:
        self.work = work
        self.slots = slots
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self._loop.create_future()

    def steps(self) -> Iterator[None]:
        result, error = None, None
        try:
            result = self.work()
        except Exception as exc:  # handed to the request, which turns it into a response
            error = exc
        finally:
            self.slots.release()
        try:
            self._loop.call_soon_threadsafe(self._settle, result, error)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass
        yield

    def _settle(self, result: Any, error: Exception | None) -> None:
        if self.future.done():  # the request was cancelled
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


async def inspect_endpoint(request: Request) -> Response:
    """POST /v1/inspect (see docs/inspect.md for the schema)."""
    state = request.app.state.gptlab
    check_auth(request)
    raw = await read_body(request, state.settings.max_body_bytes)
    engine = state.engine
    if not isinstance(engine, ModelEngine):
        raise ApiError(501, "this server's engine has no model to inspect: serve a run folder "
                       "(`gptlab serve RUN_DIR`)", code="not_implemented")
    config = engine.model.config
    req = parse_inspect_request(parse_json_body(raw), config.n_layer, config.n_head)
    check_model(engine, req.model)
    if state.shutting_down:
        raise ApiError(503, "the server is shutting down", "server_error")
    if not state.slots.try_acquire():
        raise busy_error(state.settings.max_concurrency, "requests are using the model")
    job = InspectJob(lambda: run_inspection(engine, req), state.slots)
    state.scheduler.submit(job)  # type: ignore[arg-type]  # a Job in all the scheduler uses
    try:
        body, maps = await job.future
    except GptlabError as exc:
        raise ApiError(400, str(exc), param="text") from None
    content = await anyio.to_thread.run_sync(response_json, body, maps, req)
    return Response(content, media_type="application/json")
