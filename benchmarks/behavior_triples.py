"""Does behavior recovery agree with a reader? Generation triples for reader labels, and the agreement afterwards.

    python benchmarks/behavior_triples.py make AUDIT_DIR VECTORS_DIR --n 200 --out runs/triples
    python benchmarks/behavior_triples.py score runs/triples LABELS.jsonl [LABELS2.jsonl ...]

`make` draws (steer, prompt, test context) triples from a finished audit's behavior frontiers (vectors only, spread
over the range of recovery), and writes for each: the steered model's continuation y, the prompted model's and the
base model's own continuations (greedy, the audit's token count), and the per-context recovery
1 - KL(S||P) / KL(S||B) along y. `triples.jsonl` holds what a reader sees (id, context, the three texts, shuffled
A/B order of prompted and base: "which of A and B is closer to the steered text?"); `key.jsonl` holds the answer key
and the recovery, never shown to readers.

`score` reads reader labels ({"id", "closer": "A" | "B" | "neither"}), maps them to "the prompted text is closer
than the base" and reports the agreement of `recovery > 0` with them (and with the reader majority), per reader
and overall, with the share of "neither".
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from _setup import write_json

from realize.data.chat import chat_layout
from realize.data.models import load_model
from realize.data.steered import greedy_batch, steered_contexts
from realize.data.vectors import load_vectors
from realize.outputs import IDENTITY
from realize.scorers.behavior import measure_prompts
from realize.setting import ContextSplit
from realize.store import ItemStore
from realize.data.corpora import load_corpus
from realize.config import AuditConfig


def make(args: argparse.Namespace) -> None:
    audit_dir, vectors_dir = Path(args.audit_dir), Path(args.vectors_dir)
    identity = json.loads((audit_dir / IDENTITY).read_text())
    config = AuditConfig.from_json(identity["config"])
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed).subset(config.behavior_contexts, config.behavior_contexts,
                                                config.behavior_test_contexts)
    lm = load_model()
    layout = chat_layout(lm.tokenizer, config.placement)
    vectors = {}
    for path in sorted(vectors_dir.iterdir()):
        for v in load_vectors(path, scale=1.0):
            vectors[v.name] = v
    store = ItemStore(audit_dir / "items")
    plan = json.loads((audit_dir / "plan.json").read_text())["items"]
    candidates = []
    for item in plan:
        if item["kind"] != "vector" or item["name"] not in vectors:
            continue
        audit = store.load(item["id"])
        if audit is None or "behavior" not in audit.axes:
            continue
        for score in audit.axes["behavior"].frontier:
            candidates.append((item["name"], score.prompt, score.ids, score.value))
    rng = random.Random(args.seed)
    candidates.sort(key=lambda c: c[3] if c[3] == c[3] else -9)
    step = max(len(candidates) // max(args.n // len(split.test), 1), 1)
    chosen = candidates[::step][: max(args.n // len(split.test), 1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown, key = [], []
    for name, prompt, ids, _ in chosen:
        vector = vectors[name]
        steered = steered_contexts(lm, layout, vector.directions, float(vector.scale or 1.0), split.test,
                                   config.behavior_tokens)
        (measure,) = measure_prompts(lm, layout, steered, [list(ids)])
        prompted_in = [layout.place(list(ids), c.context_ids).ids for c in steered]
        own = greedy_batch(lm, prompted_in + [c.base_ids for c in steered], config.behavior_tokens)
        decode = lm.tokenizer.decode
        for k, c in enumerate(steered):
            triple_id = f"{len(key):04d}"
            texts = {"steered": decode(list(c.continuation), skip_special_tokens=True).strip(),
                     "prompted": decode(own[k], skip_special_tokens=True).strip(),
                     "base": decode(own[len(steered) + k], skip_special_tokens=True).strip()}
            prompted_is_a = rng.random() < 0.5
            a, b = ("prompted", "base") if prompted_is_a else ("base", "prompted")
            shown.append({"id": triple_id, "context": c.context, "steered": texts["steered"], "A": texts[a],
                          "B": texts[b]})
            key.append({"id": triple_id, "vector": name, "prompt": prompt, "prompted_is": "A" if prompted_is_a else "B",
                        "recovery": measure.per_context[k]})
    rng.shuffle(shown)
    (out / "triples.jsonl").write_text("".join(json.dumps(t) + "\n" for t in shown))
    (out / "key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    print(f"{len(shown)} triples from {len(chosen)} (steer, prompt) pairs in {out}")


def score(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    key = {k["id"]: k for k in map(json.loads, (folder / "key.jsonl").read_text().splitlines())}
    votes: dict[str, list[bool | None]] = defaultdict(list)
    per_reader = {}
    for path in args.labels:
        agree = total = neither = 0
        for label in map(json.loads, Path(path).read_text().splitlines()):
            k = key[label["id"]]
            closer = None if label["closer"] == "neither" else label["closer"] == k["prompted_is"]
            votes[label["id"]].append(closer)
            if closer is None or k["recovery"] != k["recovery"]:
                neither += closer is None
                continue
            total += 1
            agree += (k["recovery"] > 0) == closer
        per_reader[path] = {"agreement": agree / total if total else None, "n": total, "neither": neither}
    majority_agree = majority_n = 0
    for triple_id, vs in votes.items():
        decided = [v for v in vs if v is not None]
        rec = key[triple_id]["recovery"]
        if not decided or rec != rec or decided.count(True) == decided.count(False):
            continue
        majority_n += 1
        majority_agree += (rec > 0) == (decided.count(True) > decided.count(False))
    result = {"per_reader": per_reader, "majority": {"agreement": majority_agree / majority_n if majority_n else None,
                                                     "n": majority_n}}
    write_json(folder / "agreement.json", result)
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("make")
    p.add_argument("audit_dir")
    p.add_argument("vectors_dir")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/triples")
    p.set_defaults(func=make)
    s = sub.add_parser("score")
    s.add_argument("folder")
    s.add_argument("labels", nargs="+")
    s.set_defaults(func=score)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
