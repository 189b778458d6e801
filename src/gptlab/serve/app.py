"""The HTTP server: an OpenAI-compatible completions API and a playground page (Starlette).

`create_app(engine, ...)` builds the ASGI app. Completions run off the event loop, in one
worker thread per app (`Scheduler`) that takes the running requests' jobs in turn, one text
piece (usually one token) of each of their choices per turn; the engine decodes all
running completions in one batch (`ModelEngine`), so one forward pass serves a whole
round of turns. Pieces come back through an asyncio queue per job. At most
`max_concurrency` requests run at once; a request beyond that gets 429 with Retry-After at
once (no queue to wait in). A client that disconnects sets the job's cancel flag, which
the worker checks before every token; its decoding rows are freed at the next step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gptlab.errors import GptlabError
from gptlab.generate import SEED_LIMIT
from gptlab.serve.engine import DEFAULT_ROWS, Completion, DecodingError, Engine
from gptlab.serve.guards import RETRY_AFTER_S as RETRY_AFTER_S  # the name app.py had
from gptlab.serve.guards import Slots, busy_error, check_auth, check_model, read_body
from gptlab.serve.inspect import inspect_endpoint
from gptlab.serve.protocol import (
    ApiError,
    CompletionRequest,
    choice,
    completion_body,
    error_body,
    new_completion_id,
    parse_completion_request,
    parse_json_body,
    usage_body,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # 1 MiB


@dataclass
class ServerSettings:
    """Limits and options of one server.

    Args:
        api_key: when set, /v1/* needs `Authorization: Bearer <api_key>`.
        max_concurrency: completions running at once; more get 429.
        max_body_bytes: larger request bodies get 413 before being read.
        drain_s: after `begin_shutdown`, how long running completions may go on before
            they are ended with an error event.
    """

    api_key: str | None = None
    max_tokens_limit: int = 1024
    max_concurrency: int = DEFAULT_ROWS
    max_body_bytes: int = MAX_BODY_BYTES
    drain_s: float = 10.0


class Job:
    """Completions for one request, run by the app's `Scheduler`; events arrive on `queue` as
    ("piece", index, text), ("done", index, Completion), ("error", ApiError), ("end",)."""

    def __init__(self, completions: list[Completion], cancel: threading.Event, slots: Slots):
        self.completions = completions
        self.cancel = cancel
        self.slots = slots
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def _put(self, event: tuple[Any, ...]) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server has stopped
            self.cancel.set()

    def steps(self) -> Iterator[None]:
        """Run the completions (the request's n choices side by side), one piece of each
        per step, for the scheduler; the slot is freed when this ends, however it ends."""
        last: list[tuple[Any, ...]] = [("end",)]
        running = dict(enumerate(self.completions))
        try:
            for completion in self.completions:
                completion.start()
            yield  # the jobs that came with this one join too, then one step prefills all
            while running and not self.cancel.is_set():
                for index, completion in list(running.items()):
                    piece = next(completion, None)
                    if self.cancel.is_set():
                        break
                    if piece is None:
                        del running[index]
                        self._put(("done", index, completion))
                    else:
                        self._put(("piece", index, piece))
                yield
        except DecodingError as exc:
            logger.error("%s", exc)
            last.insert(0, ("error", ApiError(500, str(exc), "server_error")))
        except GptlabError as exc:
            last.insert(0, ("error", ApiError(400, str(exc))))
        except Exception:
            logger.exception("generation failed")
            last.insert(0, ("error", ApiError(500, "generation failed: see the server log",
                                              "server_error")))
        finally:
            for completion in self.completions:
                completion.close()  # frees their decoding rows at once
            # free the slot before the reader can see the last events: a client that got
            # its answer (or its error) may send the next request at once
            self.slots.release()
            for event in last:
                self._put(event)

    def abort(self, error: ApiError) -> None:
        """End the job from the event loop: cancel the worker and wake the reader."""
        self.cancel.set()
        self.queue.put_nowait(("error", error))
        self.queue.put_nowait(("end",))


class Scheduler:
    """One worker thread that runs every submitted job, a step of each in turn.

    The thread starts with the first job and exits after `idle_s` with nothing to do.
    """

    def __init__(self, idle_s: float = 2.0) -> None:
        self.idle_s = idle_s
        self._new: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        with self._lock:
            self._new.put(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gptlab-completions", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        running: deque[Iterator[None]] = deque()
        while True:
            if not running:
                try:
                    running.append(self._new.get(timeout=self.idle_s).steps())
                except queue.Empty:
                    with self._lock:
                        if self._new.empty():
                            self._thread = None
                            return
                    continue
            while not self._new.empty():
                running.append(self._new.get_nowait().steps())
            steps = running.popleft()
            try:
                next(steps)
            except StopIteration:
                continue
            except Exception:  # Job.steps handles its own errors; never lose the thread
                logger.exception("completion scheduler step failed")
                continue
            running.append(steps)


class ServerState:
    """What the handlers share: the engine, the settings, the slots and running jobs."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.slots = Slots(settings.max_concurrency)
        engine.reserve(settings.max_concurrency)
        self.scheduler = Scheduler()
        self.jobs: set[Job] = set()
        self.shutting_down = False

    def begin_shutdown(self) -> None:
        """Stop taking completions; end the running ones after `drain_s` seconds."""
        if self.shutting_down:
            return
        self.shutting_down = True
        logger.info("shutting down: %d completion(s) running", len(self.jobs))
        asyncio.get_running_loop().call_later(self.settings.drain_s, self._abort_all)

    def _abort_all(self) -> None:
        for job in list(self.jobs):
            job.abort(ApiError(503, "the server is shutting down", "server_error"))


def _state(request: Request) -> ServerState:
    return request.app.state.gptlab


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _model_card(state: ServerState) -> dict[str, Any]:
    engine = state.engine
    return {
        "id": engine.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "gptlab",
        "block_size": engine.block_size,
        "vocab_size": engine.vocab_size,
        "tokenizer": engine.tokenizer_name,
        "max_tokens_limit": state.settings.max_tokens_limit,
        "max_concurrency": state.settings.max_concurrency,
        "kv_cache_bytes": engine.kv_cache_bytes,
    }


async def list_models(request: Request) -> Response:
    check_auth(request)
    return JSONResponse({"object": "list", "data": [_model_card(_state(request))]})


async def get_model(request: Request) -> Response:
    check_auth(request)
    state = _state(request)
    check_model(state.engine, request.path_params["model"])
    return JSONResponse(_model_card(state))


async def playground(request: Request) -> Response:
    html = resources.files("gptlab.serve").joinpath("playground.html").read_text("utf-8")
    return HTMLResponse(html)


async def completions(request: Request) -> Response:
    state = _state(request)
    check_auth(request)
    raw = await read_body(request, state.settings.max_body_bytes)
    req = parse_completion_request(parse_json_body(raw), state.settings.max_tokens_limit)
    check_model(state.engine, req.model)
    if state.shutting_down:
        raise ApiError(503, "the server is shutting down", "server_error")
    if not state.slots.try_acquire():
        raise busy_error(state.settings.max_concurrency)
    try:
        job = await _start_job(state, req)
    except BaseException:
        state.slots.release()
        raise
    state.jobs.add(job)
    completion_id = new_completion_id()
    if req.stream:
        return SSEResponse(_sse_events(state, job, req, completion_id), on_close=job.cancel.set)
    try:
        return await _collect(state, job, req, completion_id, request.receive)
    finally:
        state.jobs.discard(job)


async def _start_job(state: ServerState, req: CompletionRequest) -> Job:
    """Encode the prompts (off the event loop; an unencodable prompt is a 400) and start
    the worker; the caller holds a slot, which the worker releases."""
    cancel = threading.Event()

    def build() -> list[Completion]:
        out = []
        for prompt in req.prompts:
            for i in range(req.n):
                params = req.params
                if params.seed is not None and i > 0:  # distinct but reproducible choices
                    params = replace(params, seed=(params.seed + i) % SEED_LIMIT)
                out.append(state.engine.complete(prompt, params, cancel))
        return out

    try:
        completions = await anyio.to_thread.run_sync(build)
    except GptlabError as exc:
        raise ApiError(400, str(exc), param="prompt") from None
    job = Job(completions, cancel, state.slots)
    state.scheduler.submit(job)
    return job


async def _collect(
    state: ServerState, job: Job, req: CompletionRequest, completion_id: str, receive: Receive
) -> Response:
    """Wait for a non-streamed job, cancelling it if the client goes away."""

    async def read_all() -> list[Completion]:
        done: dict[int, Completion] = {}
        while (event := await job.queue.get())[0] != "end":
            if event[0] == "error":
                raise event[1]
            if event[0] == "done":
                done[event[1]] = event[2]
        return [done[i] for i in sorted(done)]

    reader = asyncio.ensure_future(read_all())
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not reader.done():  # the client has gone: nobody reads the answer
            job.cancel.set()
            reader.cancel()
    if reader.cancelled():
        return Response(status_code=499)
    done = reader.result()  # raises the job's ApiError, if any
    choices = [choice(i, c.text, c.finish_reason) for i, c in enumerate(done)]
    usage = _usage(done, req.n)
    return JSONResponse(completion_body(completion_id, state.engine.model_id, choices, usage))


def _usage(completions: list[Completion], n: int) -> dict[str, int]:
    """Token counts; the n choices of one prompt count its tokens once, as OpenAI does."""
    prompt_tokens = sum(c.prompt_tokens for c in completions[::n])
    return usage_body(prompt_tokens, sum(c.completion_tokens for c in completions))


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def _sse_events(
    state: ServerState, job: Job, req: CompletionRequest, completion_id: str
) -> AsyncIterator[bytes]:
    """The server-sent events of a streamed job; always ends with `data: [DONE]`."""
    model = state.engine.model_id
    done = 0
    try:
        while (event := await job.queue.get())[0] != "end":
            kind = event[0]
            if kind == "piece":
                body = completion_body(completion_id, model, [choice(event[1], event[2], None)],
                                       None)
            elif kind == "done":
                done += 1
                finish = event[2].finish_reason
                body = completion_body(completion_id, model, [choice(event[1], "", finish)], None)
            else:
                body = event[1].body()
            yield _sse(body)
        if req.include_usage and done == len(job.completions):
            yield _sse(completion_body(completion_id, model, [], _usage(job.completions, req.n)))
        yield _sse("[DONE]")
    finally:
        job.cancel.set()  # a no-op when finished; frees the slot if the client went away
        state.jobs.discard(job)


class SSEResponse(StreamingResponse):
    """A text/event-stream response that stops (and cancels its iterator) as soon as the
    client disconnects, whatever ASGI spec version the server speaks."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        self.on_close = on_close
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream_then_stop() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the connection is gone
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream_then_stop)
                await _wait_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self.on_close()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    return JSONResponse(error_body(message, kind), status_code=exc.status_code,
                        headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal server error: see the server log", "server_error"),
                        status_code=500)


def create_app(engine: Engine, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving `engine`; `app.state.gptlab` is its ServerState."""
    routes = [
        Route("/", playground, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/inspect", inspect_endpoint, methods=["POST"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.gptlab = ServerState(engine, settings or ServerSettings())
    return app
