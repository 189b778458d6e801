"""The server over real sockets (uvicorn): client disconnects and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve_engine import CharEngine

from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.server import serve_in_thread

TESTS_DIR = Path(__file__).resolve().parent
# A generation that would take 50 s: anything that ends it sooner was cut short.
SLOW = {"delay_s": 0.05}
LONG_REQUEST = {"prompt": "a", "max_tokens": 1000}


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def slow_server():
    app = create_app(CharEngine(**SLOW), ServerSettings(max_tokens_limit=1000))
    with serve_in_thread(app) as url:
        yield url, app.state.gptlab.slots


def test_stream_disconnect_frees_the_slot(slow_server):
    url, slots = slow_server
    with httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("POST", "/v1/completions", json={**LONG_REQUEST, "stream": True}) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            assert first.startswith("data: {")
            assert slots.used == 1
        # leaving the block closes the connection mid-stream
        assert wait_until(lambda: slots.used == 0)
        assert client.get("/health").json() == {"status": "ok"}


def test_non_stream_disconnect_frees_the_slot(slow_server):
    url, slots = slow_server
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(LONG_REQUEST).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert wait_until(lambda: slots.used == 1)
    assert wait_until(lambda: slots.used == 0)


SERVER_SCRIPT = """
import sys
from test_serve_engine import CharEngine
from gptlab.serve.app import ServerSettings, create_app
from gptlab.serve.server import run_server

app = create_app(CharEngine(delay_s=0.05), ServerSettings(max_tokens_limit=1000, drain_s=0.5))
run_server(app, "127.0.0.1", 0, on_ready=lambda url: print(url, flush=True))
"""


def test_sigterm_ends_running_streams_with_an_error_event_and_exits(subprocess_env):
    env = {**subprocess_env, "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        with httpx.Client(base_url=url, timeout=30) as client:
            with client.stream("POST", "/v1/completions",
                               json={**LONG_REQUEST, "stream": True}) as r:
                lines = (line for line in r.iter_lines() if line)
                assert next(lines).startswith("data: {")
                proc.send_signal(signal.SIGTERM)
                rest = list(lines)
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["message"] == "the server is shutting down"
        assert error["type"] == "server_error"
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_openai_client_works_against_the_server():
    openai = pytest.importorskip("openai", reason="the openai client is not installed: "
                                 "pip install -e '.[test]'")
    app = create_app(CharEngine(), ServerSettings(api_key="k3y"))
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0)
        [model] = client.models.list().data
        answer = client.completions.create(model=model.id, prompt="Hello", max_tokens=10,
                                           seed=3, stop=["zz"])
        chunks = list(client.completions.create(model=model.id, prompt="Hello", max_tokens=10,
                                                seed=3, stop=["zz"], stream=True))
        with pytest.raises(openai.BadRequestError, match="temperature"):
            client.completions.create(model=model.id, prompt="a", temperature=-1)
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.completions.create(model="gpt-9", prompt="a")
        wrong_key = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong_key.models.list()
    assert model.id == "char-test" and model.model_extra["block_size"] == 32
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens == 5
    streamed = "".join(c.choices[0].text for c in chunks)
    assert streamed == answer.choices[0].text and streamed
