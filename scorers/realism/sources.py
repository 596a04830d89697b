"""Where the realism dataset's rows come from, other than the packaged corpora: generated and corrupted negatives,
prompts from `realize optimize` runs, the fluent adversarial negatives of the generator families, and the benign
task prompts.

- `lm_samples`: user messages the LM writes after the chat head (sampled; cached on disk when asked);
- coarse corruptions (`coarse_corruptions`): all words shuffled, characters swapped, random tokens inserted or
  swapped in; `keyboard_mash`; `allowed_token_ids` for random token sequences;
- `read_optimizer_prompts`: prompts found in `realize optimize` JSON files;
- `read_family_negatives`: the shipped outputs of the generator families (`scorers/realism/negatives/<family>.jsonl`,
  written by `benchmarks/generate_realism_negatives.py`; see `realize.realism_negatives`), with provenance;
- `load_benign`: the benign task prompts (`scorers/realism/benign/benign_prompts.jsonl`; long task prompts,
  questions with context, lists, multi-sentence instructions), with their paraphrase clusters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from realize.data.atomic import write_text_atomic
from realize.data.chat import chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, cache_root

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
NEGATIVES_DIR = PACKAGE_DIR / "negatives"  # <family>.jsonl per generator family
BENIGN_PATH = PACKAGE_DIR / "benign" / "benign_prompts.jsonl"
FAMILIES = ("beast", "autodan", "flrt", "fluent", "natural")  # generator families (`realize.realism_negatives`)
FAMILY_PREFIX = "gen_"  # a family's rows have source "gen_<family>"
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890", "QWERTYUIOP", "ASDFGHJKL", ";',./[]-=")


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
    use_cache: bool = False,
) -> list[str]:
    """`n` user messages written by the LM after the chat head (sampled; deterministic given `seed`). With
    `use_cache`, the texts are kept in a JSON file under `cache_root()/realism_samples/` keyed by the model name
    and every argument (sampling is the slow part of building the dataset; the cache only saves time)."""
    if use_cache:
        key = f"{lm.name}|{n}|{seed}|{temperature}|{uniform_top_k}|{max_tokens}|{batch_size}"
        path = cache_root() / "realism_samples" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        if path.is_file():
            try:
                return list(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                logger.warning("sample cache %s unreadable; resampling", path)
        texts = lm_samples(lm, n, seed=seed, temperature=temperature, uniform_top_k=uniform_top_k,
                           max_tokens=max_tokens, batch_size=batch_size)
        write_text_atomic(path, json.dumps(texts))
        return texts
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



def coarse_corruptions(tok, allowed: Sequence[int]) -> dict[str, Callable[[str, random.Random], str | None]]:
    """The coarse corruption kinds by name."""
    return {
        "shuffled_words": _shuffle_words,
        "char_swaps": _char_swaps,
        "token_insert": lambda t, r: _token_edit(t, tok, allowed, r, "insert"),
        "token_swap": lambda t, r: _token_edit(t, tok, allowed, r, "swap"),
    }


def keyboard_mash(rng: random.Random) -> str:
    return _keyboard_mash(rng)


def read_family_negatives(directory: str | Path = NEGATIVES_DIR,
                          families: Sequence[str] = FAMILIES) -> list[dict[str, object]]:
    """Rows (text, family, run, parent, suffix_start, objective, settings ...) of the generator families' files that
    exist under `directory` (rows without text: runs that kept nothing, skipped). Unreadable file: UserInputError."""
    rows: list[dict[str, object]] = []
    for family in families:
        path = Path(directory) / f"{family}.jsonl"
        if not path.is_file():
            continue
        try:
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if row.get("text"):
                        rows.append(row | {"family": family})
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path}: cannot read generated negatives ({err})") from err
    return rows


def load_benign(path: str | Path = BENIGN_PATH) -> list[tuple[str, str]]:
    """(prompt, cluster) pairs of the benign task prompts (cluster ids prefixed "benign:"). Unreadable file:
    UserInputError; a missing file gives none."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(str(r["prompt"]), f"benign:{r['cluster']}") for r in rows]
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"{p}: cannot read benign prompts ({err})") from err
