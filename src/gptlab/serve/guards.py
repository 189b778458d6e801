"""What every model endpoint checks before it runs: the API key, the body size, the model
name, and a free slot. Shared by app.py (completions, models) and inspect.py (inspect)."""

from __future__ import annotations

import hashlib
import hmac
import threading

from starlette.requests import ClientDisconnect, Request

from gptlab.serve.engine import Engine
from gptlab.serve.protocol import ApiError

RETRY_AFTER_S = 1


class Slots:
    """A non-blocking counting limiter, released from worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.used >= self.size:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._lock:
            assert self.used > 0
            self.used -= 1


def check_auth(request: Request) -> None:
    """401 unless the request carries the server's API key (when it has one)."""
    key = request.app.state.gptlab.settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    # Digests first, so that not even the key's length leaks; compare_digest takes the same
    # time wherever the two differ.
    given_digest = hashlib.sha256(given.strip().encode()).digest()
    key_digest = hashlib.sha256(key.encode()).digest()
    if not (hmac.compare_digest(given_digest, key_digest) and scheme.lower() == "bearer"):
        raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                       "authentication_error", code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it."""
    too_large = ApiError(413, f"request body is larger than {limit} bytes",
                         code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, f"bad Content-Length header: {length!r}")
        if int(length) > limit:
            raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected while sending the request") from None
    return b"".join(chunks)


def check_model(engine: Engine, model: str | None) -> None:
    """404 unless `model` is absent or the served model's id."""
    if model is not None and model != engine.model_id:
        raise ApiError(404, f"model {model!r} does not exist: this server has "
                       f"{engine.model_id!r} (see /v1/models)", param="model",
                       code="model_not_found")


def busy_error(limit: int, what: str = "completions are running") -> ApiError:
    """The 429 for a request that finds every slot taken (no queue to wait in)."""
    return ApiError(429, f"server busy: {limit} {what}; retry shortly", "rate_limit_error",
                    code="too_many_requests", headers={"Retry-After": str(RETRY_AFTER_S)})
