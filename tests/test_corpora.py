"""Packaged corpora (counts, hygiene, disjointness, paraphrase clusters, themes of the positive controls and the
benchmark targets), `split_contexts`, `read_prompt_file` and `read_clustered_file`."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from realize.data.corpora import (
    CLUSTERED_CORPORA, CLUSTERED_HEADER, CORPUS_NAMES, ClusteredPrompt, corpus_filename, load_clustered, load_corpus,
    read_clustered_file, read_prompt_file, split_contexts,
)
from realize.data.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / "data" / "corpora"
HELDOUT_TARGETS = ROOT / "benchmarks" / "heldout_targets.tsv"  # benchmark/slow-test targets, not shipped
EXPECTED_COUNTS = {  # name -> (min, max) number of items
    "contexts": (100, 200),
    "natural_prompts": (350, 600),
    "positive_prompts": (40, 60),
    "generic_prompts": (16, 40),
    "sentences": (250, 500),
}
WORD_RANGES = {"contexts": (5, 25), "natural_prompts": (3, 20), "positive_prompts": (3, 20), "sentences": (6, 30)}
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_count_in_range(name: str) -> None:
    lo, hi = EXPECTED_COUNTS[name]
    assert lo <= len(load_corpus(name)) <= hi


def _file_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")  # strict: raises on non-UTF-8
    assert not text.startswith("\ufeff") and "\r" not in text
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), "blank line"
    assert all(line == line.strip() for line in lines), "leading/trailing whitespace"
    return lines


def _tsv_rows(path: Path) -> list[tuple[str, str]]:
    """(cluster, prompt) rows of a clustered file, checking its format on the raw bytes."""
    lines = _file_lines(path)
    assert lines[0] == CLUSTERED_HEADER
    rows = [tuple(line.split("\t")) for line in lines[1:]]
    assert all(len(row) == 2 for row in rows), "a row without exactly one tab"
    assert all(cell == cell.strip() and cell for row in rows for cell in row), "empty or padded cell"
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_file_hygiene(name: str) -> None:
    path = CORPUS_DIR / corpus_filename(name)  # type: ignore[arg-type]
    assert path.suffix == (".tsv" if name in CLUSTERED_CORPORA else ".txt")
    items = [prompt for _, prompt in _tsv_rows(path)] if name in CLUSTERED_CORPORA else _file_lines(path)
    assert all(len(item) <= 300 for item in items)
    assert all("\t" not in item for item in items)
    assert len({item.casefold() for item in items}) == len(items), "duplicate (case-insensitive)"
    assert load_corpus(name) == items


@pytest.mark.parametrize("name", sorted(WORD_RANGES))
def test_corpus_item_lengths(name: str) -> None:
    lo, hi = WORD_RANGES[name]
    bad = [item for item in load_corpus(name) if not lo <= len(item.split()) <= hi]
    assert not bad


def test_natural_prompts_include_informal_ones() -> None:
    prompts = load_corpus("natural_prompts")
    assert sum(p == p.lower() for p in prompts) >= 20
    assert sum(p == p.lower() for p in load_corpus("positive_prompts")) >= 3


def _all_sets() -> dict[str, list[str]]:
    """Every shipped corpus and the benchmark targets."""
    return {**{name: load_corpus(name) for name in CORPUS_NAMES},
            "heldout_targets": [r.prompt for r in read_clustered_file(HELDOUT_TARGETS)]}


def test_corpora_are_pairwise_disjoint() -> None:
    sets = {name: {item.casefold() for item in items} for name, items in _all_sets().items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)


def test_provenance_lists_every_corpus() -> None:
    text = (CORPUS_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in CORPUS_NAMES:
        assert corpus_filename(name) in text  # type: ignore[arg-type]
    assert "benchmarks/heldout_targets.tsv" in text and "cluster" in text
    assert "CC0" in text


# --- paraphrase clusters -------------------------------------------------------------------------------------------

def _clustered_sets() -> dict[str, list[ClusteredPrompt]]:
    return {"natural_prompts": load_clustered("natural_prompts"),
            "positive_prompts": load_clustered("positive_prompts"),
            "heldout_targets": read_clustered_file(HELDOUT_TARGETS)}


def test_clustered_files_format_and_slugs() -> None:
    for path in (CORPUS_DIR / "natural_prompts.tsv", CORPUS_DIR / "positive_prompts.tsv", HELDOUT_TARGETS):
        rows = _tsv_rows(path)
        assert all(SLUG.fullmatch(cluster) and len(cluster) <= 40 for cluster, _ in rows), path
        assert [ClusteredPrompt(prompt=p, cluster=c) for c, p in rows] == read_clustered_file(path)
    assert 12 <= len(read_clustered_file(HELDOUT_TARGETS)) <= 24
    assert [r.prompt for r in load_clustered("natural_prompts")] == load_corpus("natural_prompts")


def test_every_natural_prompt_has_a_cluster_and_clusters_are_families() -> None:
    rows = load_clustered("natural_prompts")
    sizes = Counter(r.cluster for r in rows)
    assert not any(c.startswith(("pos-", "bench-")) for c in sizes)
    assert 20 <= len(sizes) <= 150, "clusters are paraphrase families: neither one per prompt nor a handful"
    assert sum(n > 1 for n in sizes.values()) >= 0.7 * len(sizes)


def test_positive_and_benchmark_prompts_each_have_their_own_cluster() -> None:
    for name, prefix in (("positive_prompts", "pos-"), ("heldout_targets", "bench-")):
        rows = _clustered_sets()[name]
        assert all(r.cluster.startswith(prefix) for r in rows), name
        assert len({r.cluster for r in rows}) == len(rows), f"{name}: two prompts share a cluster"


def test_clusters_are_disjoint_across_sets() -> None:
    clusters = {name: {r.cluster for r in rows} for name, rows in _clustered_sets().items()}
    names = list(clusters)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not clusters[a] & clusters[b], (a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("Write your answer as a song.", "Write your answer as an acrostic poem."),
    ("You are a pirate.", "You are a pirate captain who has lost his ship."),
    ("Reply in French.", "can u answer in spanish"),
    ("Explain it like I am five years old.", "explain like im 5"),
    ("pls keep it short", "Answer in one sentence."),
    ("Respond in a very formal tone.", "Be extremely polite."),
    ("Talk like a cowboy.", "Speak like a Texan rancher."),
    ("Give me a numbered list.", "just give me bullet points"),
])
def test_known_paraphrases_share_a_cluster(a: str, b: str) -> None:
    cluster = {r.prompt: r.cluster for r in load_clustered("natural_prompts")}
    assert cluster[a] == cluster[b]


# --- lexical guard: positives and benchmark targets have themes no other set has -----------------------------------
# Crude on purpose (the model check in benchmarks/check_positive_themes.py is the semantic one): content words with
# function and instruction words removed, plurals and verb endings stripped, and words of one paraphrase family
# (formats, languages, personas, audiences) mapped to one term, so "song" and "acrostic poem" collide.

STOPWORDS = frozenset("""
a an the and or but if so as of to in on at by for from with without into onto about over under up down out off
than then that this these those it its i im me my mine you youre your yours ur u we us our they them their he him
his she her be is are am was were been being do does did done doing have has had having will would can could
should shall may might must not no nor dont very really just only also even still too much many lots lot more most
less least some any all every each everything everyone something anything whatever whenever wherever whether how
what when where which who why while until before after again ever always never there here own such same other
another one way thing things bit kind sort kinda like please pls plz thx lol omg ngl ok okay yes yeah hey let lets
answer answers reply respond response write written writing say speak speaking talk tell explain explaining give
make use using keep put bring tie relate connect compare mention find take treat act pretend imagine roleplay sound
start begin end add include describe describing format present phrase lay question questions
""".split())
FAMILIES = {  # hand-written synonym families: a shared family counts as a shared theme
    "verse": "poem poetry poetic poet song sing singing haiku limerick sonnet rap acrostic rhyme rhyming verse "
             "couplet lyric lyrics ballad ode lullaby jingle seuss",
    "language": "french francais français spanish espanol español german deutsch italian portuguese japanese dutch "
                "latin swedish chinese mandarin cantonese korean russian arabic hindi greek polish turkish finnish "
                "norwegian danish welsh esperanto klingon",
    "sea": "pirate sailor ship captain ocean sea nautical arr mermaid boat voyage sail shipwreck",
    "child": "child children kid kids kiddo toddler kindergarten preschooler baby",
    "short": "short brief concise succinct gist tl;dr tldr terse",
    "list": "bullet bullets numbered list checklist step steps step-by-step table markdown headings",
    "data-format": "json yaml xml csv",
    "story": "story stories fairy tale parable fable bedtime adventure",
    "letter": "letter diary journal postcard",
    "news": "news headline headlines anchor reporter newspaper broadcast forecast announcer commentator",
    "olden": "medieval shakespeare shakespearean victorian thee thou knight old-fashioned",
    "detective": "detective sherlock noir spy gangster police",
    "space": "robot alien astronaut space mars martian",
    "cowboy": "cowboy texan rancher howdy",
    "pet": "cat cats kitten dog dogs puppy retriever",
    "food": "cooking cook chef recipe food pizza coffee",
    "sport": "sport sports football baseball soccer coach",
    "emoji": "emoji emojis",
    "game": "game games chess video",
}
FAMILY_OF = {word: name for name, words in FAMILIES.items() for word in words.split()}
EVERYDAY_CORPORA = ("contexts", "sentences", "generic_prompts")  # general English: a word common there is no theme


def _stem(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + repl
    return word


def content_terms(text: str) -> frozenset[str]:
    """Lowercased content words, stemmed, paraphrase families mapped to one "#family" term."""
    terms = set()
    for raw in re.findall(r"[a-zçñ0-9][a-zçñ0-9;'-]*", text.lower().replace("\u2019", "'")):
        word = raw.replace("'", "").strip("-;")
        stem = _stem(word)
        if not word or word in STOPWORDS or stem in STOPWORDS:
            continue
        family = FAMILY_OF.get(word) or FAMILY_OF.get(stem)
        terms.add(f"#{family}" if family else stem)
    return frozenset(terms)


def theme_conflicts(prompt: str, others: Mapping[str, Sequence[str]], themed: Iterable[str],
                    everyday: Counter[str]) -> list[str]:
    """Why `prompt` may share a theme with `others` (set name -> items); empty when it looks new.

    - Jaccard overlap of content terms >= 0.5 with any item of any set;
    - a shared paraphrase family or a shared rare word with any item of the `themed` sets (where prompts are
      instructions, so a shared word means a shared instruction). Rare: in at most 2 items of that set and at most
      1 item of everyday English (`everyday` counts items per term).
    """
    mine = content_terms(prompt)
    found = []
    for name, items in others.items():
        terms = [content_terms(item) for item in items]
        found += [f"{name}: Jaccard {len(mine & t) / len(mine | t):.2f} with {item!r}"
                  for item, t in zip(items, terms, strict=True) if mine | t and len(mine & t) >= 0.5 * len(mine | t)]
        if name not in themed:
            continue
        df = Counter(term for t in terms for term in t)
        for term in sorted(mine):
            if term.startswith("#") and df[term]:
                found.append(f"{name}: shares family {term}")
            elif 0 < df[term] <= 2 and everyday[term] <= 1:
                found.append(f"{name}: shares rare word {term!r}")
    return found


@pytest.fixture(scope="module")
def everyday() -> Counter[str]:
    return Counter(term for name in EVERYDAY_CORPORA for item in load_corpus(name) for term in content_terms(item))


def test_content_terms() -> None:
    assert content_terms("Write your answer as an acrostic poem.") == {"#verse"}
    assert content_terms("You're a pirate captain, arr!") == {"#sea"}
    assert content_terms("Relates everything to the stories of trains") == {"relat", "#story", "train"}


@pytest.mark.parametrize(("candidate", "reason"), [
    ("Write your answer as a song.", "family #verse"),  # the paraphrase retrieval solved (issue 11)
    ("Answer in Korean, please.", "family #language"),
    ("You are a grumpy sailor on a long voyage.", "family #sea"),
    ("Talk like a yoga teacher.", "rare word 'yoga'"),
    ("Explain it like I am six years old.", "Jaccard 0.50"),
])
def test_theme_guard_catches_paraphrases_of_natural_prompts(candidate: str, reason: str,
                                                            everyday: Counter[str]) -> None:
    found = theme_conflicts(candidate, {"natural_prompts": load_corpus("natural_prompts")}, {"natural_prompts"},
                            everyday)
    assert any(reason in f for f in found), found


def test_theme_guard_passes_a_new_theme(everyday: Counter[str]) -> None:
    assert not theme_conflicts("Tie everything back to riding a unicycle.",
                               {"natural_prompts": load_corpus("natural_prompts")}, {"natural_prompts"}, everyday)


@pytest.mark.parametrize("name", ["positive_prompts", "heldout_targets"])
def test_positive_and_benchmark_themes_are_absent_elsewhere(name: str, everyday: Counter[str]) -> None:
    sets = _all_sets()
    mine = sets.pop(name)
    if name == "positive_prompts":
        sets.pop("heldout_targets")  # checked the other way round: benchmarks must avoid the positives' themes
    themed = {"natural_prompts", "positive_prompts"}
    problems = {p: found for p in mine if (found := theme_conflicts(p, sets, themed, everyday))}
    assert not problems


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
    with pytest.raises(UserInputError, match=r"prompts\.csv.*\.txt.*\.jsonl.*\.tsv"):
        read_prompt_file(p)
    with pytest.raises(UserInputError, match="missing.txt"):
        read_prompt_file(tmp_path / "missing.txt")


# --- clustered files -----------------------------------------------------------------------------------------------

def test_read_clustered_file(tmp_path: Path) -> None:
    p = tmp_path / "mine.tsv"
    p.write_bytes("\ufeffCluster\tPrompt\r\n\nverse\t  Write it as a haiku. \nverse\tMake it rhyme!\n"
                  "pirate\tYou are a pirate.\n\n".encode())
    rows = read_clustered_file(p)
    assert rows == [ClusteredPrompt("Write it as a haiku.", "verse"), ClusteredPrompt("Make it rhyme!", "verse"),
                    ClusteredPrompt("You are a pirate.", "pirate")]
    assert read_prompt_file(p) == [r.prompt for r in rows]
    with pytest.raises(AttributeError):
        rows[0].cluster = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("verse\tWrite it as a haiku.\n", "line 1: expected the header line 'cluster<TAB>prompt'"),
        ("\n\nprompt\tcluster\nverse\tx\n", "line 3: expected the header line"),
        ("cluster\tprompt\nverse\tWrite it as a haiku.\tsonnet\n", "line 2: expected 2 tab-separated columns"),
        ("cluster\tprompt\nverse Write it as a haiku.\n", "line 2: expected 2 tab-separated columns (cluster, "
                                                          "prompt), got 1"),
        ("cluster\tprompt\n\t Write it as a haiku.\n", "line 2: empty cluster cell"),
        ("cluster\tprompt\nverse\t   \n", "line 2: empty prompt cell"),
        ("cluster\tprompt\na\tBe brief.\nb\tx\nc\tbe BRIEF.\n", "line 4: duplicate prompt 'be BRIEF.' (also on "
                                                                "line 2"),
        ("", "empty file; expected the header line"),
        ("\n  \n", "empty file"),
        ("cluster\tprompt\n\n", "no prompts after the header line"),
    ],
)
def test_read_clustered_file_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError, match="bad.tsv") as info:
        read_clustered_file(p)
    assert message in str(info.value)
    with pytest.raises(UserInputError, match="bad.tsv"):
        read_prompt_file(p)


def test_read_clustered_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="missing.tsv.*cannot read"):
        read_clustered_file(tmp_path / "missing.tsv")
    p = tmp_path / "latin1.tsv"
    p.write_bytes(b"cluster\tprompt\nx\tCaf\xe9\n")
    with pytest.raises(UserInputError, match="latin1.tsv.*not valid UTF-8"):
        read_clustered_file(p)


def test_load_clustered_rejects_plain_and_unknown_corpora() -> None:
    with pytest.raises(UserInputError, match="'contexts' is a plain corpus.*natural_prompts, positive_prompts"):
        load_clustered("contexts")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="unknown corpus 'nope'.*positive_prompts"):
        load_clustered("nope")  # type: ignore[arg-type]


def test_packaged_corpora_read_from_the_installed_package() -> None:
    """The packaged lookup (importlib.resources, what an installed wheel uses) finds every corpus file."""
    import importlib.resources

    for name in CORPUS_NAMES:
        filename = corpus_filename(name)  # type: ignore[arg-type]
        assert importlib.resources.files("realize.data").joinpath("corpora", filename).is_file(), name
