"""Record inputs (JSON Lines, JSON, CSV/TSV, Parquet, Arrow, compressed): each record is one
document, with exactly the ids of the same documents written as one .txt file each."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib
import json
import lzma
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.cli import main
from gptlab.data import load_meta, load_split, prepare
from gptlab.errors import GptlabError
from gptlab.tokenizers import load_tokenizer

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")
encode_module = importlib.import_module("gptlab.data.encode")

DOCS = [
    "Once upon a time there was a cat.\nThe end.",
    "Café naïve — “quotes”\r\nwindows line\n",
    "  indented\n\n\nthree newlines   ",
    "<|endoftext|> literal and 12345",
]


def all_ids(data_dir) -> list[int]:
    return np.concatenate([load_split(data_dir, "train"), load_split(data_dir, "val")]).tolist()


def txt_reference(tmp_path, docs, tokenizer, name="ref"):
    """prepare over the same documents written as one .txt file each, in order."""
    folder = tmp_path / f"{name}-txt"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:05d}.txt").write_bytes(doc.encode("utf-8"))
    prepare(folder, tmp_path / f"{name}-ds", tokenizer=tokenizer, split=0.5)
    return all_ids(tmp_path / f"{name}-ds")


def write_records(path, docs, fmt, field="text"):
    """`docs` as a record file of format `fmt` at `path`."""
    rows = [{field: d, "id": i} for i, d in enumerate(docs)]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow([field, "id"])
            writer.writerows([r[field], r["id"]] for r in rows)
    elif fmt == "parquet":
        pq.write_table(pa.table({field: docs, "id": list(range(len(docs)))}), path,
                       row_group_size=2)
    elif fmt == "arrow":
        table = pa.table({field: docs})
        with pa.ipc.new_stream(str(path), table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    return path


COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zst": lambda data: zstandard.ZstdCompressor().compress(data)}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet", "arrow"])
@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_records_give_the_ids_of_one_txt_file_each(tmp_path, fmt, tokenizer):
    source = write_records(tmp_path / f"in.{fmt}", DOCS, fmt)
    meta = prepare(source, tmp_path / "ds", tokenizer=tokenizer, split=0.5)
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, DOCS, tokenizer)
    assert meta["input_format"] == fmt and meta["text_field"] == "text"
    assert (meta["documents"], meta["skipped_records"], meta["empty_records"]) == (4, 0, 0)
    assert load_meta(tmp_path / "ds") == meta


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz", "zst"])
def test_compressed_inputs_are_detected_by_content(tmp_path, suffix):
    plain = write_records(tmp_path / "plain.jsonl", DOCS, "jsonl")
    named = tmp_path / f"in.jsonl.{suffix}"
    named.write_bytes(COMPRESS[suffix](plain.read_bytes()))
    prepare(named, tmp_path / "a", tokenizer="gpt2", split=0.5)
    assert all_ids(tmp_path / "a") == txt_reference(tmp_path, DOCS, "gpt2")
    unnamed = tmp_path / "book.txt"  # a compressed .txt under a plain name
    unnamed.write_bytes(COMPRESS[suffix]("".join(DOCS).encode()))
    prepare(unnamed, tmp_path / "b", tokenizer="gpt2", split=0.5)
    assert all_ids(tmp_path / "b") == txt_reference(tmp_path, ["".join(DOCS)], "gpt2", "one")


def test_nested_field_empty_and_bad_records(tmp_path):
    first, second = "the first story, told", "and the second one, told"
    lines = [{"meta": {"body": first}}, {"meta": {"body": ""}}, {"meta": {"body": 3}},
             {"other": 1}, {"meta": {"body": second}}]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    with pytest.raises(GptlabError, match=r"line 3: field 'meta.body' is a number"):
        prepare(source, tmp_path / "ds", tokenizer="gpt2", text_field="meta.body")
    assert not (tmp_path / "ds").exists()
    meta = prepare(source, tmp_path / "ds", tokenizer="gpt2", text_field="meta.body",
                   skip_bad_records=True, split=0.5)
    assert (meta["documents"], meta["empty_records"], meta["skipped_records"]) == (2, 1, 2)
    assert meta["options"]["text_field"] == "meta.body"
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, [first, second], "gpt2")
    with pytest.raises(GptlabError, match="holds a different dataset"):  # the field counts
        prepare(source, tmp_path / "ds", tokenizer="gpt2", text_field="other",
                skip_bad_records=True, split=0.5)


def test_saved_dataset_folder_reads_its_arrow_shards(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    write_records(folder / "data-00000-of-00002.arrow", DOCS[:2], "arrow")
    write_records(folder / "data-00001-of-00002.arrow", DOCS[2:], "arrow")
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [
        {"filename": "data-00000-of-00002.arrow"}, {"filename": "data-00001-of-00002.arrow"}
    ]}))
    meta = prepare(folder, tmp_path / "ds", tokenizer="char", split=0.5)
    assert meta["documents"] == 4 and meta["source_files"] == 2
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, DOCS, "char")


def test_gpt2_worker_pool_packs_records_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(encode_module, "_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(encode_module, "_ENCODE_BLOCK", 64)
    docs = [f"Story {i}: " + "word " * (i % 17) + "\nend." for i in range(300)]
    source = write_records(tmp_path / "in.jsonl", docs, "jsonl")
    prepare(source, tmp_path / "ds", tokenizer="gpt2", workers=2, split=0.5)
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, docs, "gpt2")


def test_gpt2_workers_parse_jsonl_blocks_as_this_process_does(tmp_path, monkeypatch):
    """Large JSON Lines inputs are parsed in the encoding workers, a block of lines each:
    the ids, the counts and the first skipped places equal one process reading them."""
    monkeypatch.setattr(encode_module, "_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(encode_module, "_ENCODE_BLOCK", 256)
    lines = []
    for i in range(400):
        if i % 37 == 5:
            lines.append(json.dumps({"text": ""}))  # empty: counted, no EOT
        elif i % 53 == 7:
            lines.append(json.dumps({"text": i}))  # bad: skipped with its line
        elif i % 61 == 3:
            lines.append("")  # blank line
        elif i == 200:
            lines.append(json.dumps({"text": "a long record " * 100}))  # past a block
        else:
            lines.append(json.dumps({"text": f"  Story {i}:\n" + "word " * (i % 13)}))
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(lines[:250]) + "\n")
    second = tmp_path / "b.jsonl.gz"
    second.write_bytes(gzip.compress(("\n".join(lines[250:])).encode()))  # no final newline
    metas = {}
    for workers in (1, 2):
        metas[workers] = prepare([first, second], tmp_path / f"w{workers}", tokenizer="gpt2",
                                 workers=workers, split=0.5, skip_bad_records=True,
                                 clean=["strip"])
    assert all_ids(tmp_path / "w1") == all_ids(tmp_path / "w2")
    keys = ("documents", "empty_records", "skipped_records")
    assert [metas[2][k] for k in keys] == [metas[1][k] for k in keys] == [374, 11, 8]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:300] + ["{oops"] + lines[:50]) + "\n")
    with pytest.raises(GptlabError, match=r"bad\.jsonl line 301: malformed JSON"):
        prepare(bad, tmp_path / "bad", tokenizer="gpt2", workers=2, skip_bad_records=True)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_gpt2_workers_read_columnar_blocks_as_this_process_does(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(encode_module, "_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(encode_module, "_ENCODE_BLOCK", 200)
    docs = [f"Story {i}: " + "word " * (i % 17) if i % 29 else "" for i in range(300)]
    source = write_records(tmp_path / f"in.{fmt}", docs, fmt)
    one = prepare(source, tmp_path / "w1", tokenizer="gpt2", workers=1, split=0.5)
    two = prepare(source, tmp_path / "w2", tokenizer="gpt2", workers=2, split=0.5)
    assert all_ids(tmp_path / "w2") == all_ids(tmp_path / "w1")
    assert all_ids(tmp_path / "w2") == txt_reference(tmp_path, [d for d in docs if d], "gpt2")
    assert (two["documents"], two["empty_records"]) == (one["documents"], 11) == (289, 11)


ODD_LINES = [
    b'{"text": "dup", "text": "last wins"}', b'{"text": "lone \\ud800 surrogate"}',
    b'{"text": "nan", "x": NaN}', b'{"text": "big", "n": 123456789012345678901234567890}',
    b'\xef\xbb\xbf{"text": "bom"}', b'  {"text": "spaces"}  \r', b"", b"   ",
    b'"a bare string"', b'{"text": "\\u00e9\\n\\t\\"q\\""}', b'{"text": "caf\xc3\xa9"}',
]


def test_orjson_reads_lines_as_the_standard_library_does(monkeypatch):
    formats = importlib.import_module("gptlab.data.formats")
    fast = list(formats.jsonl_line_records("in.jsonl", ODD_LINES, 1))
    monkeypatch.setattr(formats, "fast_json_loads", formats._no_fast_json)
    monkeypatch.setattr(formats, "FAST_JSON_ERRORS", (ValueError,))
    slow = list(formats.jsonl_line_records("in.jsonl", ODD_LINES, 1))
    # the same records (repr: NaN != NaN), but for a number past 64 bits, which orjson
    # reads as a float: only the text field is used, and a number there is an error either way
    assert repr(fast).replace("1.2345678901234568e+29", "123456789012345678901234567890") == (
        repr(slow))
    assert [n for _, n in fast] == [1, 2, 3, 4, 5, 6, 9, 10, 11]
    assert fast[0][0] == {"text": "last wins"}
    for bad in (b'{"text": oops}', b'{"text": "a"} extra', b'\xff{"text": 1}'):
        with pytest.raises(GptlabError, match="line 7: malformed JSON"):
            list(formats.jsonl_line_records("in.jsonl", [bad], 7))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_bulk_block_path_drops_byte_order_marks_and_counts_empties(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(encode_module, "_PROCESS_MIN_BYTES", 0)
    docs = ["\ufeffstarts with a mark", "", "plain \ufeff inside", "", "last one"]
    source = write_records(tmp_path / f"in.{fmt}", docs, fmt)
    meta = prepare(source, tmp_path / "ds", tokenizer="gpt2", workers=2, split=0.5)
    kept = ["starts with a mark", "plain \ufeff inside", "last one"]
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, kept, "gpt2")
    assert (meta["documents"], meta["empty_records"]) == (3, 2)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff"),
                max_size=40)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(_TEXT.filter(bool), min_size=2, max_size=6),
       fmt=st.sampled_from(["jsonl", "parquet"]), tokenizer=st.sampled_from(["char", "gpt2"]))
def test_random_records_match_txt_files(tmp_path_factory, docs, fmt, tokenizer):
    tmp_path = tmp_path_factory.mktemp("prop")
    # the last document makes both splits hold >= 2 tokens ("000" is one gpt2 token)
    docs = [d * 3 for d in docs] + ["and a last document of several words"]
    source = write_records(tmp_path / f"in.{fmt}", docs, fmt)
    prepare(source, tmp_path / "ds", tokenizer=tokenizer, split=0.5)
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, docs, tokenizer)


BAD_INPUTS = {
    "malformed json": ("in.jsonl", b'{"text": "ok"}\n{"text": oops}\n',
                       r"in\.jsonl line 2: malformed JSON"),
    "missing field": ("in.jsonl", b'{"body": "x", "id": 1}\n',
                      r"line 1 has no field 'text' \(the record holds 'body', 'id'\)"),
    "null field": ("in.jsonl", b'{"text": null}\n', r"field 'text' is a null, not a string"),
    "list field": ("in.json", b'[{"text": ["a"]}]', r"record 0: field 'text' is a list"),
    "bad json list": ("in.json", b'[{"text": "a"} {"text": "b"}]', r"record 1: malformed JSON"),
    "cut json list": ("in.json", b'[{"text": "a"}, {"te', r"malformed JSON"),
    "ragged csv": ("in.csv", b"text,id\nhello,1\nbad,2,3\n", r"in\.csv line 3: 3 fields"),
    "truncated gz": ("in.jsonl.gz", gzip.compress(b'{"text": "hello"}\n' * 500)[:-30],
                     r"truncated or damaged gzip file"),
    "truncated zst": ("in.txt.zst", None, r"truncated zstd file"),
    "compressed binary": ("in.txt.gz", gzip.compress(b"\x00\x01\x02binary" * 100),
                          r"in\.txt\.gz looks like a binary file"),
    "not json": ("in.jsonl", b"plain text\n", r"does not hold JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, capsys):
    name, data, message = BAD_INPUTS[case]
    if data is None:
        data = zstandard.ZstdCompressor().compress(b"hello world\n" * 1000)[:-4]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(GptlabError, match=message):
        prepare(tmp_path / name, tmp_path / "ds", tokenizer="gpt2")
    assert not (tmp_path / "ds").exists()
    assert main(["prepare", "--input", str(tmp_path / name), "--out", str(tmp_path / "ds"),
                 "--tokenizer", "char", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_parquet_without_the_column_lists_the_columns(tmp_path):
    pq.write_table(pa.table({"content": ["a"], "url": ["u"]}), tmp_path / "in.parquet")
    with pytest.raises(GptlabError, match=r"no column 'text' \(its columns: content, url\)"):
        prepare(tmp_path / "in.parquet", tmp_path / "ds", tokenizer="gpt2")


def test_mixed_text_and_record_files_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("plain text\n")
    write_records(tmp_path / "b.jsonl", DOCS, "jsonl")
    with pytest.raises(GptlabError, match=r"mixes text files .* with jsonl files"):
        prepare(tmp_path, tmp_path / "ds")
    meta = prepare(tmp_path, tmp_path / "ds", input_format="txt", split=0.5)
    assert meta["input_format"] == "txt" and meta["documents"] == 2


def test_format_override_and_missing_pyarrow(tmp_path, monkeypatch):
    source = write_records(tmp_path / "export.data", DOCS, "jsonl")
    meta = prepare(source, tmp_path / "ds", tokenizer="gpt2", input_format="jsonl", split=0.5)
    assert meta["options"]["input_format"] == "jsonl" and meta["documents"] == 4
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    write_records(tmp_path / "in.parquet", DOCS, "parquet")
    with pytest.raises(GptlabError, match=r"needs pyarrow.*pip install 'gptlab\[data\]'"):
        prepare(tmp_path / "in.parquet", tmp_path / "ds2", tokenizer="gpt2")


def test_cli_flags(tmp_path, capsys):
    source = write_records(tmp_path / "in.csv", DOCS, "csv", field="story")
    argv = ["prepare", "--input", str(source), "--out", str(tmp_path / "ds"), "--tokenizer",
            "gpt2", "--text-field", "story", "--split", "0.5", "--no-progress"]
    assert main(argv) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["input_format"] == "csv" and meta["text_field"] == "story"
    assert all_ids(tmp_path / "ds") == txt_reference(tmp_path, DOCS, "gpt2")


def test_stats_and_bpe_read_records(tmp_path, capsys):
    source = write_records(tmp_path / "in.jsonl.gz", DOCS, "jsonl")
    source.write_bytes(gzip.compress(source.read_bytes()))
    assert main(["stats", str(source), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["characters"] == len("".join(DOCS))
    assert main(["stats", str(source), "--tokenizer", "bpe", "--vocab-size", "280",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0
    prepare(source, tmp_path / "ds", tokenizer="bpe", vocab_size=280, split=0.5)
    tok = load_tokenizer(tmp_path / "ds/tokenizer.json")
    assert tok.decode(all_ids(tmp_path / "ds")) == "<|endoftext|>".join(DOCS)


def test_packed_texts_join_pieces_without_cutting_one():
    from gptlab.data.documents import packed_texts

    pieces = ["ab", None, "c", "de", None, "fgh"]
    assert list(packed_texts(pieces, "|", 3)) == ["ab|", "cde", "|fgh"]
    assert list(packed_texts(["a", None, "b"], "<|endoftext|>", 1 << 20)) == [
        "a<|endoftext|>b"
    ]
    assert list(packed_texts([], "", 4)) == []


# Fragments that stress the claim packing rests on: a separator's neighbours (parts of the
# EOT literal, the literal itself, trailing whitespace GPT-2's regex treats specially,
# contractions, digits) and lone surrogates a JSON escape can produce.
_FRAGMENTS = st.sampled_from(["<|endoftext|>", "<|endoftext", "|>", "<|", " ", "  ", "\n",
                              " \n", "\r\n", "'s", "'ll", "12", "\ud83d", "\ude00", "é", "a"])
_DOC = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=8).map("".join)


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(_DOC, min_size=1, max_size=8), size=st.integers(1, 40))
def test_a_pack_encodes_to_its_documents_ids_joined_by_eot(docs, size):
    """gpt2: encoding documents joined by the `<|endoftext|>` literal, in packs of any size,
    gives each document's own ids with 50256 between them (tiktoken cuts at allowed
    specials before its regex runs); char: the concatenation's ids."""
    from gptlab.data.documents import packed_texts
    from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

    pieces = [p for i, doc in enumerate(docs) for p in ([None] if i else []) + [doc]]
    gpt2 = GPT2Tokenizer()
    expected = [i for n, doc in enumerate(docs)
                for i in ([gpt2.eot_id] if n else []) + gpt2.encode_to_array(doc).tolist()]
    packs = packed_texts(pieces, "<|endoftext|>", size)
    assert [i for pack in packs for i in gpt2.encode_to_array(pack).tolist()] == expected
    char = CharTokenizer(sorted(set("".join(docs)) | {"x"}))
    packs = packed_texts([d for d in docs if d], "", size)
    assert [i for pack in packs for i in char.encode_to_array(pack).tolist()] == [
        i for doc in docs for i in char.encode_to_array(doc).tolist()
    ]
