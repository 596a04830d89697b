"""Does behavior recovery agree with a reader? Generation triples for reader labels, and the agreement afterwards.

    python benchmarks/behavior_triples.py make AUDIT_DIR VECTORS_DIR --n 200 --out runs/triples
    python benchmarks/behavior_triples.py gen runs/triples VECTORS_DIR
    python benchmarks/behavior_triples.py score runs/triples LABELS.jsonl [LABELS2.jsonl ...]

`make` draws (steer, prompt, test context) triples from a finished audit's behavior frontiers (vectors only, spread
over the range of recovery), and writes for each: the steered model's continuation y, the prompted model's and the
base model's own continuations (greedy, the audit's token count), and the per-context recovery
1 - KL(S||P) / KL(S||B) along y. `triples.jsonl` holds what a reader sees (id, context, the three texts, shuffled
A/B order of prompted and base: "which of A and B is closer to the steered text?"); `key.jsonl` holds the answer key
and the recovery, never shown to readers.

`gen` adds a generation-level measure to the key, fixed before it was compared with any label: under the steered
model, reading the base input, the mean log-likelihood of the prompted model's own text minus that of the base
model's own text ("would the steered model rather have written the prompted text than the base text?"; > 0 says
the prompted text is closer), the texts re-encoded from what the readers saw. And a second one, fixed after the
first was compared (so it is the second measure tried on these labels): `embed_margin` = cos(e(steered), e(prompted))
- cos(e(steered), e(base)), e = SmolLM2's mean last hidden state over the text alone (no chat turn).

`score` reads reader labels ({"id", "closer": "A" | "B" | "neither"}), maps them to "the prompted text is closer
than the base" and reports the agreement of `recovery > 0` with them (and with the reader majority), per reader
and overall, with the share of "neither"; and, at the level a verdict works at, per (steer, prompt): the sign of
each measure's mean over the prompt's test contexts against the readers' majority over them (`per_prompt`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
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
from realize.stats import student_t_quantile
from realize.store import ItemStore
from realize.data.atomic import write_text_atomic
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
        for v in load_vectors(path):  # the file's own scale, as the audit applied it
            vectors[v.name] = v
    store = ItemStore(audit_dir / "items")
    plan = json.loads((audit_dir / "plan.json").read_text())["items"]
    used = {k["vector"] for f in args.exclude for k in map(json.loads, Path(f).read_text().splitlines())}
    candidates = []
    for item in plan:
        if item["kind"] != "vector" or item["name"] not in vectors or item["name"] in used:
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
    write_text_atomic(out / "triples.jsonl", "".join(json.dumps(t) + "\n" for t in shown))
    write_text_atomic(out / "key.jsonl", "".join(json.dumps(k) + "\n" for k in key))
    print(f"{len(shown)} triples from {len(chosen)} (steer, prompt) pairs in {out}")


def gen(args: argparse.Namespace) -> None:
    import torch

    from realize.data.activations import steer
    from realize.data.steered import forced_logprobs

    folder = Path(args.folder)
    shown = {t["id"]: t for t in map(json.loads, (folder / "triples.jsonl").read_text().splitlines())}
    keys = [json.loads(line) for line in (folder / "key.jsonl").read_text().splitlines()]
    lm = load_model()
    vectors = {v.name: v for path in sorted(Path(args.vectors_dir).iterdir()) for v in load_vectors(path)}
    layout = chat_layout(lm.tokenizer, "prefix")
    tok = lm.tokenizer
    for k in keys:
        t = shown[k["id"]]
        prompted, base = (t["A"], t["B"]) if k["prompted_is"] == "A" else (t["B"], t["A"])
        x = layout.place(None, tok.encode(t["context"], add_special_tokens=False)).ids
        ys = [tok.encode(text, add_special_tokens=False) or [tok.eos_token_id] for text in (prompted, base)]
        vector = vectors[k["vector"]]
        with steer(lm.model, vector.directions, float(vector.scale or 1.0)):
            logps = forced_logprobs(lm, [x, x], ys)
        mean = [float(lp.gather(1, torch.tensor(y).unsqueeze(1)).mean()) for lp, y in zip(logps, ys, strict=True)]
        k["gen_margin"] = mean[0] - mean[1]
        e = [_embed(lm, tok.encode(text, add_special_tokens=False) or [tok.eos_token_id])
             for text in (t["steered"], prompted, base)]
        cos = torch.nn.functional.cosine_similarity
        k["embed_margin"] = float(cos(e[0], e[1], dim=0) - cos(e[0], e[2], dim=0))
    write_text_atomic(folder / "key.jsonl", "".join(json.dumps(k) + "\n" for k in keys))
    print(f"gen_margin and embed_margin added to {len(keys)} triples in {folder / 'key.jsonl'}")


def _embed(lm, ids: list[int]):  # noqa: ANN001, ANN202
    """(d,) mean of the decoder's last hidden state over `ids` (the text alone)."""
    import torch

    with torch.no_grad():
        hidden = getattr(lm.model, "model", lm.model)(input_ids=torch.tensor([ids])).last_hidden_state
    return hidden[0].float().mean(0)


