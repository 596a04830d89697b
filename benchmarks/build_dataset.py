"""Build the dataset of audited steers: 100+ steering vectors of five methods, audited on both axes, as a Hugging Face
dataset directory with its vectors, card and report.

    bash scripts/build-dataset [OUT]          # default datasets/audited-steers (this script, then the audit)

Vectors (all on the embedded SmolLM2-135M-Instruct, written to OUT/vectors/):

- MELBO (unsupervised): source layers 7 and 12, seeds 0-4, 4 orthogonal vectors each (R calibrated), 40 steps;
- CAA (contrastive): five contrast sets over the same questions (`CAA_SETS`), layers 7 and 12, scales 4 and 8;
- distilled from natural instructions (a prompt exists by construction: the answer is known), layers 7 and 12,
  the first `DISTILLED_PER_LAYER` of `INSTRUCTIONS` (2-3 min each on one core);
- natural prompts' mean shifts (known: the prompt itself produces them), layers 7 and 12;
- random directions of the natural shift space at the MELBO and CAA norms, layers 7 and 12;
- multi-layer steers (layers 3-9, as repeng/llama.cpp control vectors): CAA happy/sad per layer, two natural shifts,
  one random.

The instructions and natural prompts were written for the dataset; some share a theme with prompts of the retrieval
corpus (a detective, a robot, a tour guide), on purpose: a steer whose prompt the corpus nearly holds is one whose
answer the audit should find. Then `realize audit OUT/vectors/* --budget quick --out OUT/audit`, and `realize export` keeps the rows
decided on selection numbers (`--include-positives` off) in OUT (data/, README.md), with the full results and
report beside it in OUT/audit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _setup import machine, write_json

from realize.commands.audit import DEMO_PROMPTS
from realize.config import AuditConfig
from realize.corpus_shifts import corpus_shifts_at, mean_shifts_at
from realize.data.chat import chat_layout
from realize.data.corpora import load_corpus
from realize.data.models import cache_root, load_model
from realize.data.vectors import SteeringVector, load_vectors, save_control_vector_gguf, save_safetensors
from realize.distill import DistillConfig, train_distilled
from realize.identity import model_digest
from realize.setting import ContextSplit
from realize.targets import natural_nulls
from realize.vector_training import CaaConfig, MelboConfig, train_caa, train_melbo

LAYERS = (7, 12)
MELBO_SEEDS = (0, 1, 2, 3, 4)
DISTILLED_PER_LAYER = 5
MULTI_LAYERS = (3, 4, 5, 6, 7, 8, 9)
QUESTIONS = (
    "How was your day?", "What do you think about Mondays?", "Tell me about the weather today.",
    "What should I cook for dinner?", "Describe your ideal weekend.", "Can you tell me about your job?",
    "How do you spend a rainy afternoon?", "Tell me about a train journey.", "What is your opinion of homework?",
    "What do you think of crowded cities?",
)
CAA_SETS = {  # name -> (positive instruction, negative instruction), prefixed to the same questions
    "happy-sad": ("You are extremely happy and cheerful.", "You are extremely sad and gloomy."),
    "formal-casual": ("Answer in a stiff, formal, bureaucratic register.", "Answer in a relaxed, casual, chatty way."),
    "verbose-terse": ("Answer at great length, with every detail you can think of.", "Answer in as few words as possible."),
    "confident-unsure": ("You are absolutely certain of everything you say.", "You are deeply unsure of everything."),
    "polite-rude": ("You are unfailingly polite and gracious.", "You are curt, rude and dismissive."),
}
INSTRUCTIONS = (  # distilled into steers: the prompt that does what the steer does is known
    "Answer like a grumpy lighthouse keeper.", "Work a reference to volcanoes into your answer.",
    "Answer in the voice of a sports commentator.", "Reply as if you were a very tired robot.",
    "Use a lot of nautical words in your answer.", "Answer as a suspicious detective would.",
    "Respond like an overexcited tour guide.", "Answer as if writing a telegram, in short clipped phrases.",
    "Reply with the solemn tone of a funeral speech.", "Answer like a medieval herald making an announcement.",
    "Sprinkle your answer with gardening metaphors.", "Answer as a sleepy cat would, if cats could talk.",
)
NATURAL = (  # natural prompts whose mean shift is a steer (realizable by construction)
    "Answer as though you were a weary ship captain.", "Mention a specific kind of cheese in your reply.",
    "Respond as if you were an old radio announcer.", "Give your answer a spooky, haunted-house feel.",
    "Answer as if you were explaining it to a golden retriever.", "Describe things using the colors of autumn.",
    "Answer like a chess grandmaster thinking aloud.", "Pretend you are narrating a nature documentary.",
)


def unused_contexts(config: AuditConfig, n: int) -> list[str]:
    contexts = load_corpus("contexts")
    split = ContextSplit.of(contexts, config.n_opt_contexts, config.n_selection, config.n_test, config.seed)
    used = {*split.optimization, *split.selection, *split.test, *split.magnitude}
    return [c for c in contexts if c not in used][:n]


def build(folder: Path, config: AuditConfig) -> list[Path]:
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    files: list[Path] = []

    def save(vector: SteeringVector) -> None:
        path = folder / f"{vector.name}.safetensors"
        if not path.exists():
            save_safetensors([vector], path)
        files.append(path)

    def have(name: str) -> Path | None:  # a vector an interrupted build already wrote (rerun to resume)
        path = folder / f"{name}.safetensors"
        if path.exists():
            files.append(path)
            return path
        return None

    contexts = unused_contexts(config, 8)
    for layer in LAYERS:
        for seed in MELBO_SEEDS:
            if all((folder / f"melbo.L{layer}.s{seed}.{i}.safetensors").exists() for i in range(4)):
                for i in range(4):
                    have(f"melbo.L{layer}.s{seed}.{i}")
                continue
            melbo = MelboConfig(source_layer=layer, n_vectors=4, steps=40, seed=seed, show_progress=False)
            for i, v in enumerate(train_melbo(lm, DEMO_PROMPTS, melbo)):
                save(SteeringVector(directions=v.directions, scale=v.scale, method="melbo",
                                    name=f"melbo.L{layer}.s{seed}.{i}", notes=v.notes))
        for name, (positive, negative) in CAA_SETS.items():
            pairs = [(f"{positive} {q}", f"{negative} {q}") for q in QUESTIONS]
            caa = train_caa(lm, pairs, CaaConfig(layer=layer, show_progress=False), name=name)
            for scale in (4.0, 8.0):
                save(SteeringVector(directions=caa.directions, scale=scale, method="caa",
                                    name=f"caa.{name}.L{layer}.x{scale:g}", notes=f"{positive} | {negative}"))
        for j, prompt in enumerate(INSTRUCTIONS[:DISTILLED_PER_LAYER]):
            if have(f"distill.L{layer}.{j}"):
                continue
            distilled = train_distilled(lm, layout, prompt, layer, contexts, DistillConfig(steps=60, tokens=16))
            save(SteeringVector(directions=distilled.vector.directions, scale=1.0, method="distill",
                                name=f"distill.L{layer}.{j}", notes=prompt))
        shifts = mean_shifts_at(lm, layout, [layer], list(NATURAL), contexts)[layer]
        for j, (prompt, shift) in enumerate(zip(NATURAL, shifts, strict=True)):
            save(SteeringVector(directions={layer: shift}, scale=1.0, method="natural-prompt shift",
                                name=f"natural.L{layer}.{j}", notes=prompt))
        split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                                config.seed)
        corpus = corpus_shifts_at(lm, layout, [layer], split.optimization, fingerprint=model_digest(lm),
                                  cache_dir=cache_root() / "corpus_shifts")[layer]
        natural = corpus.shifts[corpus.select("natural_prompts")[0]]
        gen = torch.Generator().manual_seed(layer)
        melbo = next(f for f in files if f.name.startswith(f"melbo.L{layer}."))
        caa = next(f for f in files if f.name.startswith(f"caa.happy-sad.L{layer}.x4"))
        for kind, source in (("melbo-norm", melbo), ("caa-norm", caa)):
            (vector,) = load_vectors(source)
            norm = float(vector.scale or 1.0) * float(vector.directions[layer].norm())
            for j in range(3):
                save(SteeringVector(directions={layer: natural_nulls(natural, 1, norm, gen)[0]}, scale=1.0,
                                    method="random", name=f"random.{kind}.L{layer}.{j}"))
    # multi-layer steers (repeng / llama.cpp style GGUF control vectors)
    happy, sad = CAA_SETS["happy-sad"]
    pairs = [(f"{happy} {q}", f"{sad} {q}") for q in QUESTIONS]
    per_layer = {i: train_caa(lm, pairs, CaaConfig(layer=i, show_progress=False)).directions[i] for i in MULTI_LAYERS}
    multi = {"caa.happy-sad.L3-9.x4": {i: 4.0 * v for i, v in per_layer.items()}}
    shifts = mean_shifts_at(lm, layout, list(MULTI_LAYERS), list(NATURAL[:2]), contexts)
    for j in range(2):
        multi[f"natural.L3-9.{j}"] = {i: shifts[i][j] for i in MULTI_LAYERS}
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed)
    corpora = corpus_shifts_at(lm, layout, list(MULTI_LAYERS), split.optimization, fingerprint=model_digest(lm),
                               cache_dir=cache_root() / "corpus_shifts")
    gen = torch.Generator().manual_seed(39)
    multi["random.L3-9.0"] = {
        i: natural_nulls(corpora[i].shifts[corpora[i].select("natural_prompts")[0]], 1,
                         float(4.0 * per_layer[i].norm()), gen)[0] for i in MULTI_LAYERS}
    for name, directions in multi.items():
        path = folder / f"{name}.gguf"
        method = name.split(".")[0]
        save_control_vector_gguf(SteeringVector(directions=directions, scale=1.0, name=name, method=method), path,
                                 model_hint=lm.name)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets/audited-steers"))
    args = parser.parse_args()
    config = AuditConfig(budget="quick")
    folder = args.out / "vectors"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    files = build(folder, config)  # vectors already written are kept (a rerun resumes)
    write_json(args.out / "build.json", {"machine": machine(), "vectors": len(files),
                                         "seconds_building_vectors": time.perf_counter() - start})
    print(json.dumps({"vectors": len(files)}))


if __name__ == "__main__":
    main()
