"""Offline English text corpora shipped with the package, and readers for user-supplied prompt lists.

Packaged corpora (in `data/corpora/`, plain UTF-8; provenance, licence (all CC0) and intended use of each in
`data/corpora/PROVENANCE.md`):

- `contexts` (`.txt`, one item per line): user questions/requests used as base contexts c_1..c_K (a steering
  prompt is placed in their turn); split them into optimization and held-out sets with `split_contexts`.
- `natural_prompts` (`.tsv`, clustered): realistic instructions a user puts before a question (personas, styles,
  tones, languages, formats, topics, moods). The natural-prompt retrieval corpus and "natural" training examples
  for the realism classifier.
- `positive_prompts` (`.tsv`, clustered): natural instructions on themes absent from every other shipped corpus
  (no prompt there would be expected to produce a similar answer). The audit's positive controls only: never a
  retrieval corpus and never realism training data, so a positive cannot be solved by retrieving a paraphrase.
- `generic_prompts` (`.txt`): content-free prefixes ("I have a question.") whose mean shift defines the generic
  prompt-presence direction g; disjoint from `natural_prompts`.
- `sentences` (`.txt`): ordinary English sentences, extra natural text for the realism classifier.

Clustered files are tab-separated with the header line `cluster<TAB>prompt` and one row per prompt. `cluster` is
the id of the prompt's paraphrase family: prompts a reader would expect to produce similar answers share a
cluster (every pirate persona; every verse form; "answer in French" and "reply en français"). Split or exclude by
cluster, never by exact string. `load_corpus` returns only the prompt strings of any corpus; `load_clustered`
returns `ClusteredPrompt` rows of a clustered one; `read_clustered_file` reads a user's or a benchmark's `.tsv`
in the same format (e.g. `benchmarks/heldout_targets.tsv`, which is not shipped).

`read_prompt_file` reads a user's own prompt list (`.txt` one per line, `.jsonl` objects with a "prompt" field,
or a clustered `.tsv`). All readers split on "\n" only (so U+2028 and other Unicode line breaks stay inside an
item; "\r\n" works), strip surrounding whitespace from every item and skip blank lines.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from realize.data.errors import UserInputError
from realize.data.safe_text import is_encodable

__all__ = [
    "CLUSTERED_CORPORA", "CLUSTERED_HEADER", "CORPUS_NAMES", "ClusteredCorpusName", "ClusteredPrompt", "CorpusName",
    "corpus_filename", "load_clustered", "load_corpus", "read_clustered_file", "read_prompt_file", "split_contexts",
]

CorpusName = Literal["contexts", "natural_prompts", "positive_prompts", "generic_prompts", "sentences"]
CORPUS_NAMES: tuple[str, ...] = get_args(CorpusName)
ClusteredCorpusName = Literal["natural_prompts", "positive_prompts"]
CLUSTERED_CORPORA: tuple[str, ...] = get_args(ClusteredCorpusName)
CLUSTERED_HEADER = "cluster\tprompt"  # first line of every clustered .tsv


@dataclass(frozen=True)
class ClusteredPrompt:
    """One row of a clustered corpus: a prompt and the id of its paraphrase family."""

    prompt: str  # the instruction text, stripped
    cluster: str  # paraphrase-family id (a short slug); prompts expected to produce similar answers share it


def corpus_filename(name: CorpusName) -> str:
    """File name of packaged corpus `name` inside `data/corpora/` (`.tsv` for clustered corpora, else `.txt`)."""
    return f"{name}.tsv" if name in CLUSTERED_CORPORA else f"{name}.txt"


def _corpus_text(name: str) -> str:
    """The packaged file's text: via importlib.resources when `data` is installed, else next to this module."""
    filename = corpus_filename(name)  # type: ignore[arg-type]
    try:
        resource = importlib.resources.files("realize.data").joinpath("corpora", filename)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return (Path(__file__).parent / "corpora" / filename).read_text(encoding="utf-8")


def load_corpus(name: CorpusName) -> list[str]:
    """The items of packaged corpus `name` in file order: the stripped non-blank lines of a `.txt` corpus, the
    prompt column of a clustered `.tsv` corpus.

    Raises `UserInputError` for a name that is not one of `CORPUS_NAMES`.
    """
    if name not in CORPUS_NAMES:
        raise UserInputError(f"unknown corpus {name!r}; valid corpora: {', '.join(CORPUS_NAMES)}")
    if name in CLUSTERED_CORPORA:
        return [row.prompt for row in load_clustered(name)]  # type: ignore[arg-type]
    return [line.strip() for line in _corpus_text(name).split("\n") if line.strip()]


def load_clustered(name: ClusteredCorpusName) -> list[ClusteredPrompt]:
    """The rows of clustered packaged corpus `name` (one of `CLUSTERED_CORPORA`) in file order.

    Raises `UserInputError` for any other name (a plain corpus has no clusters).
    """
    if name not in CLUSTERED_CORPORA:
        why = f"{name!r} is a plain corpus without clusters" if name in CORPUS_NAMES else f"unknown corpus {name!r}"
        raise UserInputError(f"load_clustered: {why}; clustered corpora: {', '.join(CLUSTERED_CORPORA)}")
    return _parse_clustered(_corpus_text(name), f"data/corpora/{corpus_filename(name)}")


