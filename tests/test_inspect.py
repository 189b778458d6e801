"""gptlab.inspect: the seeds' views, checked against hand computations and seed goldens."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.data.batching import RandomBatches
from gptlab.errors import GptlabError
from gptlab.inspect import (
    attention_maps,
    batch_table,
    compare_tokenizers,
    embedding_neighbours,
    format_attention_map,
    format_batch_table,
    format_compare_tokenizers,
    format_embedding_neighbours,
    format_next_token_table,
    format_token_table,
    format_window_table,
    next_token_table,
    position_matrix,
    token_table,
    window_table,
)
from gptlab.inspect.batches import tensor_repr
from gptlab.model import GPT, ModelConfig
from gptlab.model.positional import sinusoidal_table
from gptlab.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer, WordTokenizer
from gptlab.tokenizers.char import UnknownCharacterError
from gptlab.tokenizers.gpt2 import gpt2_encoding

POS_ENCODINGS = ["learned", "sinusoidal", "rope"]
TINY = dict(block_size=16, n_layer=2, n_head=2, n_embd=16)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def char_tok(tiny_text) -> CharTokenizer:
    return CharTokenizer.from_text(tiny_text)


@pytest.fixture(scope="module")
def shakespeare_ids(shakespeare_path) -> torch.Tensor:
    text = shakespeare_path.read_text(encoding="utf-8")
    return torch.from_numpy(CharTokenizer.from_text(text).encode_to_array(text).astype("int64"))


@pytest.fixture(scope="module")
def verdict(verdict_path) -> str:
    return verdict_path.read_text(encoding="utf-8")


def tiny_model(vocab_size: int = 23, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=vocab_size, **{**TINY, **overrides})).eval()
    with torch.no_grad():  # larger weights than GPT-2's init, so the maps are far from uniform
        for p in model.parameters():
            p.mul_(8.0) if p.dim() > 1 else p.add_(0.1 * torch.randn_like(p))
    return model


def twin(model: GPT, attention: str) -> GPT:
    other = GPT(ModelConfig(**{**model.config.to_dict(), "attention": attention})).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    return other


def random_ids(T: int, vocab: int = 23, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed(seed))


# --- attention_maps -------------------------------------------------------------------------


def rotate_by_hand(x: torch.Tensor) -> torch.Tensor:
    """RoPE's rotate-half on (T, hs), angles t·10000^(-2j/hs) written out (not the model's)."""
    T, hs = x.shape
    half = hs // 2
    j = torch.arange(half, dtype=torch.float64)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * 10000.0 ** (-2 * j / hs)  # (T, hs/2)
    cos, sin = angle.cos().float(), angle.sin().float()
    x1, x2 = x[:, :half], x[:, half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=1)


def maps_by_hand(reference: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The lecture's formula, head by head, from a reference model's own Head modules:
    wei = softmax(tril_mask(q @ k.T / sqrt(hs))), walking the residual stream by hand."""
    T = idx.shape[0]
    cfg = reference.config
    x = reference.transformer.wte(idx)  # (T, C)
    if cfg.pos_encoding == "learned":
        x = x + reference.transformer.wpe.weight[:T]
    elif cfg.pos_encoding == "sinusoidal":
        x = x + sinusoidal_table(cfg.block_size, cfg.n_embd)[:T]
    tril = torch.tril(torch.ones(T, T))
    layers = []
    for block in reference.transformer.h:
        a = block.ln_1(x)  # (T, C)
        heads = []
        for head in block.attn.heads:
            q, k = head.query(a), head.key(a)  # (T, hs) each
            if cfg.pos_encoding == "rope":
                q, k = rotate_by_hand(q), rotate_by_hand(k)
            wei = q @ k.T * head.head_size**-0.5  # (T, T)
            wei = wei.masked_fill(tril == 0, float("-inf"))
            heads.append(F.softmax(wei, dim=-1))
        layers.append(torch.stack(heads))
        x = block(x[None], reference.rope)[0]
    return torch.stack(layers)  # (n_layer, nh, T, T)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
