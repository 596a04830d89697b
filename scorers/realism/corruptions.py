"""Near-natural corruptions of a natural prompt: one small edit that a fluent search leaves behind.

Each function takes a prompt and a private `random.Random` and returns the corrupted prompt, or None when the
prompt has nothing to corrupt (too few words, no function word...). One edit per prompt, so the result is still
mostly fluent; these are the hard negatives of the realism classifier:

- `word_swap_common`: one content word replaced by an unrelated common English word ("Explain it like a recently
  child.");
- `subword_glue`: a stray subword piece of the tokenizer glued onto a word, or a word replaced by two glued pieces
  ("Can you make it a runny yotained?");
- `word_merge`: two neighbouring words written as one ("Explain itlike I am five.");
- `function_drop`: one function word dropped ("Explain it like I five years old.");
- `function_dup`: one word written twice ("Explain it like like I am five.");
- `local_shuffle`: two neighbouring words swapped, not the first two ("Explain like it I am five.").

Train-only kinds (`train_only_corruptions`): other single-edit families, so that a classifier learns "one word is
off" from more than the six kinds it is tested on. Each names the tested kinds it is a relative of (`FAMILY_OF`),
so a stricter evaluation can leave the whole family out:

- `aux_content_drop`: one content word dropped (relative of `function_drop`);
- `aux_word_insert`: a function word or a common word inserted (of `function_dup`, `word_swap_common`);
- `aux_function_swap`: one function word replaced by another (of `word_swap_common`, `function_drop`);
- `aux_far_swap`: two words two apart swapped (of `local_shuffle`);
- `aux_word_split`: a word split by a space ("elect ric"; of `word_merge`, `subword_glue`);
- `aux_inflect`: a word's ending changed ("optioning", "slanged"; of `subword_glue`, `word_swap_common`).

Words are whitespace-separated items; the edits keep surrounding punctuation and the first letter's case.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from wordfreq import top_n_list

from realize.data.function_words import FUNCTION_WORDS

_CORE = re.compile(r"^([^A-Za-z']*)([A-Za-z][A-Za-z']*)([^A-Za-z']*)$")


@lru_cache(maxsize=1)
def common_words() -> tuple[str, ...]:
    """Common English content words: wordfreq's top 3,000, alphabetic, 3+ letters, not function words."""
    return tuple(w for w in top_n_list("en", 3000) if w.isalpha() and w.isascii() and len(w) >= 3
                 and w not in FUNCTION_WORDS)


def _parts(text: str) -> list[tuple[str, str, str] | None]:
    """Per whitespace item: (leading punctuation, word, trailing punctuation), or None when it is not a word."""
    out: list[tuple[str, str, str] | None] = []
    for item in text.split():
        m = _CORE.match(item)
        out.append((m.group(1), m.group(2), m.group(3)) if m else None)
    return out


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _join(items: Sequence[str]) -> str:
    return " ".join(items)


def _replace_word(text: str, rng: random.Random, *, function: bool, pool: Sequence[str]) -> str | None:
    """One word (a function word, or a content word of 3+ letters) replaced by another word of `pool`."""
    items, parts = text.split(), _parts(text)
    slots = [i for i, p in enumerate(parts) if p and (
        p[1].lower() in FUNCTION_WORDS if function else (p[1].lower() not in FUNCTION_WORDS and len(p[1]) >= 3))]
    if len(items) < 3 or not slots:
        return None
    i = rng.choice(slots)
    lead, word, trail = parts[i]  # type: ignore[misc]
    items[i] = lead + _match_case(rng.choice([w for w in pool if w != word.lower()]), word) + trail
    return _join(items)


def word_swap_common(text: str, rng: random.Random) -> str | None:
    return _replace_word(text, rng, function=False, pool=common_words()[:2000])


