"""Training and test set for the realism classifier, P(natural | prompt), as a `datasets.Dataset`.

Columns: `text`, `label` (1 natural, 0 unnatural), `source`, `split` ("train" / "test").

Naturals (label 1): the packaged corpora `natural_prompts`, `contexts`, `sentences`, `generic_prompts` (CC0, see
`data/corpora/PROVENANCE.md`), each split at random into train/test.

Unnaturals (label 0):
- `random_tokens`: uniform random sequences of allowed tokens (printable ASCII, non-special), 4-24 tokens;
- `keyboard_mash`: random runs of keyboard keys;
- `shuffled_words`, `char_swaps`, `token_insert`: corruptions of a natural item (they take its split);
- `lm_sample_t1.2`: the LM writes a user message at temperature 1.2 (fluent at first, drifting);
- `lm_topk_uniform_k20`: the LM writes a user message choosing uniformly among its top-20 next tokens
  (locally fluent, globally odd: the shape of fluency-constrained optimizer output);
- held out, test only (settings the classifier never sees): `lm_sample_t1.5` (a hotter sampler) and
  `token_swap` (1-3 tokens of a natural item replaced by random tokens: partially fluent, a corruption type not
  trained on); prompts read from `realize optimize` run files (`optimizer:<file stem>`), when paths are given.

The hard slice (`HARD_SOURCES`) is the fluent-but-odd negatives: `token_swap` and `lm_topk_uniform_k20`.
Everything is deterministic given the seed (private RNGs; LM sampling under a forked torch RNG).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LogitsProcessor, LogitsProcessorList

from realize.data.atomic import write_text_atomic
from realize.data.chat import chat_layout, encode
from realize.data.corpora import load_corpus
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)

NATURAL_SOURCES = ("natural_prompts", "contexts", "sentences", "generic_prompts")
HELD_OUT_SOURCES = ("lm_sample_t1.5", "token_swap")  # never in train
HARD_SOURCES = ("token_swap", "lm_topk_uniform_k20")
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890", "QWERTYUIOP", "ASDFGHJKL", ";',./[]-=")


@dataclass(frozen=True, kw_only=True)
class RealismDatasetConfig:
    seed: int = 0  # every random choice derives from it
    test_fraction: float = 0.3  # share of each random-split source in test
    n_random_tokens: int = 300  # random token sequences
    n_keyboard_mash: int = 150  # keyboard mash strings
    n_per_corruption: int = 300  # items per corruption type (shuffled_words, char_swaps, token_insert, token_swap)
    n_lm_samples: int = 200  # LM-written texts per sampling setting
    max_sample_tokens: int = 28  # LM samples are cut at a random length in [6, max_sample_tokens]
    optimizer_runs: tuple[str, ...] = ()  # `realize optimize` JSON files or folders of them (test only)

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected in (0, 1), got {self.test_fraction}")
        for name in ("n_random_tokens", "n_keyboard_mash", "n_per_corruption", "n_lm_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_sample_tokens < 6:
            raise ValueError(f"max_sample_tokens: expected >= 6, got {self.max_sample_tokens}")


def allowed_token_ids(tokenizer) -> list[int]:
    """Ids of non-special tokens that decode to non-blank printable ASCII."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        s = tokenizer.decode([i])
        if s.strip() and s.isascii() and s.isprintable():
            out.append(i)
    return out