@pytest.mark.parametrize("attention", ["fused", "reference"])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_attention_maps_equal_the_lectures_formula(pos_encoding, attention, qkv_bias):
    model = tiny_model(pos_encoding=pos_encoding, attention=attention, qkv_bias=qkv_bias)
    reference = model if attention == "reference" else twin(model, "reference")
    idx = random_ids(12)
    maps = attention_maps(model, idx)
    with torch.no_grad():
        expected = maps_by_hand(reference, idx)
    assert maps.weights.shape == (2, 2, 12, 12) and maps.weights.dtype == torch.float32
    torch.testing.assert_close(maps.weights, expected, atol=1e-6, rtol=0)
    assert maps.ids == tuple(idx.tolist()) and maps.dropped == 0 and not maps.truncated
    torch.testing.assert_close(maps.weights.sum(-1), torch.ones(2, 2, 12), atol=1e-6, rtol=0)
    assert torch.equal(maps.weights.triu(1), torch.zeros(2, 2, 12, 12))  # exactly 0
    assert maps.weights.std() > 0.05  # far from uniform: the test would catch a wrong q or k


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_fused_and_reference_maps_agree(pos_encoding):
    fused = tiny_model(pos_encoding=pos_encoding, qkv_bias=True)
    reference = twin(fused, "reference")
    idx = random_ids(16, seed=4)[None]  # (1, T) works like (T,)
    torch.testing.assert_close(
        attention_maps(fused, idx).weights, attention_maps(reference, idx).weights,
        atol=1e-6, rtol=0,
    )


@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_maps_are_the_weights_the_kernel_applies(qk_norm):
    """wei @ v of each head, projected by c_proj, is the fused attention's own output."""
    model = tiny_model(pos_encoding="rope", qkv_bias=True, qk_norm=qk_norm)
    idx = random_ids(10)
    maps = attention_maps(model, idx)
    block = model.transformer.h[0]
    with torch.no_grad():
        x = block.ln_1(model.transformer.wte(idx))  # (T, C) layer 0's attention input
        v = F.linear(x, block.attn.c_attn.weight[32:], block.attn.c_attn.bias[32:])  # (T, C)
        v = v.view(10, 2, 8).transpose(0, 1)  # (nh, T, hs)
        y = (maps.weights[0] @ v).transpose(0, 1).reshape(10, 16)  # (T, C)
        expected = block.attn(x[None], model.rope)[0]
    torch.testing.assert_close(block.attn.c_proj(y), expected, atol=1e-5, rtol=1e-5)


def test_attention_maps_keep_the_last_block_and_leave_the_model_alone():
    model = tiny_model().train()
    idx = random_ids(20)
    maps = attention_maps(model, idx)
    assert maps.dropped == 4 and maps.truncated and maps.ids == tuple(idx[4:].tolist())
    assert torch.equal(maps.weights, attention_maps(model, idx[4:]).weights)
    assert model.training  # mode restored
    assert all(not b.attn._forward_pre_hooks for b in model.transformer.h)  # hooks removed
    data = maps.to_dict()
    assert json.loads(json.dumps(data))["dropped"] == 4
    assert len(data["weights"]) == 2 and len(data["weights"][0][0]) == 16


def test_attention_maps_bad_input():
    model = tiny_model()
    for bad, words in [
        (torch.zeros(2, 5, dtype=torch.long), "one sequence"),
        (torch.zeros(0, dtype=torch.long), "no token ids"),
        ([3, 23], "outside the model's vocabulary"),
        (torch.zeros(4), "integer"),
    ]:
        with pytest.raises(GptlabError, match=words):
            attention_maps(model, bad)


def test_format_attention_map():
    maps = attention_maps(tiny_model(), random_ids(3))
    lines = format_attention_map(maps, layer=1, head=1)
    assert lines[0] == "[1.0000, 0.0000, 0.0000]" and len(lines) == 3
    with pytest.raises(GptlabError, match="pick layer 0..1"):
        format_attention_map(maps, layer=2)