def split_contexts(contexts: Sequence[str], n_heldout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic shuffled split of `contexts` into `(optimization, held_out)` with `len(held_out) == n_heldout`.

    The same `contexts`, `n_heldout` and `seed` always give the same split (a private `random.Random(seed)`, the
    global RNG is untouched). Both parts keep the shuffled order. Raises `ValueError` unless
    `1 <= n_heldout <= len(contexts) - 1`, so that neither part is empty.
    """
    n = len(contexts)
    if not 1 <= n_heldout <= n - 1:
        raise ValueError(f"n_heldout must be between 1 and len(contexts) - 1 = {n - 1}, got {n_heldout}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = [contexts[i] for i in order[:n_heldout]]
    optimization = [contexts[i] for i in order[n_heldout:]]
    return optimization, held_out


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")  # strict UTF-8; a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{path}: not valid UTF-8 (byte offset {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
            "save the prompt file as UTF-8"
        ) from None
    nul = raw.find(b"\0")
    if nul >= 0:  # valid UTF-8, but text has no NUL: a binary file, or UTF-16 without a byte-order mark
        raise UserInputError(f"{path}: NUL byte at byte offset {nul}; a prompt file is UTF-8 text (not UTF-16 or "
                             "binary)")
    return text


def _jsonl_prompts(path: Path, text: str) -> list[str]:
    prompts: list[str] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise UserInputError(f'{path}, line {line_no}: expected a JSON object with a string field "prompt"')
        if not is_encodable(obj["prompt"]):
            raise UserInputError(f'{path}, line {line_no}: "prompt" holds a lone surrogate escape '
                                 "(\\ud800-\\udfff); expected valid Unicode text")
        prompt = obj["prompt"].strip()
        if not prompt:
            raise UserInputError(f'{path}, line {line_no}: "prompt" is empty')
        prompts.append(prompt)
    return prompts


def _parse_clustered(text: str, source: str) -> list[ClusteredPrompt]:
    """Rows of clustered-TSV `text`; errors name `source` and the 1-based line number."""
    rows: list[ClusteredPrompt] = []
    first_line: dict[str, int] = {}  # casefolded prompt -> line of its first occurrence
    header_seen = False
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split("\t")]
        if not header_seen:
            if "\t".join(cells).lower() != CLUSTERED_HEADER:
                raise UserInputError(f"{source}, line {line_no}: expected the header line 'cluster<TAB>prompt' "
                                     f"first, got {line.strip()[:60]!r}")
            header_seen = True
            continue
        if len(cells) != 2:
            raise UserInputError(f"{source}, line {line_no}: expected 2 tab-separated columns (cluster, prompt), "
                                 f"got {len(cells)}")
        cluster, prompt = cells
        for column, value in (("cluster", cluster), ("prompt", prompt)):
            if not value:
                raise UserInputError(f"{source}, line {line_no}: empty {column} cell")
        key = prompt.casefold()
        if key in first_line:
            raise UserInputError(f"{source}, line {line_no}: duplicate prompt {prompt!r} (also on line "
                                 f"{first_line[key]}; compared case-insensitively)")
        first_line[key] = line_no
        rows.append(ClusteredPrompt(prompt=prompt, cluster=cluster))
    if not header_seen:
        raise UserInputError(f"{source}: empty file; expected the header line 'cluster<TAB>prompt' and one "
                             "'cluster<TAB>prompt' row per prompt")
    if not rows:
        raise UserInputError(f"{source}: no prompts after the header line")
    return rows


def _read_text(p: Path, what: str) -> str:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    return _decode_utf8(p, raw)


def read_clustered_file(path: str | os.PathLike[str]) -> list[ClusteredPrompt]:
    """Rows of a user's or benchmark's clustered prompt file, in file order.

    Format (the packaged clustered corpora use it too): UTF-8, tab-separated, first non-blank line the header
    `cluster<TAB>prompt`, then one `cluster<TAB>prompt` row per prompt; cells are stripped, blank lines skipped.
    Raises `UserInputError` naming the file (and the line number where there is one) for a missing/unreadable
    file, non-UTF-8 bytes, a missing header, a row without exactly two columns, an empty cell, a duplicate prompt
    (case-insensitive), or no rows.
    """
    p = Path(path)
    return _parse_clustered(_read_text(p, "clustered prompt file"), str(p))


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a user-supplied file, in file order (duplicates kept).

    `.txt`: one prompt per line. `.jsonl`: one JSON object per line with a string field "prompt" (other fields
    ignored). `.tsv`: a clustered file (`read_clustered_file`), its prompt column. The file must be UTF-8; prompts
    are stripped and blank lines skipped. Raises `UserInputError` for a missing/unreadable file, an unknown
    extension, non-UTF-8 bytes (with the byte offset), a bad `.jsonl` or `.tsv` line (with its line number), or a
    file with no prompts.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".tsv"):
        raise UserInputError(f"{p}: unknown prompt file type {p.suffix!r}; expected .txt (one prompt per line), "
                             '.jsonl (objects with a "prompt" field) or .tsv (cluster<TAB>prompt rows)')
    text = _read_text(p, "prompt file")
    if suffix == ".tsv":
        return [row.prompt for row in _parse_clustered(text, str(p))]
    if suffix == ".txt":
        prompts = [line.strip() for line in text.split("\n") if line.strip()]
    else:
        prompts = _jsonl_prompts(p, text)
    if not prompts:
        raise UserInputError(f"{p}: no prompts found (the file is empty or has only blank lines)")
    return prompts