def _value(k: dict, field: str) -> float | None:
    """The triple's `field` (recovery, gen_margin, embed_margin), None when absent or nan."""
    value = k.get(field)
    return None if value is None or value != value else float(value)


def _agreement(key: dict, votes: dict[str, list[bool | None]], field: str) -> dict:
    """Agreement of `key[id][field] > 0` with each reader's decided labels and with the strict majority."""
    out: dict[str, dict] = {}
    n_readers = max(len(v) for v in votes.values())
    for r in range(n_readers):
        pairs = [(value > 0, vs[r]) for i, vs in votes.items()
                 if vs[r] is not None and (value := _value(key[i], field)) is not None]
        out[f"reader {r + 1}"] = {"agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else None,
                                  "n": len(pairs)}
    pairs = [(value > 0, said) for i, vs in votes.items()
             if (value := _value(key[i], field)) is not None and (said := _majority(vs)) is not None]
    out["majority"] = {"agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else None, "n": len(pairs)}
    return out


def _majority(vs: list[bool | None]) -> bool | None:
    """The strict majority of the decided labels (None: no label decided, or a tie)."""
    decided = [v for v in vs if v is not None]
    if not decided or decided.count(True) == decided.count(False):
        return None
    return decided.count(True) > decided.count(False)


def _prompt_agreement(key: dict, votes: dict[str, list[bool | None]], field: str) -> dict:
    """Agreement at the level a verdict works at: per (steer, prompt), the sign of the mean of `field` over its
    triples (test contexts) against the readers' verdict on the prompt (more of its triples with a majority saying
    "closer" than "not closer"; ties left out)."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i, k in key.items():
        groups[(k["vector"], k["prompt"])].append(i)
    pairs, bounded = [], 0
    for ids in groups.values():
        said = [m for i in ids if (m := _majority(votes[i])) is not None]
        values = [v for i in ids if (v := _value(key[i], field)) is not None]
        if len(values) > 1:  # the mean's one-sided 90 % t lower bound above 0 (a check with a bound)
            mean, sd = statistics.mean(values), statistics.stdev(values)
            bounded += mean - student_t_quantile(0.9, len(values) - 1) * sd / math.sqrt(len(values)) > 0
        if not values or said.count(True) == said.count(False):
            continue
        pairs.append((sum(values) / len(values) > 0, said.count(True) > said.count(False)))
    return {"agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else None, "n": len(pairs),
            "prompts": len(groups), "readers_closer": sum(b for _, b in pairs), "bound_above_0": bounded}


def score(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    key = {k["id"]: k for k in map(json.loads, (folder / "key.jsonl").read_text().splitlines())}
    votes: dict[str, list[bool | None]] = defaultdict(list)  # per triple, per reader: prompted closer? (None: neither)
    neither = []
    for path in args.labels:
        labels = {label["id"]: label["closer"] for label in map(json.loads, Path(path).read_text().splitlines())}
        if set(labels) != set(key):
            raise SystemExit(f"{path}: expected one label for each of the {len(key)} triples, got {len(labels)}")
        for triple_id in key:
            closer = labels[triple_id]
            votes[triple_id].append(None if closer == "neither" else closer == key[triple_id]["prompted_is"])
        neither.append(sum(c == "neither" for c in labels.values()))
    readers = len(args.labels)
    between = {}
    for a in range(readers):
        for b in range(a + 1, readers):
            both = [vs for vs in votes.values() if vs[a] is not None and vs[b] is not None]
            between[f"{a + 1}-{b + 1}"] = sum(vs[a] == vs[b] for vs in both) / len(both) if both else None
    bands = {}
    for lo, hi in ((-math.inf, -0.2), (-0.2, 0.0), (0.0, 0.2), (0.2, 0.4), (0.4, math.inf)):
        sub = {i: vs for i, vs in votes.items() if lo <= key[i]["recovery"] < hi}
        bands[f"[{lo:g}, {hi:g})"] = _agreement(key, sub, "recovery")["majority"] if sub else None
    result = {"triples": len(key), "neither_per_reader": neither, "between_readers": between,
              "recovery": _agreement(key, votes, "recovery"), "recovery_by_band": bands}
    if all("gen_margin" in k for k in key.values()):
        result["gen_margin"] = _agreement(key, votes, "gen_margin")
        result["embed_margin"] = _agreement(key, votes, "embed_margin")
        both = {i: vs for i, vs in votes.items() if (key[i]["recovery"] > 0) == (key[i]["gen_margin"] > 0)}
        result["per_prompt"] = {f: _prompt_agreement(key, votes, f) for f in ("recovery", "gen_margin", "embed_margin")}
        result["both_agree_with_each_other"] = {"share": len(both) / len(votes),
                                                "majority": _agreement(key, both, "recovery")["majority"]}
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
    p.add_argument("--exclude", nargs="*", default=[], metavar="KEY_JSONL",
                   help="leave out the steers of earlier samples (their key.jsonl), for a fresh confirmation sample")
    p.set_defaults(func=make)
    g = sub.add_parser("gen")
    g.add_argument("folder")
    g.add_argument("vectors_dir")
    g.set_defaults(func=gen)
    s = sub.add_parser("score")
    s.add_argument("folder")
    s.add_argument("labels", nargs="+")
    s.set_defaults(func=score)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
