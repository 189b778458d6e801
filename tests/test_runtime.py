"""gptlab.runtime: device and dtype resolution, RNG state, malloc settings."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from gptlab.errors import GptlabError
from gptlab.runtime import (
    autocast_factory,
    keep_freed_memory,
    resolve_device,
    resolve_dtype,
    rng_state,
    seed_everything,
    set_rng_state,
)


def test_keep_freed_memory_sets_glibc_malloc_on_linux():
    assert keep_freed_memory() is sys.platform.startswith("linux")


def test_resolve_device():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(GptlabError, match="is not one of: auto, cpu, cuda, cuda:N, mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GptlabError, match="CUDA is not available here"):
            resolve_device("cuda:0")


def test_resolve_dtype():
    assert resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32
    with pytest.raises(GptlabError, match="--dtype float16 needs CUDA"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(GptlabError, match="--dtype 'int8' is not one of"):
        resolve_dtype("int8", "cpu")
    assert autocast_factory("cpu", torch.float32)() is not None


def test_rng_state_round_trip():
    seed_everything(3)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    from gptlab.runtime import native_bf16

    for avx512_bf16, amx in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v,
                            raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v,
                            raising=False)
        assert native_bf16("cpu") == (avx512_bf16 or amx)
    assert native_bf16("mps") is False
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert native_bf16("cpu") is False  # private helpers gone: the safe answer
