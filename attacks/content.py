"""Content proposals for natural GCG: whole words chosen for what they mean, not for where the LM would put them.

Why (shared/README "Mean shifts encode an instruction's form more than its content"): on SmolLM2 the mean shift of
"Mention X somewhere in your answer." is mostly its template; X is a margin of 0.07-0.25 in specific cosine. Local
LM-proposed word edits find the template and rarely the X: the LM's top-64 next words at a slot almost never hold
"volcanoes", and the objective's token gradient ranks the right word first for some targets and in the thousands
for others (measured on benchmarks/content_siblings.tsv). A vocabulary projection of the target through the
layer's readout (logit lens: final norm + LM head on the specific part of the shift, or the embedding matrix)
ranks the true content word in the thousands at layers 6 and 12: the shift at the context's positions is not
written in token space there.

What works (measured on the same pairs): a *lexicon* of English words, each measured once as the content of a
fixed carrier ("Talk about {w}." before a two-token context), its shift centred over the lexicon so the carrier's
form cancels. For a target t and the current prompt's shift s, both with g removed (P = projection orthogonal to
g), the content still missing is the residual

    r = P t - a * P s,   a = max(0, <P t, P s> / |P s|^2)        (s's best-scaled part removed)

and words are ranked by cos(r, P c_w) (averaged over the objective's layers). On the 20 dev targets, from the
sibling's own prompt, the true content word ranks within the top 10 of 2,042 words for 18 targets at layer 6 and
17 at layer 12 (the carrier before "Hi." ranks better than before a real question, or than the bare word); from
a retrieved prompt of another template the right word is still among the first few (e.g. "Answer in one
sentence." -> meteorite, volcano, glacier, ...), but it only helps when it can be placed fluently: the content
moves' connectors, articles and plurals, and the LM's choice among many placements, exist for that.

Public API:

    ContentLexicon(words, first_ids, inner_ids, shifts, plural_first_ids=(), plural_inner_ids=())
        shifts: {layer: (n, d)} centred ({} = ids only); .forms(word, first) -> the word's token ids (+ plural)
    plural(word) -> str                                        # naive English plural
    lexicon_words(size) -> tuple[str, ...]                     # wordfreq's top `size` English words, filtered
    build_lexicon(lm, layout, layers, words, *, carrier=CARRIER, context=CONTEXT, batch_size=64,
                  cache_dir=None, fingerprint="", show_progress=False) -> ContentLexicon
    lexicon_for(objective, lm, layout, size) -> ContentLexicon  # memoized per (model, layers, size), disk-cached
    register_lexicon(objective, lm, layout, size, lexicon)      # what lexicon_for returns there (tests, benchmarks)
    residual_scores(current {layer: (d,)}, targets, generics | None, shifts) -> (n,)   # pure
    activation_content_scores(objective, prompt (L,), lexicon) -> (n,)   # ActivationShiftObjective.content_scores
    Connectors.of(tokenizer, strings) -> Connectors                    # connector heads and articles as token ids
    content_moves(ids (L,), spans, lexicon, top (k,), connectors, next_logprobs (L + 1, V), *,
                  max_span, p_connector, max_tokens, generator, n) -> list[(L',)]   # pure
    most_fluent(ce (B,), ok (B,), is_content (B,), n) -> (B,) bool   # pure: the LM's pick among content fills

An objective that can rank content implements `content_scores(prompt (L,), lexicon) -> (n,) | None` (higher =
more wanted): the activation objective as above, the behavior objective from the tokens the steer pushes up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel, model_digest
from realize.data.shift import project_out

logger = logging.getLogger(__name__)

__all__ = [
    "CARRIER", "CONNECTORS", "CONTEXT", "Connectors", "ContentLexicon", "activation_content_scores", "build_lexicon", "plural",
    "content_moves", "lexicon_for", "lexicon_words", "most_fluent", "register_lexicon", "residual_scores",
]

CARRIER = "Talk about {w}."  # the template each lexicon word is measured in ({w}: the word)
CONTEXT = "Hi."  # the context the carrier is placed before (short: the lexicon is 10x cheaper than on questions)
CONNECTORS = ("about", "of", "with", "like", "on", "for", "in", "to", "and")  # heads before a content word


@dataclass(frozen=True)
class Connectors:
    """Token ids of what may precede a content word (" about" " a" volcano), each one token after a space (a word
    the tokenizer splits is left out, so a connector never splits a word)."""

    heads: torch.Tensor  # (H,) the connector heads (`CONNECTORS` that are one token)
    a: int | None  # " a" (None: not one token)
    an: int | None
    the: int | None
    letters: frozenset[int]  # ids of tokens that hold a letter (to tell a final word from a punctuation mark)

    @classmethod
    def of(cls, tokenizer: object, strings: Sequence[str]) -> Connectors:
        """From the tokenizer and every token's string (`sampling.token_strings`)."""
        def one(word: str) -> int | None:
            row = tokenizer(" " + word, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
            return row[0] if len(row) == 1 else None

        heads = [t for t in (one(c) for c in CONNECTORS) if t is not None]
        letters = frozenset(i for i, t in enumerate(strings) if any(ch.isalpha() for ch in t))
        return cls(torch.tensor(heads, dtype=torch.long), one("a"), one("an"), one("the"), letters)


@dataclass(frozen=True)
class ContentLexicon:
    """Words a content move can place, as token ids, and (for activation objectives) their centred shifts."""

    words: tuple[str, ...]
    first_ids: tuple[tuple[int, ...], ...]  # each word capitalized, at the prompt's first position ("Volcano")
    inner_ids: tuple[tuple[int, ...], ...]  # each word after a space (" volcano")
    shifts: Mapping[int, torch.Tensor]  # layer -> (n, d) carrier shifts minus their mean over the lexicon; {} = none
    plural_first_ids: tuple[tuple[int, ...], ...] = ()  # each word's plural (`plural`), first position; () = none
    plural_inner_ids: tuple[tuple[int, ...], ...] = ()  # each word's plural after a space; () = none

    def __post_init__(self) -> None:
        n = len(self.words)
        if not (len(self.first_ids) == len(self.inner_ids) == n) or any(s.shape[0] != n for s in self.shifts.values()):
            raise ValueError("lexicon: words, ids and shifts must have one row per word")
        if len(self.plural_first_ids) not in (0, n) or len(self.plural_inner_ids) != len(self.plural_first_ids):
            raise ValueError("lexicon: plural ids must have one row per word, or none")

    def forms(self, word: int, first: bool) -> tuple[tuple[int, ...], ...]:
        """Token ids of word `word`'s forms (singular, plural if known) at the first position or after a space."""
        one = self.first_ids[word] if first else self.inner_ids[word]
        if not self.plural_first_ids:
            return (one,)
        return (one, self.plural_first_ids[word] if first else self.plural_inner_ids[word])


def plural(word: str) -> str:
    """A naive English plural ("volcano" -> "volcanoes", "city" -> "cities", "fox" -> "foxes", "kite" -> "kites");
    a wrong one ("cheeses" for a mass noun) costs nothing: the fluency budget drops what the LM finds odd."""
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        return word + "es"
    return word + "s"


def lexicon_words(size: int) -> tuple[str, ...]:
    """English content words: wordfreq's `size` most frequent, ASCII letters only, 3+ letters, no function words;
    a plural is dropped when its singular is in the list ("volcanoes" -> "volcano")."""
    from wordfreq import top_n_list

    from realize.data.function_words import FUNCTION_WORDS

    words = [w for w in top_n_list("en", size) if w.isascii() and w.isalpha() and len(w) >= 3
             and w not in FUNCTION_WORDS]
    known = set(words)
    return tuple(w for w in words if not ((w.endswith("s") and w[:-1] in known)
                                          or (w.endswith("es") and w[:-2] in known)))


def _cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"lexicon-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


def _ids(tok: object, words: Sequence[str]) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """(ids of each word capitalized at the prompt's start, ids of " word")."""
    first = tok([w[:1].upper() + w[1:] for w in words], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    inner = tok([" " + w for w in words], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return tuple(tuple(r) for r in first), tuple(tuple(r) for r in inner)


@torch.no_grad()
def build_lexicon(lm: LoadedModel, layout: ChatLayout, layers: Sequence[int], words: Sequence[str], *,
                  carrier: str = CARRIER, context: str = CONTEXT, batch_size: int = 64,
                  cache_dir: Path | None = None, fingerprint: str = "",
                  show_progress: bool = False) -> ContentLexicon:
    """The lexicon of `words` with their carrier shifts at `layers` (one early-exit, KV-reusing forward for all
    layers, prompts batched by token length; no layers = ids only). With `cache_dir` the shifts are read from / written
    to a safetensors file keyed by `fingerprint` (the caller's model hash), the layers, words, carrier and context."""
    tok = lm.tokenizer
    words = tuple(words)
    first, inner = _ids(tok, words)
    plural_first, plural_inner = _ids(tok, [plural(w) for w in words])
    layers = tuple(sorted(set(layers)))

    def lexicon(shifts: Mapping[int, torch.Tensor]) -> ContentLexicon:
        return ContentLexicon(words, first, inner, shifts, plural_first, plural_inner)

    if not layers:
        return lexicon({})
    key = json.dumps({"v": 1, "model": fingerprint, "layers": layers, "words": words, "carrier": carrier,
                      "context": context, "placement": layout.placement}, sort_keys=True)
    path = _cache_file(cache_dir, key) if cache_dir is not None and fingerprint else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        stored = load_file(str(path))
        if all(f"layer.{i}" in stored and stored[f"layer.{i}"].shape[0] == len(words) for i in layers):
            return lexicon({i: stored[f"layer.{i}"] for i in layers})
    from realize.attacks.objectives import ActivationShiftObjective  # objectives imports this module

    probe = ActivationShiftObjective(lm.model, tok, layout, {i: torch.ones(lm.hidden_size) for i in layers}, None,
                                     [encode(tok, context)])
    ids = [encode(tok, carrier.format(w=w)) for w in words]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_length.setdefault(len(row), []).append(i)
    out = {i: torch.zeros(len(words), lm.hidden_size) for i in layers}
    chunks = [rows[s : s + batch_size] for rows in by_length.values() for s in range(0, len(rows), batch_size)]
    for chunk in tqdm(chunks, desc="content lexicon", disable=not show_progress):
        for layer, d in probe.per_context_shifts_by_layer(torch.tensor([ids[i] for i in chunk])).items():
            out[layer][chunk] = d.mean(dim=1).float().cpu()
    shifts = {i: (s - s.mean(dim=0, keepdim=True)).contiguous() for i, s in out.items()}
    if path is not None:
        from safetensors.torch import save_file

        from realize.data.atomic import atomic_output

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            save_file({f"layer.{i}": s for i, s in shifts.items()}, str(tmp))
    return lexicon(shifts)


_MEMO: dict[tuple[object, ...], ContentLexicon] = {}  # (model id, layers, size, placement) -> lexicon


def lexicon_for(objective: object, lm: LoadedModel, layout: ChatLayout, size: int) -> ContentLexicon:
    """The default lexicon for `objective`: wordfreq's top `size` words, with shifts at the objective's `layers`
    (none for objectives without layers, e.g. the behavior objective). Computed once per (model, layers, size,
    placement) and kept in the process and on disk (`$REALIZE_CACHE/content_lexicon`): SmolLM2, layers 6 and 12,
    ~24k words take ~10 min on 2 CPU cores the first time, then every target and control reuses them."""
    from realize.data.models import cache_root

    layers = tuple(getattr(objective, "layers", ()) or ())
    key = (id(lm.model), layers, size, layout.placement)
    if key not in _MEMO:
        if len(_MEMO) >= 4:
            _MEMO.pop(next(iter(_MEMO)))
        logger.info("content lexicon: %d words at layers %s (once per model and layers; cached)", size, layers)
        _MEMO[key] = build_lexicon(lm, layout, layers, lexicon_words(size), cache_dir=cache_root() / "content_lexicon",
                                   fingerprint=model_digest(lm))
    return _MEMO[key]


def register_lexicon(objective: object, lm: LoadedModel, layout: ChatLayout, size: int,
                     lexicon: ContentLexicon) -> None:
    """Make `lexicon` the one `lexicon_for` returns for this (objective's layers, model, size, placement): tests and
    benchmarks run the content moves on a lexicon of their own without another argument to `natural.run`."""
    layers = tuple(getattr(objective, "layers", ()) or ())
    _MEMO[(id(lm.model), layers, size, layout.placement)] = lexicon


def residual_scores(current: Mapping[int, torch.Tensor], targets: Mapping[int, torch.Tensor],
                    generics: Mapping[int, torch.Tensor] | None, shifts: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Content score of every lexicon word, (n,): the mean over layers of cos(r, P c_w), where r = P t - a P s is
    what the current shift s (d,) still lacks of the target t (d,) (a = its best non-negative scale) and P removes g
    (identity without g). current, targets, generics: {layer: (d,)}; shifts: {layer: (n, d)}."""
    total = None
    for i, t in targets.items():
        s, c = current[i].float(), shifts[i].float()
        t = t.float()
        if generics is not None:
            g = generics[i].float()
            t, s, c = project_out(t, g), project_out(s, g), project_out(c, g)
        a = (t @ s).clamp_min(0) / (s @ s).clamp_min(1e-12)
        score = F.cosine_similarity(c, (t - a * s).unsqueeze(0), dim=-1)
        total = score if total is None else total + score
    if total is None:
        raise ValueError("targets: expected at least one layer")
    return total / len(targets)


@torch.no_grad()
def activation_content_scores(objective: object, prompt: torch.Tensor, lexicon: ContentLexicon) -> torch.Tensor | None:
    """`residual_scores` of `prompt` (L,) for an activation-shift objective (single- or multi-layer): its current
    mean shift over the objective's contexts against each layer's target; None when the lexicon lacks a layer."""
    layers = objective.layers  # type: ignore[attr-defined]
    if any(i not in lexicon.shifts for i in layers):
        return None
    by_layer = objective.per_context_shifts_by_layer(prompt.unsqueeze(0))  # type: ignore[attr-defined]
    current = {i: d[0].mean(dim=0).cpu() for i, d in by_layer.items()}
    targets = {i: t.cpu() for i, t in objective.targets.items()}  # type: ignore[attr-defined]
    generics = objective.generics  # type: ignore[attr-defined]
    return residual_scores(current, targets, None if generics is None else {i: g.cpu() for i, g in generics.items()},
                           lexicon.shifts)


def most_fluent(ce: torch.Tensor, ok: torch.Tensor, is_content: torch.Tensor, n: int) -> torch.Tensor:
    """ce (B,), ok (B,) bool (within the fluency budget), is_content (B,) bool -> (B,) bool: `ok`, but of the content
    candidates only the `n` with the lowest CE (the LM's choice among the fills it was offered)."""
    out = ok & ~is_content
    rows = (ok & is_content).nonzero().flatten()
    if rows.numel() and n > 0:
        out[rows[ce[rows].argsort()[:n]]] = True
    return out


def content_moves(ids: torch.Tensor, spans: Sequence[tuple[int, int]], lexicon: ContentLexicon, top: torch.Tensor,
                  connectors: Connectors, next_logprobs: torch.Tensor, *, max_span: int, p_connector: float,
                  max_tokens: int, generator: torch.Generator, n: int) -> list[torch.Tensor]:
    """`n` draws of one content move on `ids` (L,) (duplicates and no-ops dropped; lengths vary). A lexicon word
    drawn uniformly from `top` (k,) (indices into the lexicon), in a form drawn uniformly (singular, plural):
    - a quarter of the draws attach it at the end, before the final punctuation, after a connector head
      ("Answer in one sentence" + " about a volcano" + ".");
    - the others replace a span of 0..`max_span` whole words starting at a random word (0 words = inserted before
      it; the first word is only replaced, by the capitalized form), after a connector head with probability
      `p_connector` (not at the first word).
    The head is drawn by the LM's probabilities at the slot (`next_logprobs` (L + 1, V), row j =
    log P(. | head, p_<j)); an article follows it in half of the moves at random ("a"/"an" by the word's first
    letter for a singular, "the"). spans: the prompt's words (`sampling.word_spans`)."""
    base = ids.tolist()
    n_words = len(spans)
    out: list[torch.Tensor] = []
    seen = {tuple(base)}
    if top.numel() == 0 or n_words == 0:
        return out
    end_is_mark = not any(t in connectors.letters for t in base[spans[-1][0] : spans[-1][1]])

    def draw(m: int) -> int:
        return int(torch.randint(0, m, (1,), generator=generator))

    for _ in range(n):
        w = int(top[draw(top.numel())])
        if torch.rand(1, generator=generator).item() < 0.25:  # attach at the end
            i, span, head = (n_words - 1 if end_is_mark else n_words), 0, True
        else:
            i = draw(n_words)
            span = min(draw(max_span + 1 - (i == 0)) + (i == 0), n_words - i)
            head = i > 0 and torch.rand(1, generator=generator).item() < p_connector
        a = spans[i][0] if i < n_words else len(base)
        b = spans[i + span - 1][1] if span > 0 else a
        forms = lexicon.forms(w, first=i == 0)
        k = draw(len(forms))
        new = list(forms[k])
        if i > 0 and draw(2):
            article = connectors.the if draw(2) or k == 1 else (
                connectors.an if lexicon.words[w][:1] in "aeiou" else connectors.a)
            new = new if article is None else [article] + new
        if head and connectors.heads.numel():
            probs = next_logprobs[a, connectors.heads].float().softmax(dim=0)
            new = [int(connectors.heads[torch.multinomial(probs, 1, generator=generator)])] + new
        cand = base[:a] + new + base[b:]
        key = tuple(cand)
        if key not in seen and 0 < len(cand) <= max_tokens:
            seen.add(key)
            out.append(torch.tensor(cand, dtype=torch.long))
    return out