# --- next_token_table -----------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["fused", "reference"])
def test_next_token_probabilities_are_the_forward_pass_softmax(char_tok, attention):
    model = tiny_model(char_tok.vocab_size, attention=attention)
    text = "Speak, speak."
    table = next_token_table(model, char_tok, text, k=3)
    ids = torch.tensor(char_tok.encode(text))
    with torch.no_grad():
        probs = F.softmax(model(ids[None])[0][0], dim=-1)  # (T, V)
    assert [r.id for r in table.rows] == ids.tolist() and len(table.rows) == 13
    for r in table.rows[:-1]:
        assert r.next_id == ids[r.position + 1]
        assert r.next_piece == text[r.position + 1] and r.piece == text[r.position]
        assert r.next_prob == pytest.approx(float(probs[r.position, r.next_id]), abs=1e-7)
        assert r.surprisal_bits == pytest.approx(-math.log2(r.next_prob), abs=1e-5)
    for r in table.rows:
        values, indices = probs[r.position].topk(3)
        assert [a.id for a in r.top] == indices.tolist()
        assert [a.prob for a in r.top] == pytest.approx(values.tolist(), abs=1e-7)
    last = table.rows[-1]
    assert last.next_id is None and last.next_prob is None and last.surprisal_bits is None


def test_mean_surprisal_is_the_loss_in_bits(char_tok, tiny_text):
    model = tiny_model(char_tok.vocab_size, pos_encoding="rope")
    text = tiny_text[:16]
    table = next_token_table(model, char_tok, text)
    ids = torch.tensor(char_tok.encode(text))
    with torch.no_grad():
        _, loss = model(ids[None, :-1], ids[None, 1:])
    assert table.mean_surprisal_bits == pytest.approx(loss.item() / math.log(2), abs=1e-5)
    assert json.loads(json.dumps(table.to_dict()))["rows"][0]["top"][0]["piece"]


def test_next_token_table_long_text_and_bad_input(char_tok, tiny_text):
    model = tiny_model(char_tok.vocab_size)
    table = next_token_table(model, char_tok, tiny_text[:40], k=2)
    assert len(table.rows) == 16 and table.dropped == 24 and table.truncated
    assert "".join(r.piece for r in table.rows) == tiny_text[24:40]
    lines = format_next_token_table(table)
    assert lines[0].startswith("(the first 24 tokens are cut")
    assert lines[-1].startswith("mean surprisal:") and len(lines) == 16 + 3
    with pytest.raises(GptlabError, match="text is empty"):
        next_token_table(model, char_tok, "")
    with pytest.raises(GptlabError, match="k must be a whole number >= 1"):
        next_token_table(model, char_tok, "speak", k=0)
    with pytest.raises(UnknownCharacterError, match="'Z' at position 1"):
        next_token_table(model, char_tok, "aZ")
    with pytest.raises(GptlabError, match="only 23"):
        next_token_table(tiny_model(23), char_tok, "speak")
    one = next_token_table(model, char_tok, "a")
    assert one.mean_surprisal_bits is None and len(one.rows) == 1


# --- token_table and compare_tokenizers ----------------------------------------------------


def test_char_token_table_golden(shakespeare_path):
    tok = CharTokenizer.from_text(shakespeare_path.read_text(encoding="utf-8"))
    table = token_table(tok, "hii there")
    assert list(table.ids) == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert [(r.start, r.end) for r in table.rows] == [(i, i + 1) for i in range(9)]
    assert [r.piece for r in table.rows] == list("hii there")
    assert not any(r.dropped_before or r.unknown for r in table.rows)
    assert format_token_table(table)[0] == "[46, 47, 47, 1, 58, 46, 43, 56, 43]"


def test_gpt2_token_table_golden():
    text = "Here is an unknown word: Alvazska"
    table = token_table(GPT2Tokenizer(), text)
    assert list(table.ids) == [4342, 318, 281, 6439, 1573, 25, 33414, 1031, 82, 4914]
    # tiktoken's own pieces: the seed prints only the ids
    expected = [gpt2_encoding().decode_single_token_bytes(i).decode() for i in table.ids]
    assert [r.piece for r in table.rows] == expected
    assert expected[-4:] == [" Alv", "az", "s", "ka"]
    assert [r.text for r in table.rows] == expected  # spans cover exactly those characters
    assert table.rows[-4].start == text.index(" Alv") and table.rows[-1].end == len(text)


