"""Packaged corpora (counts, hygiene, disjointness), `split_contexts`, and `read_prompt_file`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realize.data.corpora import CORPUS_NAMES, load_corpus, read_prompt_file, split_contexts
from realize.data.errors import UserInputError

CORPUS_DIR = Path(__file__).resolve().parents[1] / "data" / "corpora"
EXPECTED_COUNTS = {  # name -> (min, max) number of items
    "contexts": (100, 200),
    "natural_prompts": (350, 600),
    "generic_prompts": (16, 40),
    "sentences": (250, 500),
}
WORD_RANGES = {"contexts": (5, 25), "natural_prompts": (3, 20), "sentences": (6, 30)}


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_count_in_range(name: str) -> None:
    lo, hi = EXPECTED_COUNTS[name]
    assert lo <= len(load_corpus(name)) <= hi


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_file_hygiene(name: str) -> None:
    raw = (CORPUS_DIR / f"{name}.txt").read_bytes()
    text = raw.decode("utf-8")  # strict: raises on non-UTF-8
    assert not text.startswith("\ufeff") and "\r" not in text
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), "blank line"
    assert all(line == line.strip() for line in lines), "leading/trailing whitespace"
    assert all(len(line) <= 300 for line in lines)
    assert len({line.casefold() for line in lines}) == len(lines), "duplicate (case-insensitive)"
    assert load_corpus(name) == lines


@pytest.mark.parametrize("name", sorted(WORD_RANGES))
def test_corpus_item_lengths(name: str) -> None:
    lo, hi = WORD_RANGES[name]
    bad = [item for item in load_corpus(name) if not lo <= len(item.split()) <= hi]
    assert not bad


def test_natural_prompts_include_informal_ones() -> None:
    prompts = load_corpus("natural_prompts")
    assert sum(p == p.lower() for p in prompts) >= 20


def test_corpora_are_pairwise_disjoint() -> None:
    sets = {name: {item.casefold() for item in load_corpus(name)} for name in CORPUS_NAMES}
    for i, a in enumerate(CORPUS_NAMES):
        for b in CORPUS_NAMES[i + 1:]:
            assert not sets[a] & sets[b], (a, b)


def test_provenance_lists_every_corpus() -> None:
    text = (CORPUS_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in CORPUS_NAMES:
        assert f"{name}.txt" in text
    assert "CC0" in text


def test_load_corpus_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UserInputError, match="natural_prompts") as info:
        load_corpus("nope")  # type: ignore[arg-type]
    assert "nope" in str(info.value)


def test_split_contexts_deterministic_disjoint_and_complete() -> None:
    contexts = load_corpus("contexts")
    opt, held = split_contexts(contexts, 20, seed=3)
    assert (opt, held) == split_contexts(contexts, 20, seed=3)
    assert len(held) == 20 and len(opt) == len(contexts) - 20
    assert not set(opt) & set(held)
    assert sorted(opt + held) == sorted(contexts)
    assert split_contexts(contexts, 20, seed=4) != (opt, held)
    assert held != contexts[:20], "split must be shuffled"


def test_split_contexts_does_not_touch_global_rng_or_input() -> None:
    import random

    contexts = [f"c{i}" for i in range(10)]
    before = list(contexts)
    state = random.getstate()
    split_contexts(contexts, 3)
    assert random.getstate() == state
    assert contexts == before


@pytest.mark.parametrize("n_heldout", [0, -1, 5, 6])
def test_split_contexts_rejects_bad_n_heldout(n_heldout: int) -> None:
    with pytest.raises(ValueError, match="n_heldout"):
        split_contexts(["a", "b", "c", "d", "e"], n_heldout)


def test_split_contexts_edges() -> None:
    opt, held = split_contexts(["a", "b"], 1)
    assert len(opt) == len(held) == 1 and {*opt, *held} == {"a", "b"}


def test_read_txt_skips_blank_lines_and_strips(tmp_path: Path) -> None:
    p = tmp_path / "prompts.txt"
    p.write_bytes("You are a pirate.\r\n\n   \n  Reply in French.  \nCafé au lait, s'il vous plaît\n".encode())
    assert read_prompt_file(p) == ["You are a pirate.", "Reply in French.", "Café au lait, s'il vous plaît"]
    assert read_prompt_file(str(p)) == read_prompt_file(p)


def test_read_txt_with_bom_and_unicode_line_separator(tmp_path: Path) -> None:
    p = tmp_path / "prompts.txt"
    p.write_bytes("\ufeffone\u2028still one\ntwo".encode())
    assert read_prompt_file(p) == ["one\u2028still one", "two"]


def test_read_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "prompts.JSONL"
    rows = [{"prompt": "Talk like a cowboy.", "source": "me"}, {"prompt": " Be brief. "}]
    p.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n   \n", encoding="utf-8")
    assert read_prompt_file(p) == ["Talk like a cowboy.", "Be brief."]


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "line 3: not valid JSON"),
        ('{"text": "no prompt field"}', 'line 3: expected a JSON object with a string field "prompt"'),
        ('{"prompt": 5}', "line 3: expected"),
        ('["a list"]', "line 3: expected"),
        ('{"prompt": "   "}', 'line 3: "prompt" is empty'),
    ],
)
def test_read_jsonl_bad_line_names_file_and_line(tmp_path: Path, second_line: str, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n\n' + second_line + "\n", encoding="utf-8")
    with pytest.raises(UserInputError, match="bad.jsonl") as info:
        read_prompt_file(p)
    assert message in str(info.value)


def test_read_non_utf8_names_file_and_offset(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("ok line\nCaf".encode() + b"\xe9 noir\n")
    with pytest.raises(UserInputError, match="latin1.txt") as info:
        read_prompt_file(p)
    assert "byte offset 11" in str(info.value) and "UTF-8" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\n\n   \n\t\n"])
@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_read_empty_file_is_an_error(tmp_path: Path, content: bytes, suffix: str) -> None:
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(content)
    with pytest.raises(UserInputError, match="no prompts"):
        read_prompt_file(p)


def test_read_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "prompts.csv"
    p.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"prompts\.csv.*\.txt.*\.jsonl"):
        read_prompt_file(p)
    with pytest.raises(UserInputError, match="missing.txt"):
        read_prompt_file(tmp_path / "missing.txt")
