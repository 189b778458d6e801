"""`gptlab inspect` and `gptlab tokenize` on a tiny trained run: tables, --json, PNGs, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from gptlab import checkpoint as ckpt
from gptlab.cli import main
from gptlab.inspect import (
    batch_table,
    embedding_neighbours,
    format_batch_table,
    format_embedding_neighbours,
    next_token_table,
)

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, make_dataset  # noqa: E402

PROMPT = "First Citizen:\nspeak"  # 20 characters: longer than block_size 16
SHORT = "All: speak"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_text) -> Path:
    root = tmp_path_factory.mktemp("inspected")
    data = make_dataset(tiny_text, root)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY_FLAGS,
                 "--max-iters", "10", "--eval-interval", "10", "--learning-rate", "1e-2"]) == 0
    return run


@pytest.fixture(scope="module")
def loaded(run_dir):
    return ckpt.load_run(run_dir)


def inspect(run_dir, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", str(run_dir), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("command", "concepts"),
    [
        ("inspect", ["seed 001's `wei`", "`tril` mask and softmax", "seed 001's softmax",
                     "surprisal in bits", "seed 001's `encode`", "when input is tensor([18])",
                     "seed 002's sliding windows", "seed 002's token embedding table",
                     "attention.png", "surprisal.png", "positions.png", "--prompt-file"]),
        ("tokenize", ["seed 001's character-level `encode`", "seed 002's word split",
                      "GPT-2's byte-level BPE", "--corpus"]),
    ],
)
def test_help_names_each_views_seed_concept(command, concepts, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for concept in concepts:
        assert concept in out, concept


def test_next_and_tokens_tables_print_the_librarys_numbers(run_dir, loaded, capsys):
    code, out, err = inspect(run_dir, capsys, "--prompt", SHORT, "--what", "next,tokens")
    assert code == 0 and err == ""
    lines = out.splitlines()
    table = next_token_table(loaded.model, loaded.tokenizer, SHORT, k=5)
    for row in table.rows[:-1]:
        line = next(x for x in lines if x.startswith(f"{row.position:>4}  {row.piece!r}"))
        assert f"{row.next_prob:.4f}" in line and f"{row.surprisal_bits:.2f}" in line
        assert f"{row.top[0].piece!r}:{row.top[0].prob:.2f}" in line
    assert f"mean surprisal: {table.mean_surprisal_bits:.4f} bits/token" in out
    ids = loaded.tokenizer.encode(SHORT)
    assert str(ids) in lines
    assert "== next ==" in out and "== tokens ==" in out and "== attention ==" not in out
    assert "\x1b[" not in out  # captured stdout is no terminal


def test_attention_batches_and_embeddings_views(run_dir, loaded, capsys):
    code, out, _ = inspect(run_dir, capsys, "--prompt", SHORT, "--what",
                           "attention,batches,embeddings", "--layer", "1", "--head", "1")
    assert code == 0
    assert "layer 1, head 1:" in out and "   ·" in out
    assert "  layer 0: h0 → " in out and "  layer 1: h0 → " in out
    data_dir = Path(loaded.config["data"]["dir"])
    seed_lines = format_batch_table(batch_table(data_dir, 8, offset=0))
    assert seed_lines[0].startswith("when input is tensor([")
    for line in seed_lines:
        assert line in out
    assert "i=0 All: ----> ll: \n" in out and "(overlap 3)" in out
    first = embedding_neighbours(loaded.model, loaded.tokenizer, "A", k=5)
    assert "\n".join(format_embedding_neighbours(first)) in out
    assert "position vectors (learned): 16 × 16" in out


def test_json_has_one_object_with_every_view(run_dir, loaded, capsys):
    code, out, _ = inspect(run_dir, capsys, "--prompt", SHORT, "--json", "--k", "3",
                           "--what", "attention,next,tokens,batches,embeddings")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"run", "prompt", "truncated", "views"}
    assert doc["prompt"] == SHORT and doc["truncated"] is False
    views = doc["views"]
    assert list(views) == ["attention", "next", "tokens", "batches", "embeddings"]
    T, config = len(SHORT), loaded.model.config
    weights = views["attention"]["weights"]
    assert [len(weights), len(weights[0]), len(weights[0][0]), len(weights[0][0][0])] == [
        config.n_layer, config.n_head, T, T]
    assert all(abs(sum(row) - 1) < 1e-5 for layer in weights for head in layer for row in head)
    assert views["attention"]["ids"] == loaded.tokenizer.encode(SHORT)
    table = next_token_table(loaded.model, loaded.tokenizer, SHORT, k=3)
    assert views["next"] == json.loads(json.dumps(table.to_dict()))
    assert len(views["next"]["rows"][0]["top"]) == 3
    assert views["tokens"]["ids"] == loaded.tokenizer.encode(SHORT)
    assert len(views["batches"]["batch"]["rows"]) == 8
    assert views["batches"]["windows"]["max_length"] == 4
    assert len(views["embeddings"]["neighbours"]) == 3  # 'A', 'l', ':'
    assert len(views["embeddings"]["positions"]["similarity"]) == config.block_size


def test_long_prompt_inspects_the_last_block_and_says_so(run_dir, capsys):
    code, out, err = inspect(run_dir, capsys, "--prompt", PROMPT, "--rows", "6")
    assert code == 0
    assert err.startswith("note: the text is 20 tokens and the model reads at most "
                          "block_size 16: inspecting the last 16 (the first 4 are cut)")
    assert "(the first 4 tokens are cut" in out
    assert "rows hidden (--rows to show more)" in out
    code, out, _ = inspect(run_dir, capsys, "--prompt", PROMPT, "--json", "--what", "attention")
    doc = json.loads(out)
    assert doc["truncated"] is True and doc["views"]["attention"]["dropped"] == 4
    assert len(doc["views"]["attention"]["weights"][0][0]) == 16


def test_colour_only_on_a_terminal_without_no_color(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    _, out, _ = inspect(run_dir, capsys, "--prompt", SHORT)
    assert "\x1b[" in out
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = inspect(run_dir, capsys, "--prompt", SHORT)
    assert "\x1b[" not in out
    monkeypatch.delenv("NO_COLOR")
    _, out, _ = inspect(run_dir, capsys, "--prompt", SHORT, "--json")
    assert "\x1b[" not in out


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100


def test_out_writes_one_png_per_view_asked(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "figures"
    code, out, _ = inspect(run_dir, capsys, "--prompt", PROMPT, "--out", str(out_dir),
                           "--what", "attention,next,embeddings,tokens")
    assert code == 0
    names = ["attention.png", "surprisal.png", "positions.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)  # no temporary files
    for name in names:
        assert str(out_dir / name) in out.splitlines()
        check_png(out_dir / name)
    code, out, err = inspect(run_dir, capsys, "--prompt", SHORT, "--out", str(tmp_path / "j"),
                             "--what", "next", "--json")
    assert code == 0 and json.loads(out)["views"]["next"]  # stdout holds the JSON alone
    assert str(tmp_path / "j" / "surprisal.png") in err
    assert [p.name for p in (tmp_path / "j").iterdir()] == ["surprisal.png"]


def test_long_prompt_figure_thins_its_labels_and_a_failed_write_leaves_nothing(
    tmp_path, monkeypatch
):
    pytest.importorskip("matplotlib")
    import torch
    from matplotlib.figure import Figure

    from gptlab.errors import GptlabError
    from gptlab.inspect import AttentionMaps
    from gptlab.inspect.figures import attention_figure

    T = 50
    scores = torch.randn(1, 2, T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -1e9)
    maps = AttentionMaps(weights=scores.softmax(-1), ids=tuple(range(T)), dropped=0)
    check_png(attention_figure(maps, [f"t{i}" for i in range(T)], tmp_path / "a.png"))
    with pytest.raises(GptlabError, match="49 labels for 50 tokens"):
        attention_figure(maps, ["x"] * 49, tmp_path / "b.png")

    def half_written(self, path, **kwargs):
        Path(path).write_bytes(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(OSError, match="disk full"):
        attention_figure(maps, None, tmp_path / "c.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", ""], "--prompt is empty: give the text to inspect"),
        ([], "no text to inspect: give --prompt TEXT or --prompt-file PATH"),
        (["--prompt", "All", "--what", "next,heads"],
         "--what 'heads' is not a view: pick from attention, next, tokens, batches, embeddings"),
        (["--prompt", "All", "--layer", "2"],
         "--layer 2 is out of range: this model has 2 layers, pick 0..1"),
        (["--prompt", "All", "--head", "5"],
         "--head 5 is out of range: this model has 2 heads, pick 0..1"),
        (["--prompt", "All", "--k", "0"], "--k 0 must be >= 1"),
        (["--prompt", "Ālł"], "character 'Ā' at position 0"),
    ],
)
def test_bad_input_is_one_line(run_dir, capsys, args, message):
    code, out, err = inspect(run_dir, capsys, *args)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_prompt_file_and_empty_file(run_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(SHORT, encoding="utf-8")
    code, out, _ = inspect(run_dir, capsys, "--prompt-file", str(prompt), "--json")
    assert code == 0 and json.loads(out)["prompt"] == SHORT
    prompt.write_text("", encoding="utf-8")
    code, _, err = inspect(run_dir, capsys, "--prompt-file", str(prompt))
    assert code == 1 and err == f"error: {prompt} is empty: give a file with text in it\n"


def test_run_without_tokenizer(run_dir, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "tokenizer.json").unlink()
    code, _, err = inspect(broken, capsys, "--prompt", "All")
    assert code == 1
    assert err == (f"error: {broken / 'tokenizer.json'} not found: inspect needs the run's "
                   "tokenizer; copy the dataset's tokenizer.json into the run folder\n")


def test_out_without_matplotlib_names_the_extra(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = inspect(run_dir, capsys, "--prompt", "All", "--out", str(tmp_path / "f"))
    assert code == 1 and out == ""
    assert "pip install 'gptlab[plot]'" in err and err.count("\n") == 1
    assert not (tmp_path / "f").exists()


def test_tokenize_char_golden_and_gpt2(shakespeare_path, capsys):
    assert main(["tokenize", "hii there", "--tokenizer", "char,gpt2",
                 "--corpus", str(shakespeare_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["char", "9", "tokens", "1.00", "chars/token"]
    assert lines[1].split() == ["gpt2", "3", "tokens", "3.00", "chars/token"]
    assert "  ids    [46, 47, 47, 1, 58, 46, 43, 56, 43]" in lines
    assert "  pieces 'h' | 'i' | 'i' | ' ' | 't' | 'h' | 'e' | 'r' | 'e'" in lines
    assert "  pieces 'h' | 'ii' | ' there'" in lines


def test_tokenize_reads_a_file_argument(tmp_path, capsys):
    text_path = tmp_path / "text.txt"
    text_path.write_text("to be or not to be", encoding="utf-8")
    assert main(["tokenize", str(text_path), "--tokenizer", "word,char", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"reading the text from the file {text_path} (18 characters)\n"
    doc = json.loads(captured.out)
    assert doc["text"] == "to be or not to be" and doc["file"] == str(text_path)
    word, char = doc["tokenizers"]
    assert word["n_tokens"] == 6 and char["n_tokens"] == 18
    assert [r["piece"] for r in word["table"]["rows"]] == "to be or not to be".split()


def test_tokenize_bad_tokenizer(capsys):
    assert main(["tokenize", "hi", "--tokenizer", "char,nope"]) == 1
    assert capsys.readouterr().err.startswith("error: nope is neither a tokenizer kind")