def test_gpt2_spans_of_multibyte_characters():
    text = "héllo 日本<|endoftext|>"
    table = token_table(GPT2Tokenizer(), text)
    assert table.rows[-1].piece == "<|endoftext|>" and table.rows[-1].text == "<|endoftext|>"
    for r in table.rows:
        assert 0 <= r.start < r.end <= len(text)
        if "\ufffd" not in r.piece:
            assert r.text == r.piece
    assert table.rows[0].start == 0 and table.rows[-1].end == len(text)


def test_word_token_table_shows_unknowns_and_dropped_whitespace(verdict):
    tok = WordTokenizer.from_text(verdict)
    text = "Here is an unknown word: Alvazska"
    table = token_table(tok, text)
    unknown = [r.text for r in table.rows if r.unknown]
    assert "Alvazska" in unknown and all(r.piece == "<|unk|>" for r in table.rows if r.unknown)
    assert [r.dropped_before for r in table.rows][1:4] == [" ", " ", " "]
    assert "".join(r.dropped_before + r.text for r in table.rows) + table.dropped_after == text
    assert format_token_table(table)[-1].endswith("(' ' dropped before it; unknown: 'Alvazska')")


@PROPS
@given(st.text(alphabet="ab \n.,:<|>endoftx", max_size=40))
def test_word_spans_rebuild_the_text(text):
    tok = WordTokenizer(["a", "b", ".", ","])
    if not tok.encode(text):
        return
    table = token_table(tok, text)
    rebuilt = "".join(r.dropped_before + r.text for r in table.rows) + table.dropped_after
    assert rebuilt == text
    assert all(r.dropped_before.isspace() or not r.dropped_before for r in table.rows)


@PROPS
@given(st.text(min_size=1, max_size=30))
def test_gpt2_spans_are_ordered_and_cover_the_text(text):
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    table = token_table(GPT2Tokenizer(), text)
    assert table.rows[0].start == 0 and table.rows[-1].end == len(text)
    for a, b in zip(table.rows, table.rows[1:], strict=False):
        assert a.start <= b.start and b.start <= a.end  # no gap; a shared character at most
    assert table.dropped_after == "" and not any(r.dropped_before for r in table.rows)


def test_bpe_token_table(tiny_text):
    tok = BPETokenizer.train(tiny_text, vocab_size=300)
    text = "First Citizen: speak!"
    table = token_table(tok, text)
    assert "".join(r.text for r in table.rows) == text
    assert [r.text for r in table.rows] == [r.piece for r in table.rows]


def test_compare_tokenizers(tmp_path, tiny_text):
    text = "hii there"
    saved = CharTokenizer.from_text(tiny_text).save(tmp_path / "run" / "tokenizer.json")
    splits = compare_tokenizers(text, "char, gpt2,word")
    assert [(s.name, s.n_tokens) for s in splits] == [("char", 9), ("gpt2", 3), ("word", 2)]
    assert splits[1].chars_per_token == pytest.approx(3.0)
    assert [r.piece for r in splits[1].table.rows] == ["h", "ii", " there"]
    by_path = compare_tokenizers(text, [saved, tmp_path / "run", GPT2Tokenizer()])
    assert [s.kind for s in by_path] == ["char", "char", "gpt2"]
    assert by_path[0].name == str(saved)
    word = compare_tokenizers("hii there", ["word"], corpus="there")[0]
    assert [r.unknown for r in word.table.rows] == [True, False]
    line = "gpt2: 3 tokens, 3.00 chars/token | 'h' | 'ii' | ' there'"
    assert format_compare_tokenizers(splits)[1] == line
    json.dumps([s.to_dict() for s in splits])
    with pytest.raises(GptlabError, match="neither a tokenizer kind"):
        compare_tokenizers(text, ["chars"])
    with pytest.raises(GptlabError, match="no tokenizers"):
        compare_tokenizers(text, "")
    with pytest.raises(GptlabError, match="text is empty"):
        token_table(GPT2Tokenizer(), "")
    with pytest.raises(GptlabError, match="gives no tokens"):
        token_table(WordTokenizer(["a"]), "  \n")


