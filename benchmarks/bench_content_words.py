"""Can the steered text name a steer's content? A content proposal for the behavior search, measured before it is
built into the audit (issue 22, "a search that finds content").

    OMP_NUM_THREADS=1 python benchmarks/bench_content_words.py [--vectors datasets/audited-steers/vectors]

For each vector distilled from a known instruction (the dataset's `distill.L{layer}.{j}`, instruction j of
`build_dataset.INSTRUCTIONS`):
1. the steered and the base model answer 6 *proposal* contexts (greedy, 24 tokens);
2. two proposal families: *content words*, the words the steered text uses more than the base text (content words
   only, ranked by count difference) filling instruction templates ("Mention W in your answer.", "Answer like a
   W.", "Use words about W."); and *LM-written instructions*, the same model asked, for each steered reply, to write
   the one-sentence instruction that would make an assistant answer like that (greedy, first sentence);
3. in each family the candidate with the best pooled recovery on the proposal contexts is chosen there, and then
   measured, with the true instruction and the audit's best behavior prompt (from the dataset), on 8 *evaluation*
   contexts that chose nothing. Proposal and evaluation contexts are ones no part of the dataset touched (not the
   audit's context sets, not the distillation's).
Prints a table and writes benchmarks/results/content_words.json. No verdict reads these numbers.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import torch
from _setup import write_json
from build_dataset import INSTRUCTIONS, unused_contexts

from realize.data.chat import chat_layout, encode
from realize.config import AuditConfig
from realize.data.function_words import FUNCTION_WORDS
from realize.data.generation import generate
from realize.data.models import load_model
from realize.data.steered import greedy_batch, steered_contexts
from realize.data.vectors import load_vectors
from realize.scorers.behavior import measure_prompts

TEMPLATES = ("Mention {w} in your answer.", "Answer like a {w}.", "Use words about {w}.")
TOKENS = 24
N_PROPOSAL, N_EVAL, N_WORDS = 6, 8, 3
WORD = re.compile(r"[a-z]{4,}")
WRITER = ("Here is a reply an assistant wrote:\n\"{reply}\"\nWrite the one-sentence instruction a user could give "
          "so that an assistant replies like this. Start with a verb. Give only the instruction.")


def written_instruction(lm, reply: str) -> str | None:  # noqa: ANN001
    """The model's own guess at the instruction behind `reply`: its first sentence, quotes stripped."""
    text = generate(lm, WRITER.format(reply=reply), max_new_tokens=32).strip().strip('"').strip()
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].strip().strip('"')
    return first if 3 <= len(first.split()) <= 25 else None


def salient_words(steered: list[str], base: list[str], n: int) -> list[str]:
    """The `n` content words the steered texts use most beyond the base texts (count difference, then count)."""
    def counts(texts: list[str]) -> Counter:
        return Counter(w for t in texts for w in WORD.findall(t.lower()) if w not in FUNCTION_WORDS)

    s, b = counts(steered), counts(base)
    ranked = sorted(s, key=lambda w: (-(s[w] - b[w]), -s[w], w))
    return [w for w in ranked if s[w] > b[w]][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, default=Path("datasets/audited-steers/vectors"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/content_words.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = args.vectors.parent / "data" / "train-00000-of-00001.parquet"
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    # contexts no part of the dataset touched: after the audit's sets and the 8 the distillation used
    fresh = unused_contexts(AuditConfig(budget="quick"), 8 + N_EVAL + N_PROPOSAL)[8:]  # as build_dataset.py
    evaluation, proposal = fresh[:N_EVAL], fresh[N_EVAL:]
    audit_best = {r["vector_name"]: r["prompt"] for r in pq.read_table(dataset).to_pylist()
                  if r["axis"] == "behavior"} if dataset.is_file() else {}
    rows = []
    start = time.perf_counter()
    for path in sorted(args.vectors.glob("distill.L*.safetensors")):
        (vector,) = load_vectors(path)
        j = int(path.stem.rsplit(".", 1)[1])
        truth = INSTRUCTIONS[j]
        steered = steered_contexts(lm, layout, vector.directions, vector.scale or 1.0, proposal, TOKENS)
        base = greedy_batch(lm, [c.base_ids for c in steered], TOKENS)
        decode = lm.tokenizer.decode
        words = salient_words([decode(c.continuation, skip_special_tokens=True) for c in steered],
                              [decode(b, skip_special_tokens=True) for b in base], N_WORDS)
        replies = [decode(c.continuation, skip_special_tokens=True) for c in steered]
        written = sorted({w for r in replies if (w := written_instruction(lm, r))})
        families = {"content-word proposal": [t.format(w=w) for w in words for t in TEMPLATES],
                    "LM-written instruction": written}
        held = steered_contexts(lm, layout, vector.directions, vector.scale or 1.0, evaluation, TOKENS)
        named = {"true instruction": truth, "audit's best behavior prompt": audit_best.get(path.stem)}
        for family, candidates in families.items():
            if candidates:
                on_proposal = measure_prompts(lm, layout, steered, [encode(lm.tokenizer, c) for c in candidates])
                named[family] = candidates[max(range(len(candidates)), key=lambda i: on_proposal[i].recovery)]
        named = {k: v for k, v in named.items() if v}
        measured = measure_prompts(lm, layout, held, [encode(lm.tokenizer, p) for p in named.values()])
        row = {"vector": path.stem, "truth": truth, "words": words, "written": written,
               **{k: {"prompt": p, "recovery": m.recovery, "direction_cos": m.direction_cos}
                  for (k, p), m in zip(named.items(), measured, strict=True)}}
        rows.append(row)
        print(f"{path.stem}: words {words}; " + "; ".join(f"{k} {row[k]['recovery']:.2f} ({row[k]['prompt']!r})"
                                                          for k in named), flush=True)
    write_json(args.out, {"tokens": TOKENS, "proposal_contexts": proposal, "evaluation_contexts": evaluation,
                          "templates": list(TEMPLATES), "rows": rows, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