def subword_pieces(tokenizer) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(word-initial pieces, continuation pieces) of the tokenizer: alphabetic ASCII tokens of 2-6 letters, with /
    without a leading space when decoded."""
    initial, continuation = [], []
    special = set(tokenizer.all_special_ids)
    for i in range(len(tokenizer)):
        if i in special:
            continue
        s = tokenizer.decode([i])
        core = s[1:] if s.startswith(" ") else s
        if core.isascii() and core.isalpha() and core.islower() and 2 <= len(core) <= 6:
            (initial if s.startswith(" ") else continuation).append(core)
    return tuple(initial), tuple(continuation)


def subword_glue(text: str, rng: random.Random, pieces: tuple[Sequence[str], Sequence[str]]) -> str | None:
    items, parts = text.split(), _parts(text)
    slots = [i for i, p in enumerate(parts) if p]
    initial, continuation = pieces
    if len(items) < 3 or not slots or not initial or not continuation:
        return None
    i = rng.choice(slots)
    lead, word, trail = parts[i]  # type: ignore[misc]
    if rng.random() < 0.5:
        new = word + rng.choice(continuation)  # "sad" -> "sadellectual"
    else:
        new = _match_case(rng.choice(initial) + rng.choice(continuation), word)  # -> "yotained"
    items[i] = lead + new + trail
    out = _join(items)
    return out if out != text else None


def word_merge(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    pairs = [i for i in range(len(items) - 1) if parts[i] and parts[i + 1] and not parts[i][2] and not parts[i + 1][0]]
    if len(items) < 3 or not pairs:
        return None
    i = rng.choice(pairs)
    merged = items[i] + items[i + 1]
    return _join(items[:i] + [merged] + items[i + 2 :])


def _drop_word(text: str, rng: random.Random, *, function: bool) -> str | None:
    """One bare word (no punctuation attached) dropped: a function word, or a content word of 3+ letters."""
    items, parts = text.split(), _parts(text)
    slots = [i for i, p in enumerate(parts) if p and not p[0] and not p[2] and (
        p[1].lower() in FUNCTION_WORDS if function else (p[1].lower() not in FUNCTION_WORDS and len(p[1]) >= 3))]
    if len(items) < 4 or not slots:
        return None
    i = rng.choice(slots)
    rest = items[:i] + items[i + 1 :]
    if i == 0:
        rest[0] = _match_case(rest[0], items[0])
    return _join(rest)


def function_drop(text: str, rng: random.Random) -> str | None:
    return _drop_word(text, rng, function=True)


def function_dup(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    func = [i for i, p in enumerate(parts) if p and p[1].lower() in FUNCTION_WORDS and not p[2]]
    plain = [i for i, p in enumerate(parts) if p and not p[2]]
    slots = func or plain
    if len(items) < 3 or not slots:
        return None
    i = rng.choice(slots)
    return _join(items[: i + 1] + [parts[i][1].lower()] + items[i + 1 :])  # type: ignore[index]


def local_shuffle(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    # Not the first pair: "You are a pirate." -> "Are you a pirate." is a question, not a corruption.
    pairs = [i for i in range(1, len(items) - 1) if parts[i] and parts[i + 1] and not parts[i][2]
             and parts[i][1].lower() != parts[i + 1][1].lower()]
    if len(items) < 3 or not pairs:
        return None
    i = rng.choice(pairs)
    (la, a, ta), (lb, b, tb) = parts[i], parts[i + 1]  # type: ignore[misc]
    items[i], items[i + 1] = la + b + ta, lb + a + tb
    out = _join(items)
    return out if out != text else None


def near_natural_corruptions(tokenizer) -> dict[str, Callable[[str, random.Random], str | None]]:
    """The six corruption kinds by name (the subword pieces come from `tokenizer`)."""
    pieces = subword_pieces(tokenizer)
    return {
        "word_swap_common": word_swap_common,
        "subword_glue": lambda t, r: subword_glue(t, r, pieces),
        "word_merge": word_merge,
        "function_drop": function_drop,
        "function_dup": function_dup,
        "local_shuffle": local_shuffle,
    }


_FUNCTION_LIST = tuple(sorted(FUNCTION_WORDS))


def content_drop(text: str, rng: random.Random) -> str | None:
    return _drop_word(text, rng, function=False)


def word_insert(text: str, rng: random.Random) -> str | None:
    items = text.split()
    if len(items) < 3:
        return None
    i = rng.randrange(1, len(items))
    new = rng.choice(_FUNCTION_LIST) if rng.random() < 0.5 else rng.choice(common_words()[:2000])
    return _join(items[:i] + [new] + items[i:])


def function_swap(text: str, rng: random.Random) -> str | None:
    return _replace_word(text, rng, function=True, pool=_FUNCTION_LIST)


def far_swap(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    pairs = [i for i in range(1, len(items) - 2) if parts[i] and parts[i + 2] and not parts[i][2]
             and not parts[i + 2][2] and parts[i][1].lower() != parts[i + 2][1].lower()]
    if not pairs:
        return None
    i = rng.choice(pairs)
    (la, a, ta), (lb, b, tb) = parts[i], parts[i + 2]  # type: ignore[misc]
    items[i], items[i + 2] = la + b + ta, lb + a + tb
    return _join(items)


def word_split(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    slots = [i for i, p in enumerate(parts) if p and len(p[1]) >= 5 and p[1].isalpha()]
    if len(items) < 2 or not slots:
        return None
    i = rng.choice(slots)
    lead, word, trail = parts[i]  # type: ignore[misc]
    cut = rng.randrange(2, len(word) - 1)
    items[i] = lead + word[:cut] + " " + word[cut:] + trail
    return _join(items)


def inflect(text: str, rng: random.Random) -> str | None:
    items, parts = text.split(), _parts(text)
    slots = [i for i, p in enumerate(parts) if p and p[1].isalpha() and len(p[1]) >= 4
             and p[1].lower() not in FUNCTION_WORDS]
    if len(items) < 3 or not slots:
        return None
    i = rng.choice(slots)
    lead, word, trail = parts[i]  # type: ignore[misc]
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            new = word[: -len(suffix)] + rng.choice([x for x in ("ing", "ed", "s", "") if x != suffix])
            break
    else:
        new = word + rng.choice(("ing", "ed", "s"))
    items[i] = lead + new + trail
    return _join(items)


# Train-only kind -> (generator, the tested near-natural kinds it is a relative of: left out with them in the
# family test).
_TRAIN_ONLY: dict[str, tuple[Callable[[str, random.Random], str | None], tuple[str, ...]]] = {
    "aux_content_drop": (content_drop, ("function_drop",)),
    "aux_word_insert": (word_insert, ("function_dup", "word_swap_common")),
    "aux_function_swap": (function_swap, ("word_swap_common", "function_drop")),
    "aux_far_swap": (far_swap, ("local_shuffle",)),
    "aux_word_split": (word_split, ("word_merge", "subword_glue")),
    "aux_inflect": (inflect, ("subword_glue", "word_swap_common")),
}
FAMILY_OF: dict[str, tuple[str, ...]] = {name: related for name, (_, related) in _TRAIN_ONLY.items()}


def train_only_corruptions() -> dict[str, Callable[[str, random.Random], str | None]]:
    """The train-only kinds by name (see the module docstring); never evaluated as held-out generators."""
    return {name: generator for name, (generator, _) in _TRAIN_ONLY.items()}
