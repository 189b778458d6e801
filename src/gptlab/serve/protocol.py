"""The OpenAI completions wire format: request validation, errors, response bodies.

Validation is strict about types (a JSON `true` is not an integer, NaN and infinity are not
temperatures: Python's json module accepts them) and lenient about fields it does not use,
which it ignores as OpenAI clients send extras.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gptlab.checks import is_int, is_number
from gptlab.generate import SamplingError
from gptlab.serve.engine import SamplingParams

MAX_STOP_STRINGS = 4  # as the OpenAI API
MAX_STOP_CHARS = 200
MAX_PROMPTS = 16
MAX_N = 8
MAX_TEMPERATURE = 2.0  # as the OpenAI API


class ApiError(Exception):
    """An error the client sees as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


@dataclass(frozen=True)
class CompletionRequest:
    """A validated POST /v1/completions body."""

    prompts: tuple[str, ...]
    params: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    model: str | None = None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not valid UTF-8 JSON"
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        raise invalid(f"request body is not valid JSON ({reason}): send a JSON object") from None
    if not isinstance(body, dict):
        raise invalid(f"request body must be a JSON object, not {_json_type(body)}")
    return body


def parse_completion_request(body: dict[str, Any], max_tokens_limit: int) -> CompletionRequest:
    """Validate a completions request; raises ApiError(400) naming the bad field."""
    unsupported = {
        "echo": (None, False), "suffix": (None,), "logprobs": (None,), "best_of": (None, 1)
    }
    for field, allowed in unsupported.items():
        if body.get(field) not in allowed:
            raise invalid(f"`{field}` is not supported by this server: leave it out", field)
    model = _optional(body, "model", str)
    prompts = _prompts(body)
    max_tokens = _int(body, "max_tokens", 16, 1, max_tokens_limit)
    temperature = _number(body, "temperature", 1.0)
    if temperature > MAX_TEMPERATURE:  # the API's limit; SamplingConfig checks the rest
        raise invalid(f"`temperature` must be at most {MAX_TEMPERATURE:g} (as in the OpenAI "
                      f"API), got {temperature!r}", "temperature")
    top_p = _number(body, "top_p", None)
    top_k = _int(body, "top_k", 0, 0, None)  # 0: off
    n = _int(body, "n", 1, 1, MAX_N)
    stream = _optional(body, "stream", bool) or False
    options = _optional(body, "stream_options", dict) or {}
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise invalid("`stream_options.include_usage` must be a boolean", "stream_options")
    exact = _optional(body, "exact", bool)  # a gptlab extension, like top_k
    try:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k or None,
            top_p=None if top_p == 1 else top_p,
            seed=_optional(body, "seed", int),
            stop=_stops(body),
            exact=True if exact is None else exact,
        )
    except SamplingError as exc:
        raise invalid(f"`{exc.field}` {exc.rule}, got {exc.value!r}", exc.field) from None
    return CompletionRequest(prompts, params, n, stream, include_usage and stream, model)


def _json_type(value: Any) -> str:
    """How the client wrote `value` (a json.loads result): "a number", "null", ..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array"}
    return names.get(type(value), "an object")


def _optional(body: dict[str, Any], field: str, kind: type) -> Any:
    """`body[field]` if present and not null, checked to be of JSON type `kind`."""
    value = body.get(field)
    if value is None:
        return None
    if not (is_int(value) if kind is int else isinstance(value, kind)):
        want = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}[kind]
        raise invalid(f"`{field}` must be {want}, not {_json_type(value)}", field)
    return value


def _int(body: dict[str, Any], field: str, default: int, low: int, high: int | None) -> int:
    value = _optional(body, field, int)
    if value is None:
        return default
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise invalid(f"`{field}` must be {bound}, got {value}", field)
    return value


def _number(body: dict[str, Any], field: str, default: float | None) -> Any:
    """`body[field]` as a finite JSON number, or `default` when absent or null."""
    value = body.get(field)
    if value is None:
        return default
    if not is_number(value):
        raise invalid(f"`{field}` must be a number, not {_json_type(value)}", field)
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"`{field}` must be a finite number, got {value!r}", field)
    if isinstance(value, int) and abs(value) > 1e6:  # a huge JSON integer would overflow float
        raise invalid(f"`{field}` is out of range: {value}", field)
    return value


def _prompts(body: dict[str, Any]) -> tuple[str, ...]:
    if "prompt" not in body or body["prompt"] is None:
        raise invalid("`prompt` is required: a string or an array of strings", "prompt")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return (prompt,)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise invalid(f"too many prompts: {len(prompt)} (at most {MAX_PROMPTS})", "prompt")
        return tuple(prompt)
    raise invalid("`prompt` must be a string or a non-empty array of strings (token-id "
                  "prompts are not supported)", "prompt")


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid("`stop` must be a non-empty string or an array of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(f"too many stop strings: {len(stops)} (at most {MAX_STOP_STRINGS})", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise invalid(f"a stop string is longer than {MAX_STOP_CHARS} characters", "stop")
    return tuple(stops)


def new_completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex


def completion_body(
    completion_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None
) -> dict[str, Any]:
    """A `text_completion` object (a whole response or one streamed chunk)."""
    body: dict[str, Any] = {"id": completion_id, "object": "text_completion",
                            "created": int(time.time()), "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
