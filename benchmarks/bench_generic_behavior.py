"""How generic is a behavior? Cross-recovery between prompts and vectors: each prompt's recovery of each vector's
behavior and of unrelated prompts' own behaviors.

    python benchmarks/bench_generic_behavior.py VECTOR_FILE... [--prompt P ...] [--references 10] [--contexts 6]

Rows: the vectors' behaviors (steered continuations), then the behaviors of `--references` held-out prompts
(`positive_prompts`: the prompted model's own greedy continuations, treated exactly like a steered text); columns:
the prompts. A prompt that recovers much of many unrelated behaviors is generic; a vector whose behavior many
unrelated prompts recover is generic. Contexts: the last `--contexts` of the shipped contexts, 16 tokens each.
Writes benchmarks/results/generic_behavior.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _setup import machine, write_json

from realize.data.chat import ChatLayout, chat_layout, encode
from realize.data.corpora import load_clustered, load_corpus
from realize.data.models import LoadedModel, load_model
from realize.data.steered import SteeredContext, forced_logprobs, greedy_batch, steered_contexts
from realize.data.vectors import load_vectors
from realize.scorers.behavior import measure_prompts

PROMPTS = ("Make it as boring as possible.", "Write it as if it was badly machine-translated, with clumsy grammar.",
           "Answer like someone furiously demanding a refund from the manager.", "keep it simple",
           "Answer in Spanish.", "Use Gen Z slang.", "Write as if you were a romantic poet.")


def prompted_contexts(lm: LoadedModel, layout: ChatLayout, prompt: str, contexts: list[str],
                      tokens: int) -> list[SteeredContext]:
    """A prompt's behavior in the form a vector's takes: its greedy continuation of each context and the prompted
    and base distributions along it."""
    prompt_ids = encode(lm.tokenizer, prompt)
    context_ids = [tuple(encode(lm.tokenizer, c)) for c in contexts]
    base_in = [layout.place(None, c).ids for c in context_ids]
    prompted_in = [layout.place(prompt_ids, c).ids for c in context_ids]
    ys = [y or [lm.tokenizer.eos_token_id or 0] for y in greedy_batch(lm, prompted_in, tokens)]
    prompted, base = forced_logprobs(lm, prompted_in, ys), forced_logprobs(lm, base_in, ys)
    return [SteeredContext(c, i, tuple(x), tuple(y), s, b)
            for c, i, x, y, s, b in zip(contexts, context_ids, base_in, ys, prompted, base, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors", nargs="+")
    parser.add_argument("--prompt", action="append", help=f"prompts to score (default: {len(PROMPTS)} fixed ones)")
    parser.add_argument("--references", type=int, default=10)
    parser.add_argument("--contexts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/generic_behavior.json")
    args = parser.parse_args()
    start = time.perf_counter()
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    contexts = load_corpus("contexts")[-args.contexts:]
    prompts = tuple(args.prompt or PROMPTS)
    ids = [encode(lm.tokenizer, p) for p in prompts]
    behaviors: dict[str, list[SteeredContext]] = {}
    for path in args.vectors:
        for v in load_vectors(path):
            behaviors[f"vector: {v.name or Path(path).stem}"] = steered_contexts(
                lm, layout, dict(v.directions), v.scale, contexts, args.tokens)
    for ref in [p.prompt for p in load_clustered("positive_prompts")][: args.references]:
        behaviors[f"prompt: {ref}"] = prompted_contexts(lm, layout, ref, contexts, args.tokens)
    table = {name: dict(zip(prompts, (m.recovery for m in measure_prompts(lm, layout, beh, ids)), strict=True))
             for name, beh in behaviors.items()}
    references = [name for name in table if name.startswith("prompt: ")]
    genericity = {p: statistics.median(table[r][p] for r in references) for p in prompts} if references else {}
    print("recovery (rows: behaviors; columns:", " | ".join(p[:16] for p in prompts), ")")
    for name, row in table.items():
        print(f"{name[:44]:44s}", " ".join(f"{row[p]:6.2f}" for p in prompts))
    print("median over the reference prompts' behaviors:", " ".join(f"{genericity[p]:6.2f}" for p in prompts))
    write_json(args.out, {"table": table, "median_over_references": genericity, "contexts": contexts,
                          "tokens": args.tokens, "seconds": round(time.perf_counter() - start, 1),
                          "machine": machine()})


if __name__ == "__main__":
    main()
