"""Batching: RandomBatches (seed 001's get_batch) and the sliding window (seed 002)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.data import RandomBatches, SlidingWindowDataset, create_dataloader
from gptlab.errors import GptlabError


def seed_get_batch(data: torch.Tensor, batch_size: int, block_size: int):
    """Seed 001's get_batch, verbatim apart from taking its globals as arguments."""
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in ix])
    return x, y


@pytest.fixture
def token_file(tmp_path):
    """A fake prepared dataset: 5,000 uint16 tokens in train.bin, 600 in val.bin."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 65, 5000, dtype=np.uint16)
    val = rng.integers(0, 65, 600, dtype=np.uint16)
    train.tofile(tmp_path / "train.bin")
    val.tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text('{"dtype": "uint16", "vocab_size": 65}')
    return tmp_path, train, val


@pytest.mark.parametrize("seed", [0, 1337])
def test_random_batches_equal_seed_get_batch(token_file, seed):
    data_dir, train, _ = token_file
    batches = RandomBatches(data_dir, "train", batch_size=4, block_size=8, seed=seed)
    torch.manual_seed(seed)
    reference = torch.tensor(train.astype(np.int64))
    for _ in range(5):
        x, y = batches.get_batch()
        x_ref, y_ref = seed_get_batch(reference, 4, 8)
        assert x.dtype == torch.int64 and x.shape == (4, 8)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_random_batches_read_the_memmap_and_val(token_file):
    data_dir, _, val = token_file
    batches = RandomBatches(data_dir, "val", batch_size=3, block_size=16, seed=0)
    assert isinstance(batches.data, np.memmap)
    x, y = next(iter(batches))
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for row in x:  # every row is a window of val
        start = np.flatnonzero(
            np.lib.stride_tricks.sliding_window_view(val, 16).__eq__(row.numpy()).all(1)
        )
        assert len(start) >= 1


def test_random_batches_resume_exactly(token_file):
    data_dir, _, _ = token_file
    a = RandomBatches(data_dir, "train", batch_size=2, block_size=4, seed=7)
    a.get_batch()
    state = a.state_dict()
    expected = [a.get_batch() for _ in range(3)]
    b = RandomBatches(data_dir, "train", batch_size=2, block_size=4, seed=999)
    b.load_state_dict(state)
    for x_ref, y_ref in expected:
        x, y = b()
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_random_batches_seeds_differ_and_unseeded_runs():
    data = np.arange(1000)
    x0, _ = RandomBatches(data, batch_size=8, block_size=4, seed=0).get_batch()
    x1, _ = RandomBatches(data, batch_size=8, block_size=4, seed=1).get_batch()
    assert not torch.equal(x0, x1)
    x, y = RandomBatches(torch.arange(1000), batch_size=8, block_size=4).get_batch()
    assert torch.equal(y, x + 1)


def test_random_batches_errors(tmp_path):
    with pytest.raises(GptlabError, match="has 8 tokens, too few for block_size 8"):
        RandomBatches(np.arange(8), batch_size=1, block_size=8)
    with pytest.raises(GptlabError, match="must both be >= 1"):
        RandomBatches(np.arange(8), batch_size=0, block_size=2)
    with pytest.raises(GptlabError, match="holds no meta.json: create the dataset with"):
        RandomBatches(tmp_path, "train", batch_size=1, block_size=2)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 60), max_length=st.integers(1, 10), stride=st.integers(1, 10)
)
def test_sliding_window_matches_seed_loop(n, max_length, stride):
    ids = list(range(100, 100 + n))
    expected = [
        (ids[i : i + max_length], ids[i + 1 : i + max_length + 1])
        for i in range(0, len(ids) - max_length, stride)
    ]
    dataset = SlidingWindowDataset(ids, max_length, stride)
    assert len(dataset) == len(expected)
    for (x, y), (x_ref, y_ref) in zip(dataset, expected, strict=False):
        assert x.tolist() == x_ref and y.tolist() == y_ref
        assert x.dtype == torch.int64


def test_dataloader_on_ids_batches_and_drops_last():
    loader = create_dataloader(np.arange(20), batch_size=3, max_length=4, stride=4, shuffle=False)
    batches = list(loader)
    assert len(batches) == 1  # 4 windows (starts 0,4,8,12), last partial batch dropped
    x, y = batches[0]
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert torch.equal(y, x + 1)


def test_dataloader_seeded_shuffle_is_reproducible():
    def order(seed):
        loader = create_dataloader(np.arange(100), batch_size=4, max_length=2, stride=2, seed=seed)
        return [x[:, 0].tolist() for x, _ in loader]

    assert order(3) == order(3)
    assert order(3) != order(4)
    starts = sum(order(3), [])  # 49 windows (0, 2, ..., 96); the last partial batch dropped
    assert len(starts) == len(set(starts)) == 48 and set(starts) < set(range(0, 97, 2))


def test_dataloader_golden_the_verdict(verdict_path):
    """Seed 002: the-verdict, GPT-2 BPE, batch_size=2, max_length=3, stride=1, no shuffle."""
    text = verdict_path.read_text(encoding="utf-8")
    loader = create_dataloader(text, batch_size=2, max_length=3, stride=1, shuffle=False)
    batches = iter(loader)
    x, y = next(batches)
    assert x.tolist() == [[40, 367, 2885], [367, 2885, 1464]]
    assert y.tolist() == [[367, 2885, 1464], [2885, 1464, 1807]]
    x, y = next(batches)
    assert x.tolist() == [[2885, 1464, 1807], [1464, 1807, 3619]]
    assert y.tolist() == [[1464, 1807, 3619], [1807, 3619, 402]]
    assert len(loader.dataset) == 5145 - 3  # the seed's 5,145 GPT-2 tokens


def test_random_batches_on_a_prepared_dataset(verdict_path, tmp_path):
    from gptlab.data import prepare

    prepare(verdict_path, tmp_path / "ds", tokenizer="gpt2")
    batches = RandomBatches(tmp_path / "ds", "val", batch_size=2, block_size=16, seed=0)
    x, y = batches.get_batch()
    assert x.shape == y.shape == (2, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < 50257


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_random_batches_on_cuda_equal_cpu():
    data = np.arange(500, dtype=np.uint16)
    x_cpu, y_cpu = RandomBatches(data, batch_size=4, block_size=8, seed=3).get_batch()
    x, y = RandomBatches(data, batch_size=4, block_size=8, device="cuda", seed=3).get_batch()
    assert x.is_cuda and torch.equal(x.cpu(), x_cpu) and torch.equal(y.cpu(), y_cpu)


def test_create_dataloader_with_too_little_text_says_why():
    from gptlab.data import create_dataloader

    with pytest.raises(GptlabError, match="2 tokens are too few for one window of max_length 256"):
        create_dataloader("hello world", max_length=256)
    with pytest.raises(GptlabError, match="gives 3 windows, fewer than batch_size 64"):
        create_dataloader(list(range(13)), batch_size=64, max_length=4, stride=4)
    loader = create_dataloader(list(range(13)), batch_size=64, max_length=4, stride=4,
                               drop_last=False)
    assert [x.shape[0] for x, _ in loader] == [3]