# --- batch_table and window_table ------------------------------------------------------------

SEED_001_FIRST_LOOP = """\
when input is tensor([18]) the target: 47
when input is tensor([18, 47]) the target: 56
when input is tensor([18, 47, 56]) the target: 57
when input is tensor([18, 47, 56, 57]) the target: 58
when input is tensor([18, 47, 56, 57, 58]) the target: 1
when input is tensor([18, 47, 56, 57, 58,  1]) the target: 15
when input is tensor([18, 47, 56, 57, 58,  1, 15]) the target: 47
when input is tensor([18, 47, 56, 57, 58,  1, 15, 47]) the target: 58""".splitlines()


def test_batch_table_reproduces_seed_001s_lines(shakespeare_ids):
    train = shakespeare_ids[: int(0.9 * len(shakespeare_ids))]
    table = batch_table(train, block_size=8, offset=0)
    assert format_batch_table(table) == SEED_001_FIRST_LOOP
    assert table.x == (18, 47, 56, 57, 58, 1, 15, 47) and table.y[-1] == 58
    for r in table.rows:  # our tensor_repr is how torch prints the context
        assert tensor_repr(r.context) == str(torch.tensor(r.context))


def test_batch_table_draws_seed_001s_batch(shakespeare_ids):
    train = shakespeare_ids[:1_003_854]
    table = batch_table(train, block_size=8, batch_size=4, seed=1337)
    lines = format_batch_table(table, style="list")
    assert lines[0] == "when input is [24] the target: 43"
    assert lines[-1] == "when input is [24, 43, 58, 5, 57, 1, 46, 43] the target: 39"
    assert table.offset is None
    second = batch_table(RandomBatches(train, batch_size=4, block_size=8, seed=1337), row=1)
    assert format_batch_table(second, style="list")[:2] == [
        "when input is [44] the target: 53",
        "when input is [44, 53] the target: 56",
    ]


def test_batch_table_text_and_bad_input(char_tok, tiny_text):
    ids = char_tok.encode(tiny_text)
    table = batch_table(ids, block_size=4, offset=0, tokenizer=char_tok)
    assert format_batch_table(table, style="text")[1] == "when input is 'Fi' the target: 'r'"
    assert table.to_dict()["rows"][3] == {
        "t": 3, "context": ids[:4], "target": ids[4], "context_text": "Firs", "target_text": "t",
    }
    with pytest.raises(GptlabError, match="leaves no full block"):
        batch_table(ids, block_size=4, offset=len(ids) - 4)
    with pytest.raises(GptlabError, match="row 4 is not in the batch"):
        batch_table(ids, block_size=4, row=4)
    with pytest.raises(GptlabError, match="needs a batch_table made with a tokenizer"):
        format_batch_table(batch_table(ids, offset=0), style="text")
    with pytest.raises(GptlabError, match="differs from the sampler's"):
        batch_table(RandomBatches(ids, block_size=8), block_size=4)


def test_window_table_golden(verdict):
    table = window_table(verdict, GPT2Tokenizer(), max_length=3, stride=1, max_windows=4)
    assert [r.input_ids for r in table.rows[:2]] == [(40, 367, 2885), (367, 2885, 1464)]
    assert [r.target_ids for r in table.rows[:2]] == [(367, 2885, 1464), (2885, 1464, 1807)]
    assert [r.overlap for r in table.rows] == [0, 2, 2, 2] and table.n_windows == 5145 - 3
    lines = format_window_table(table)
    assert lines[0] == "i=0 I HAD ---->  HAD always"
    assert format_window_table(table, show_overlap=True)[1].endswith("(overlap 2)")
    assert window_table(verdict).rows[0].input_ids == (40, 367, 2885, 1464)  # GPT-2 default


