"""Baselines (random search, natural retrieval), the text objectives, and `realize optimize` on the tiny model."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from realize.attacks.base import FrontierPoint
from realize.attacks.baselines import RandomSearchConfig, RetrievalConfig, natural_retrieval, random_search
from realize.attacks.objectives import ActivationShiftObjective, OutputMatchObjective, TargetStringObjective
from realize.data.activations import steer
from realize.data.chat import chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.shift import mean_shift, prompt_shifts
from realize.data.vectors import SteeringVector, save_safetensors

CONTEXTS = ["What is the capital of France?", "How do I bake bread?"]
TRUE_PROMPT = "Explain it like I am five years old."


def _objective(tiny):
    tok = tiny.tokenizer
    layout = chat_layout(tok, "prefix")
    ctxs = [encode(tok, c) for c in CONTEXTS]
    target = mean_shift(prompt_shifts(tiny.model, layout, [encode(tok, TRUE_PROMPT)], ctxs, 2,
                                      pad_id=tok.pad_token_id)[0])
    return ActivationShiftObjective(tiny.model, tok, layout, target, 2, ctxs), layout, ctxs


def test_natural_retrieval_finds_the_true_prompt(tiny):
    obj, _, _ = _objective(tiny)
    prompts = ["You are a pirate.", TRUE_PROMPT, "Please answer briefly.", "Write a short poem about the sea.", ""]
    result = natural_retrieval(obj, tiny, None, RetrievalConfig(prompts=tuple(prompts), batch_size=2, keep=3))
    assert result.best_prompt == TRUE_PROMPT and result.best_loss < 1e-3
    assert all(isinstance(f, FrontierPoint) for f in result.frontier)
    assert [f.rank for f in result.frontier] == [0, 1, 2]
    assert [f.loss for f in result.frontier] == sorted(f.loss for f in result.frontier)
    assert result.frontier[0].ids == result.best_ids and result.frontier[0].prompt == TRUE_PROMPT
    assert result.n_evaluations == 4 and result.attack == "retrieval"
    with pytest.raises(UserInputError):
        natural_retrieval(obj, tiny, None, RetrievalConfig(prompts=("", "  ")))
    with pytest.raises(ValueError, match="init"):
        natural_retrieval(obj, tiny, None, RetrievalConfig(prompts=tuple(prompts)), init=[5])
    with pytest.raises(ValueError, match="prompts"):
        RetrievalConfig(prompts="one prompt")  # a string is not a corpus
    with pytest.raises(ValueError, match="keep"):
        RetrievalConfig(keep=0)


def test_random_search_improves_and_is_deterministic(tiny):
    obj, layout, _ = _objective(tiny)
    config = RandomSearchConfig(steps=5, width=16, length=6, seed=1)
    a = random_search(obj, tiny, layout, config)
    b = random_search(obj, tiny, layout, config)
    assert a.best_ids == b.best_ids and len(a.best_ids) == 6
    losses = [s.best_loss for s in a.trajectory]
    assert losses == sorted(losses, reverse=True) and a.n_evaluations > 5
    start = encode(tiny.tokenizer, "Please answer")  # a start prompt sets the length and the first loss
    c = random_search(obj, tiny, layout, config, init=start)
    assert len(c.best_ids) == len(start) and c.best_loss <= float(obj.losses(torch.tensor([start]))[0])
    with pytest.raises(ValueError, match="width"):
        RandomSearchConfig(width=0)


def test_target_string_objective_matches_full_forward(tiny):
    tok, model = tiny.tokenizer, tiny.model
    obj = TargetStringObjective(model, tok, "Tell me a story", "Sure, here is", batch_size=2)
    prompts = torch.randint(10, 300, (3, 4), generator=torch.Generator().manual_seed(0))
    losses = obj.losses(prompts)
    template = tok.apply_chat_template([{"role": "user", "content": "Tell me a story{optim_str}"}], tokenize=False,
                                       add_generation_prompt=True)
    template = template.removeprefix(tok.bos_token)  # nanoGCG drops a leading BOS text (here "<|im_start|>")
    before, after = template.split("{optim_str}")
    target = encode(tok, "Sure, here is")
    for b in range(3):
        ids = encode(tok, before) + prompts[b].tolist() + encode(tok, after) + target
        logits = model(torch.tensor([ids])).logits[0]
        n = len(target)
        ce = F.cross_entropy(logits[len(ids) - n - 1 : len(ids) - 1], torch.tensor(target))
        assert losses[b].item() == pytest.approx(ce.item(), abs=1e-4)
    loss, grad = obj.loss_and_grad(prompts[0])
    assert loss == pytest.approx(losses[0].item(), abs=1e-4) and grad.shape == (4, model.config.vocab_size)
    # first-order sanity: the gradient's best swap beats its worst swap on average
    best, worst = prompts[0].repeat(4, 1), prompts[0].repeat(4, 1)
    for i in range(4):
        best[i, i], worst[i, i] = int(grad[i, 3:].argmin()) + 3, int(grad[i, 3:].argmax()) + 3
    assert obj.losses(best).mean() < obj.losses(worst).mean()


@pytest.mark.parametrize("buckets", [2, 4, 8])
def test_target_string_prefix_sharing_is_exact(tiny, buckets):
    """GCG-like batch (single swaps of one prompt at random positions, a duplicate, an unrelated row): the losses
    with prefix KV sharing equal those computed one candidate at a time without it."""
    obj = TargetStringObjective(tiny.model, tiny.tokenizer, "Tell me a story", "Sure, here is", batch_size=3,
                                share_buckets=buckets)
    plain = TargetStringObjective(tiny.model, tiny.tokenizer, "Tell me a story", "Sure, here is", share_buckets=1)
    g = torch.Generator().manual_seed(1)
    current = torch.randint(10, 300, (9,), generator=g)
    cands = current.repeat(12, 1)
    cands[torch.arange(10), torch.randint(0, 9, (10,), generator=g)] = torch.randint(10, 300, (10,), generator=g)
    cands[11] = torch.randint(10, 300, (9,), generator=g)  # row 10 stays equal to the current prompt
    shared = obj.losses(cands)
    single = torch.cat([plain.losses(c.unsqueeze(0)) for c in cands])
    assert torch.allclose(shared, single, atol=1e-5)
    with pytest.raises(ValueError, match="share_buckets"):
        TargetStringObjective(tiny.model, tiny.tokenizer, "Tell me", "Sure", share_buckets=0)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_output_match_objective_matches_oracle(tiny, placement):
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok, placement)
    ctxs = [encode(tok, c) for c in CONTEXTS]
    vector = 3 * torch.randn(32, generator=torch.Generator().manual_seed(0))
    obj = OutputMatchObjective(model, tok, layout, vector, 2, ctxs, batch_size=2)
    prompts = torch.randint(10, 300, (3, 4), generator=torch.Generator().manual_seed(1))
    losses = obj.losses(prompts)
    for b in range(3):
        total, n = 0.0, 0
        for ctx in ctxs:
            base, placed = layout.place(None, ctx), layout.place(prompts[b].tolist(), ctx)
            with steer(model, {2: vector}, 1.0), torch.no_grad():
                p = F.log_softmax(model(torch.tensor([base.ids])).logits[0, list(base.aligned)], -1)
            with torch.no_grad():
                q = F.log_softmax(model(torch.tensor([placed.ids])).logits[0, list(placed.aligned)], -1)
            total += float((p.exp() * (p - q)).sum())
            n += len(base.aligned)
        assert losses[b].item() == pytest.approx(total / n, abs=1e-4)
    loss, grad = obj.loss_and_grad(prompts[0])
    assert loss == pytest.approx(losses[0].item(), abs=1e-4) and grad.abs().sum() > 0


# ---- realize optimize on the tiny model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


def _cli(argv):
    from realize.commands import optimize

    parser = argparse.ArgumentParser()
    optimize.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _vector(tmp_path, dim=32, layer=2, name="v.safetensors"):
    path = tmp_path / name
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    save_safetensors([SteeringVector(directions={layer: v / v.norm()}, scale=2.0, name="test")], path)
    return path


@pytest.mark.parametrize("attack", ["gcg", "random", "retrieval"])
def test_optimize_cli_writes_json(tmp_path, tiny_dir, attack):
    out = tmp_path / "run.json"
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--attack", attack, "--steps", "2",
            "--width", "8", "--topk", "8", "--length", "4", "--contexts", "3", "--heldout", "2", "--quiet",
            "--out", str(out)]
    assert _cli(argv) == 0
    data = json.loads(out.read_text())
    assert data["best_prompt"] and data["best_ids"] and data["attack"] == attack
    for part in ("opt", "heldout"):
        assert {"cos", "specific_cos", "per_position_cos", "norm_ratio"} <= set(data[part])
    assert len(data["contexts"]["heldout"]) == 2 and data["trajectory"]


def test_optimize_cli_gcg_starts_from_retrieval(tmp_path, tiny_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a short poem about the sea.\nYou are a pirate.\n", encoding="utf-8")
    out = tmp_path / "run.json"
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--attack", "gcg", "--init-from",
            "retrieval", "--prompts", str(prompts), "--steps", "2", "--width", "8", "--topk", "8", "--contexts", "3",
            "--heldout", "2", "--quiet", "--out", str(out)]
    assert _cli(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["attack"]["init_from"] == "retrieval"
    assert data["config"]["attack"]["init_prompt_text"] in {"Write a short poem about the sea.", "You are a pirate."}
    assert data["seconds"] >= data["config"]["attack"]["init_seconds"] > 0
    with pytest.raises(UserInputError, match="--init and --init-from"):
        _cli([*argv, "--init", "hello"])
    with pytest.raises(UserInputError, match="take a start prompt, not --attack beam"):
        _cli([*argv, "--attack", "beam"])
    with pytest.raises(UserInputError, match="--init: only .* take a start prompt, not --attack retrieval"):
        _cli([*argv[:4], "--attack", "retrieval", "--init", "hello", *argv[8:]])


def test_optimize_cli_init_text_and_flag_aliases(tmp_path, tiny_dir):
    """--init (text) starts gcg; --topk is an alias of --top-k; the frontier is written as typed points."""
    out = tmp_path / "run.json"
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--attack", "gcg", "--init",
            "Please answer", "--steps", "1", "--width", "4", "--topk", "5", "--contexts", "2", "--heldout", "2",
            "--quiet", "--out", str(out)]
    assert _cli(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["attack"]["top_k"] == 5 and data["config"]["attack"]["ascii_only"] is True
    assert data["trajectory"][0]["step"] == 0 and data["n_evaluations"] >= 1
    with pytest.raises(UserInputError, match="--init: expected non-empty text"):
        _cli([*argv[:6], "--init", "  ", *argv[8:]])
    retrieval = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--attack", "retrieval", "--contexts",
                 "2", "--heldout", "2", "--quiet", "--out", str(out)]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a short poem about the sea.\nYou are a pirate.\nPlease answer.\n", encoding="utf-8")
    assert _cli([*retrieval, "--prompts", str(prompts)]) == 0
    frontier = json.loads(out.read_text())["frontier"]
    assert [p["rank"] for p in frontier] == [0, 1, 2] and all(p["cos"] is None for p in frontier)


@pytest.mark.parametrize(
    "extra,match",
    [(["--width", "0"], "width"), (["--length", "0"], "length"), (["--steps", "0"], "steps"),
     (["--attack", "nope"], "attack"), (["--contexts", "0"], "contexts")],
)
def test_optimize_cli_bad_options(tmp_path, tiny_dir, extra, match):
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--out", str(tmp_path / "o.json"),
            "--quiet", "--contexts", "2", "--heldout", "2", *extra]
    with pytest.raises(UserInputError, match=match):
        _cli(argv)


def test_optimize_cli_bad_vectors_and_files(tmp_path, tiny_dir):
    base = ["--model", str(tiny_dir), "--out", str(tmp_path / "o.json"), "--quiet", "--steps", "1"]
    with pytest.raises(UserInputError, match="dimension"):
        _cli(["optimize", str(_vector(tmp_path, dim=31, name="a.safetensors")), *base])
    with pytest.raises(UserInputError, match="out of range"):
        _cli(["optimize", str(_vector(tmp_path, layer=9, name="b.safetensors")), *base])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(UserInputError):
        _cli(["optimize", str(_vector(tmp_path)), *base, "--contexts-file", str(empty)])
    assert not (tmp_path / "o.json").exists()


def test_optimize_cli_tokenizer_without_chat_template(tmp_path, tiny):
    """A base model (no chat template) optimizes in the plain layout; it has no system turn."""
    plain = tiny.tokenizer.__class__(tokenizer_object=tiny.tokenizer.backend_tokenizer, pad_token="<|im_end|>",
                                     bos_token="<|im_start|>")
    model_dir = tmp_path / "no-template"
    tiny.model.save_pretrained(model_dir)
    plain.save_pretrained(model_dir)
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(model_dir), "--out", str(tmp_path / "o.json"),
            "--quiet", "--steps", "1", "--contexts", "2", "--heldout", "2"]
    assert _cli(argv) == 0
    assert json.loads((tmp_path / "o.json").read_text())["best_ids"]
    with pytest.raises(UserInputError, match="chat template"):
        _cli([*argv, "--placement", "system"])


def test_optimize_cli_default_is_natural_from_retrieval(tmp_path, tiny_dir):
    """Without --attack: natural GCG started from the best prompt of the retrieval corpus (--prompts)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a short poem about the sea.\nYou are a pirate.\n", encoding="utf-8")
    out = tmp_path / "run.json"
    argv = ["optimize", str(_vector(tmp_path)), "--model", str(tiny_dir), "--prompts", str(prompts), "--steps", "2",
            "--width", "8", "--contexts", "2", "--heldout", "2", "--quiet", "--out", str(out)]
    assert _cli(argv) == 0
    data = json.loads(out.read_text())
    assert data["attack"] == "natural" and data["config"]["attack"]["init_from"] == "retrieval"
    assert data["config"]["attack"]["init_prompt_text"] in {"Write a short poem about the sea.", "You are a pirate."}