class _UniformTopK(LogitsProcessor):
    """Keep the top-k logits and make them equal: sampling picks uniformly among the LM's top-k tokens."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.topk(self.k, dim=-1).indices
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, top, 0.0)


@torch.no_grad()
def lm_samples(
    lm: LoadedModel,
    n: int,
    *,
    seed: int,
    temperature: float = 1.0,
    uniform_top_k: int | None = None,
    max_tokens: int = 28,
    batch_size: int = 50,
) -> list[str]:
    """`n` user messages written by the LM after the chat head (sampled; deterministic given `seed`)."""
    tok = lm.tokenizer
    head = list(chat_layout(tok).head)
    rng = random.Random(seed)
    stop = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while len(texts) < n:
            b = min(batch_size, n - len(texts))
            ids = torch.tensor([head] * b)
            processors = LogitsProcessorList([_UniformTopK(uniform_top_k)]) if uniform_top_k else None
            out = lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                logits_processor=processors,
                pad_token_id=tok.pad_token_id,
            )[:, len(head) :]
            for row in out.tolist():
                cut = row[: rng.randint(6, max_tokens)]
                cut = cut[: next((j for j, t in enumerate(cut) if t in stop), len(cut))]
                text = tok.decode(cut, skip_special_tokens=True).strip()
                if len(text) >= 3:
                    texts.append(text)
    return texts[:n]


def _shuffle_words(text: str, rng: random.Random) -> str | None:
    words = text.split()
    if len(words) < 4:
        return None
    for _ in range(5):
        rng.shuffle(words)
        if " ".join(words) != text:
            return " ".join(words)
    return None


def _char_swaps(text: str, rng: random.Random) -> str | None:
    chars = list(text)
    if len(chars) < 6:
        return None
    for _ in range(max(2, len(chars) // 8)):
        j = rng.randrange(len(chars) - 1)
        chars[j], chars[j + 1] = chars[j + 1], chars[j]
    out = "".join(chars)
    return out if out != text else None


def _token_edit(text: str, tok, allowed: Sequence[int], rng: random.Random, mode: str) -> str | None:
    ids = encode(tok, text)
    if len(ids) < 4:
        return None
    k = rng.randint(1, 3) if mode == "swap" else rng.randint(2, 4)
    for _ in range(k):
        j = rng.randrange(len(ids))
        if mode == "swap":
            ids[j] = rng.choice(allowed)
        else:
            ids.insert(j, rng.choice(allowed))
    out = tok.decode(ids).strip()
    return out if out and out != text else None


def _keyboard_mash(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 6)):
        row = rng.choice(_KEYBOARD)
        words.append("".join(rng.choice(row) for _ in range(rng.randint(2, 9))))
    return " ".join(words)


def read_optimizer_prompts(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(prompt, source) pairs from `realize optimize` JSON files (or folders of *.json): every string found
    under a key named "prompt", "best_prompt" or "prompts" (lists of strings). Unreadable files: UserInputError."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise UserInputError(f"{p}: no such run file or folder")
    found: list[tuple[str, str]] = []

    def walk(node: object, source: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("prompt", "best_prompt") and isinstance(value, str) and value.strip():
                    found.append((value.strip(), source))
                elif key == "prompts" and isinstance(value, list):
                    found.extend((v.strip(), source) for v in value if isinstance(v, str) and v.strip())
                else:
                    walk(value, source)
        elif isinstance(node, list):
            for value in node:
                walk(value, source)

    for f in files:
        try:
            walk(json.loads(f.read_text(encoding="utf-8")), f"optimizer:{f.stem}")
        except (OSError, ValueError) as err:
            raise UserInputError(f"{f}: cannot read run file ({err})") from err
    return list(dict.fromkeys(found))


def build_realism_dataset(lm: LoadedModel, config: RealismDatasetConfig | None = None) -> Dataset:
    """The labelled, source-split dataset (see the module docstring). Duplicate texts are dropped (first kept)."""
    config = config or RealismDatasetConfig()
    rng = random.Random(config.seed)
    tok = lm.tokenizer
    rows: list[dict[str, object]] = []

    def add(text: str | None, label: int, source: str, split: str) -> None:
        if text and text.strip():
            rows.append({"text": text.strip(), "label": label, "source": source, "split": split})

    def random_split() -> str:
        return "test" if rng.random() < config.test_fraction else "train"

    naturals: list[tuple[str, str]] = []
    for source in NATURAL_SOURCES:
        for text in load_corpus(source):  # type: ignore[arg-type]
            split = random_split()
            naturals.append((text, split))
            add(text, 1, source, split)
    allowed = allowed_token_ids(tok)
    for _ in range(config.n_random_tokens):
        add(tok.decode([rng.choice(allowed) for _ in range(rng.randint(4, 24))]), 0, "random_tokens", random_split())
    for _ in range(config.n_keyboard_mash):
        add(_keyboard_mash(rng), 0, "keyboard_mash", random_split())
    corruptions = {
        "shuffled_words": lambda t: _shuffle_words(t, rng),
        "char_swaps": lambda t: _char_swaps(t, rng),
        "token_insert": lambda t: _token_edit(t, tok, allowed, rng, "insert"),
        "token_swap": lambda t: _token_edit(t, tok, allowed, rng, "swap"),
    }
    for source, corrupt in corruptions.items():
        parents = rng.sample(naturals, min(config.n_per_corruption, len(naturals)))
        for text, split in parents:
            add(corrupt(text), 0, source, "test" if source in HELD_OUT_SOURCES else split)
    settings = (("lm_sample_t1.2", 1.2, None), ("lm_topk_uniform_k20", 1.0, 20), ("lm_sample_t1.5", 1.5, None))
    for offset, (source, temperature, top_k) in enumerate(settings):
        texts = lm_samples(
            lm,
            config.n_lm_samples,
            seed=config.seed * 1000 + offset,
            temperature=temperature,
            uniform_top_k=top_k,
            max_tokens=config.max_sample_tokens,
        )
        for text in texts:
            add(text, 0, source, "test" if source in HELD_OUT_SOURCES else random_split())
    for text, source in read_optimizer_prompts(config.optimizer_runs):
        add(text, 0, source, "test")
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["text"] not in seen:
            seen.add(str(row["text"]))
            unique.append(row)
    logger.info("realism dataset: %d rows (%d duplicates dropped)", len(unique), len(rows) - len(unique))
    return Dataset.from_list(unique)


def save_dataset_jsonl(dataset: Dataset, path: str | os.PathLike[str]) -> None:
    """Write the dataset as JSON lines (temp file + rename)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dataset)
    try:
        write_text_atomic(path, text)
    except OSError as err:
        raise UserInputError(f"{path}: cannot write the dataset ({err.strerror or err})") from err
