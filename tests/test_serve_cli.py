"""`gptlab serve`: options, errors, and what it hands to the server."""

from __future__ import annotations

import sys

import pytest
from test_serve_engine import CharEngine

import gptlab.serve.server
from gptlab.cli import main
from gptlab.serve.engine import ModelEngine


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ["RUN_DIR", "--host", "--port", "--api-key", "--max-tokens-limit",
                   "--max-concurrency", "--checkpoint", "--device", "--drain-s", "--threads"]:
        assert option in out
    assert "(default: 127.0.0.1)" in out and "(default: 8000)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
        (["--max-concurrency", "0"], "--max-concurrency must be at least 1, got 0"),
        (["--max-tokens-limit", "0"], "--max-tokens-limit must be at least 1, got 0"),
        (["--drain-s", "60"], "--drain-s must be between 0 and 20, got 60.0"),
        (["--api-key", " "], "--api-key is empty: give a key, or leave the option out"),
        (["--threads", "-1"], "--threads must be 0 (all cores but one) or more, got -1"),
    ],
)
def test_bad_options_fail_with_one_line(tmp_path, capsys, extra, message):
    assert main(["serve", str(tmp_path), *extra]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_bad_device_is_named_not_blamed_on_the_weights(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--device", "banana"]) == 1
    assert capsys.readouterr().err.startswith("error: --device 'banana' is not one of")


def test_missing_run_folder(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: run folder not found: ") and "gptlab train" in err


def test_missing_serve_extra_names_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    monkeypatch.delitem(sys.modules, "gptlab.serve.server", raising=False)
    assert main(["serve", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == ("error: gptlab serve needs the serve extra (uvicorn is missing): "
                   "pip install 'gptlab[serve]'\n")


@pytest.mark.parametrize(("requested", "cores", "expected"),
                         [(0, 2, 1), (0, 1, 1), (0, 8, 7), (3, 2, 3)])
def test_threads_leave_the_event_loop_a_core(requested, cores, expected, monkeypatch):
    import torch

    import gptlab.tokenizers.base
    from gptlab.cli.serve import model_threads

    monkeypatch.setattr(gptlab.tokenizers.base, "resolve_num_threads", lambda n: cores)
    assert model_threads(requested) == expected == torch.get_num_threads()


def test_options_reach_the_server(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_from_run_dir(run_dir, which, device):
        seen.update(run_dir=run_dir, which=which, device=device)
        return CharEngine()

    def fake_run_server(app, host, port, on_ready):
        seen.update(host=host, port=port, settings=app.state.gptlab.settings)
        on_ready(f"http://{host}:{port}")

    monkeypatch.setattr(ModelEngine, "from_run_dir", staticmethod(fake_from_run_dir))
    monkeypatch.setattr(gptlab.serve.server, "run_server", fake_run_server)
    monkeypatch.setenv("GPTLAB_API_KEY", "from-env")
    argv = ["serve", str(tmp_path), "--port", "9001", "--max_concurrency", "3",
            "--max-tokens-limit", "50", "--checkpoint", "latest", "--threads", "1"]
    assert main(argv) == 0
    settings = seen.pop("settings")
    assert seen == {"run_dir": tmp_path, "which": "latest", "device": "cpu",
                    "host": "127.0.0.1", "port": 9001}
    assert (settings.api_key, settings.max_concurrency, settings.max_tokens_limit) == (
        "from-env", 3, 50)
    assert capsys.readouterr().err == (
        "serving char-test on http://127.0.0.1:9001 (API key required; 1 torch thread); "
        "playground: "
        "http://127.0.0.1:9001/ ; API: http://127.0.0.1:9001/v1 ; Ctrl-C to stop\n"
        "server stopped\n")