@PROPS
@given(st.integers(1, 8), st.integers(1, 10))
def test_neighbouring_windows_share_max_length_minus_stride_tokens(max_length, stride):
    ids = list(range(100, 140))
    table = window_table(ids, max_length=max_length, stride=stride, max_windows=50)
    assert table.rows[0].input_text is None
    for prev, row in zip(table.rows, table.rows[1:], strict=False):
        shared = max(0, max_length - stride)
        assert row.overlap == shared and row.i == prev.i + stride
        assert row.input_ids[:shared] == prev.input_ids[stride:][:shared]
        assert row.target_ids == tuple(ids[row.i + 1 : row.i + max_length + 1])


def test_window_table_bad_input(char_tok):
    with pytest.raises(GptlabError, match="too few for one window"):
        window_table([1, 2, 3], max_length=3)
    with pytest.raises(GptlabError, match="max_windows must be"):
        window_table([1, 2, 3], max_length=1, max_windows=0)
    with pytest.raises(GptlabError, match="text is empty"):
        window_table("", char_tok)


# --- embeddings and positions --------------------------------------------------------------


def test_embedding_neighbours_by_hand(char_tok):
    model = tiny_model(char_tok.vocab_size)
    result = embedding_neighbours(model, char_tok, "e", k=4)
    table = model.transformer.wte.weight.detach()
    e = char_tok.stoi["e"]
    sims = [(F.cosine_similarity(table[e], table[i], dim=0).item(), i)
            for i in range(char_tok.vocab_size) if i != e]
    best = sorted(sims, reverse=True)[:4]
    assert result.id == e and result.piece == "e"
    assert [n.id for n in result.neighbours] == [i for _, i in best]
    similarities = [n.similarity for n in result.neighbours]
    assert similarities == pytest.approx([s for s, _ in best], abs=1e-6)
    assert embedding_neighbours(model, char_tok, e, k=4) == result
    everyone = embedding_neighbours(model, char_tok, e, k=999).neighbours
    assert len(everyone) == char_tok.vocab_size - 1
    assert format_embedding_neighbours(result)[0] == f"nearest to 'e' (id {e}):"
    json.dumps(result.to_dict())


def test_embedding_neighbours_bad_input(char_tok, verdict):
    model = tiny_model(char_tok.vocab_size)
    with pytest.raises(GptlabError, match="not a token of the char vocabulary"):
        embedding_neighbours(model, char_tok, "ea")
    with pytest.raises(GptlabError, match="k must be"):
        embedding_neighbours(model, char_tok, "a", k=0)
    with pytest.raises(GptlabError, match="outside the vocabulary"):
        embedding_neighbours(model, char_tok, 999)
    with pytest.raises(UnknownCharacterError):
        embedding_neighbours(model, char_tok, "Z")
    word = WordTokenizer.from_text(verdict)
    with pytest.raises(GptlabError, match=r"encodes to \['<\|unk\|>'\]"):
        embedding_neighbours(tiny_model(word.vocab_size), word, "Alvazska")


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_position_matrix(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding)
    result = position_matrix(model)
    width = 8 if pos_encoding == "rope" else 16
    assert result.pos_encoding == pos_encoding and result.vectors.shape == (16, width)
    if pos_encoding == "learned":
        assert torch.equal(result.vectors, model.transformer.wpe.weight)
    elif pos_encoding == "sinusoidal":
        assert torch.equal(result.vectors, sinusoidal_table(16, 16))
    else:  # rope: row t is [cos(t·θ_j)..., sin(t·θ_j)...]
        theta = 10000.0 ** (-torch.arange(4, dtype=torch.float64) * 2 / 8)
        expected = torch.cat([(3 * theta).cos(), (3 * theta).sin()]).float()
        torch.testing.assert_close(result.vectors[3], expected)
    v = result.vectors
    hand = F.cosine_similarity(v[:, None, :], v[None, :, :], dim=-1)  # (T, T)
    torch.testing.assert_close(result.similarity, hand, atol=1e-5, rtol=0)
    assert len(json.loads(json.dumps(result.to_dict()))["similarity"]) == 16
