"""Offline English text corpora shipped with the package, and readers for user-supplied prompt lists.

Packaged corpora (`data/corpora/<name>.txt`, plain UTF-8, one item per line; provenance and licence in
`data/corpora/PROVENANCE.md`, all CC0):

- `contexts`: user questions/requests used as base contexts c_1..c_K (a steering prompt is placed in their turn);
  split them into optimization and held-out sets with `split_contexts`.
- `natural_prompts`: realistic instructions a user puts before a question (personas, styles, tones, languages,
  formats, topics, moods). Positive-control steers, the natural-prompt retrieval baseline, and "natural"
  training examples for the realism classifier.
- `generic_prompts`: content-free prefixes ("I have a question.") whose mean shift defines the generic
  prompt-presence direction g; disjoint from `natural_prompts`.
- `sentences`: ordinary English sentences, extra natural text for the realism classifier.

`read_prompt_file` reads a user's own prompt list (`.txt` one per line, or `.jsonl` objects with a "prompt"
field). Both readers split on "\n" only (so U+2028 and other Unicode line breaks stay inside an item; "\r\n" works),
strip surrounding whitespace from every item and skip blank items.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from realize.data.errors import UserInputError
from realize.data.safe_text import is_encodable

__all__ = ["CORPUS_NAMES", "CorpusName", "load_corpus", "read_prompt_file", "split_contexts"]

CorpusName = Literal["contexts", "natural_prompts", "generic_prompts", "sentences"]
CORPUS_NAMES: tuple[str, ...] = get_args(CorpusName)


def _corpus_text(name: str) -> str:
    """The packaged file's text: via importlib.resources when `data` is installed, else next to this module."""
    filename = f"{name}.txt"
    try:
        resource = importlib.resources.files("realize.data").joinpath("corpora", filename)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return (Path(__file__).parent / "corpora" / filename).read_text(encoding="utf-8")


def load_corpus(name: CorpusName) -> list[str]:
    """The lines of packaged corpus `name`, stripped, blank lines skipped, in file order.

    Raises `UserInputError` for a name that is not one of `CORPUS_NAMES`.
    """
    if name not in CORPUS_NAMES:
        raise UserInputError(f"unknown corpus {name!r}; valid corpora: {', '.join(CORPUS_NAMES)}")
    return [line.strip() for line in _corpus_text(name).split("\n") if line.strip()]


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


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a user-supplied file, in file order (duplicates kept).

    `.txt`: one prompt per line. `.jsonl`: one JSON object per line with a string field "prompt" (other fields
    ignored). The file must be UTF-8; prompts are stripped and blank lines skipped. Raises `UserInputError` for a
    missing/unreadable file, an unknown extension, non-UTF-8 bytes (with the byte offset), a bad `.jsonl` line
    (with its line number), or a file with no prompts.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserInputError(f"{p}: unknown prompt file type {p.suffix!r}; expected .txt (one prompt per line) "
                             'or .jsonl (objects with a "prompt" field)')
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{p}: cannot read prompt file ({exc.strerror or exc})") from None
    text = _decode_utf8(p, raw)
    if suffix == ".txt":
        prompts = [line.strip() for line in text.split("\n") if line.strip()]
    else:
        prompts = _jsonl_prompts(p, text)
    if not prompts:
        raise UserInputError(f"{p}: no prompts found (the file is empty or has only blank lines)")
    return prompts
