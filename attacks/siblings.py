"""Form siblings: the same prompt with one content word swapped for another the LM would write there.

The content test of the audit asks "would a prompt of the same form with other content do as well?". A prompt's
form siblings answer it: for each content word (a word of letters, at least `min_letters` long, not among
`TEMPLATE_WORDS`, not the prompt's first word, which is usually the instruction's verb), the word's tokens are
replaced by one whole-word token from the LM's own top-k at that slot (given the words before it, in the prompt's
chat position), the likeliest that is a different word (not the same word, not a form of it: no shared
`stem_letters`-letter prefix, not a template word). So "Mention mushrooms in every sentence." gives "Mention
numbers in every sentence.", "Mention mushrooms in every paragraph.", ...: the template stays, the content moves.

Deterministic (no sampling): the same prompt always gets the same siblings.

    form_siblings(lm, layout, ids (L,), config) -> list[tuple[int, ...]]      at most config.n, in slot order
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from realize.attacks.fluency import encode_head, lm_head_ids, next_token_logprobs
from realize.attacks.sampling import token_strings, word_spans
from realize.data.chat import ChatLayout
from realize.data.function_words import FUNCTION_WORDS
from realize.data.models import LoadedModel

# Words that carry an instruction's form rather than its content: function words, quantifiers, pronouns and the
# most common instruction scaffolding. A content word is any other word of letters.
TEMPLATE_WORDS = FUNCTION_WORDS | frozenset(
    "being no "
    "every each all any some many much more most less few other another such same own only just very too also "
    "please answer answers respond response reply write make use give tell say explain describe "
    "sentence sentences word words way something someone thing things what when where which who how why "
    "always never ever again here there then now".split()
)


@dataclass(frozen=True, kw_only=True)
class SiblingConfig:
    n: int = 6  # siblings per prompt (one per content word, then second choices, ...)
    lm_top_k: int = 64  # the LM's proposals considered at each slot
    min_letters: int = 3  # shorter words are not content words
    stem_letters: int = 4  # a proposal sharing this many leading letters with the word is a form of it

    def __post_init__(self) -> None:
        for name in ("n", "lm_top_k", "min_letters", "stem_letters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _word(text: str) -> str:
    return text.strip().lower()


def content_slots(strings: list[str], config: SiblingConfig) -> list[tuple[int, int]]:
    """The prompt's decoded tokens -> [start, end) token spans of its content words (the first word excluded)."""
    out = []
    for start, end in word_spans(strings)[1:]:
        word = _word("".join(strings[start:end]))
        if word.isascii() and word.isalpha() and len(word) >= config.min_letters and word not in TEMPLATE_WORDS:
            out.append((start, end))
    return out


@torch.no_grad()
def form_siblings(lm: LoadedModel, layout: ChatLayout, ids: tuple[int, ...] | list[int],
                  config: SiblingConfig = SiblingConfig()) -> list[tuple[int, ...]]:
    """Up to `config.n` form siblings of the prompt `ids` (see module docstring); [] when it has no content word."""
    ids = list(ids)
    if not ids:
        return []
    tok = lm.tokenizer
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    strings = [tok.decode([i]) for i in ids]
    slots = content_slots(strings, config)
    if not slots:
        return []
    head = encode_head(lm.model, lm_head_ids(layout))
    logprobs = next_token_logprobs(lm.model, head, torch.tensor([ids]))[0]  # (L + 1, V)
    vocab_strings = token_strings(tok, vocab)
    proposals: list[list[int]] = []
    for start, end in slots:
        original = _word("".join(strings[start:end]))
        ranked = logprobs[start].topk(min(config.lm_top_k, logprobs.shape[-1])).indices.tolist()
        choices = []
        for token in ranked:
            text = vocab_strings[token]
            word = _word(text)
            if not (text.startswith(" ") and word.isascii() and word.isalpha() and len(word) >= config.min_letters):
                continue
            if word in TEMPLATE_WORDS or word[: config.stem_letters] == original[: config.stem_letters]:
                continue
            choices.append(token)
        proposals.append(choices)
    out: list[tuple[int, ...]] = []
    for rank in range(config.lm_top_k):  # first choices for every slot, then second choices, ...
        for (start, end), choices in zip(slots, proposals, strict=True):
            if rank < len(choices) and len(out) < config.n:
                sibling = tuple(ids[:start] + [choices[rank]] + ids[end:])
                if sibling not in out:
                    out.append(sibling)
        if len(out) >= config.n or all(rank >= len(c) for c in proposals):
            break
    return out
