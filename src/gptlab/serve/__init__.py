"""`gptlab serve`: an OpenAI-compatible completions server with a browser playground.

`gptlab.serve.app.create_app(engine, settings)` builds the ASGI app (needs the `serve`
extra: starlette, uvicorn); `ModelEngine.from_run_dir(run_dir)` loads a trained run to
serve. This package's top level imports no web framework.
"""

from gptlab.serve.engine import Completion, Engine, ModelEngine, SamplingParams

__all__ = ["Completion", "Engine", "ModelEngine", "SamplingParams"]
