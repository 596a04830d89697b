"""Behavior recovery: the formula's exact cases, bounds and symmetry; the pipeline on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from realize.scorers.behavior import (
    BehaviorConfig,
    behavior_recovery,
    bootstrap_interval,
    forced_logits,
    greedy_batch,
    kl_rows,
    recovery_from_logits,
)


def _logits(seed: int, t: int = 5, v: int = 11) -> torch.Tensor:
    return torch.randn(t, v, generator=torch.Generator().manual_seed(seed)) * 2


def test_formula_exact_cases_and_bounds() -> None:
    s, b = _logits(0), _logits(1)
    assert recovery_from_logits(s, s.clone(), b)[0] == pytest.approx(1.0)  # prompted == steered
    assert recovery_from_logits(s, b.clone(), b)[0] == pytest.approx(0.0, abs=1e-12)  # prompted == base
    assert recovery_from_logits(s, s + 5.0, b)[0] == pytest.approx(1.0)  # softmax is shift-invariant
    for seed in range(2, 12):
        r, kl_sp, kl_sb = recovery_from_logits(s, _logits(seed), b)
        assert r <= 1.0 and kl_sp >= 0 and kl_sb > 0
    mid = recovery_from_logits(s, (s + b) / 2, b)[0]
    assert 0.0 < mid < 1.0  # half-way logits recover part of the behavior


def test_swapping_prompted_and_base_inverts_the_ratio() -> None:
    s, p, b = _logits(3), _logits(4), _logits(5)
    r1, r2 = recovery_from_logits(s, p, b)[0], recovery_from_logits(s, b, p)[0]
    assert (1 - r1) * (1 - r2) == pytest.approx(1.0)


def test_undefined_when_vector_changes_nothing() -> None:
    s = _logits(6)
    assert math.isnan(recovery_from_logits(s, _logits(7), s.clone())[0])


def test_kl_rows_matches_torch() -> None:
    p, q = _logits(8), _logits(9)
    lq, lp = torch.log_softmax(q, -1), torch.log_softmax(p, -1)
    ref = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl_rows(p, q).float(), ref, atol=1e-5, rtol=1e-5)


def test_bootstrap_interval_contains_mean() -> None:
    values = [0.1, 0.5, 0.9, 0.3, math.nan]
    lo, hi = bootstrap_interval(values, 500, 0.95, 0)
    assert lo <= 0.45 <= hi and lo >= 0.1 and hi <= 0.9
    assert all(math.isnan(x) for x in bootstrap_interval([math.nan], 10, 0.9, 0))


def test_forced_logprobs_match_unbatched(tiny) -> None:
    inputs, ys = [[1, 5, 6, 7], [1, 9]], [[10, 11, 12], [13]]
    batched = forced_logits(tiny, inputs, ys, batch_size=2)
    for x, y, got in zip(inputs, ys, batched, strict=True):
        full = torch.log_softmax(tiny.model(input_ids=torch.tensor([x + y])).logits[0], dim=-1)
        torch.testing.assert_close(got, full[len(x) - 1 : len(x) - 1 + len(y)], atol=1e-4, rtol=1e-4)


def test_greedy_batch_first_token_matches_argmax(tiny) -> None:
    rows = [[1, 5, 6, 7, 8], [1, 9]]
    outs = greedy_batch(tiny, rows, 3, batch_size=2)
    for row, out in zip(rows, outs, strict=True):
        assert 1 <= len(out) <= 3
        logits = tiny.model(input_ids=torch.tensor([row])).logits[0, -1]
        assert out[0] == int(logits.argmax())


CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?", "Write a short poem about the sea."]


def _vector(tiny, seed: int = 0) -> dict[int, torch.Tensor]:
    return {1: torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(seed))}


def test_pipeline_prompt_equal_to_default_system_is_zero(tiny) -> None:
    # The tiny template's default system message: placing it as the system prompt rebuilds the base input exactly.
    result = behavior_recovery(
        tiny, _vector(tiny), 4.0, "You are a helpful assistant.", CONTEXTS, "system", BehaviorConfig(max_new_tokens=6)
    )
    assert result.recovery == pytest.approx(0.0, abs=1e-4)
    assert all(c.kl_steered_base > 0 for c in result.per_context)
    assert all(c.kl_steered_prompted == pytest.approx(c.kl_steered_base, rel=1e-4) for c in result.per_context)


def test_pipeline_outputs_and_bounds(tiny) -> None:
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    hooks_before = [dict(block._forward_hooks) for block in tiny.model.model.layers]  # transformers' own, if any
    result = behavior_recovery(tiny, _vector(tiny, 1), 4.0, "Explain it like I am five years old.", CONTEXTS,
                               config=BehaviorConfig(max_new_tokens=5, n_bootstrap=200))
    assert len(result.per_context) == len(CONTEXTS)
    for c in result.per_context:
        assert c.recovery <= 1.0 and 1 <= c.n_positions <= 5
        assert all(isinstance(x, str) for x in (c.steered, c.prompted, c.base))  # random model: may decode to ''
    lo, hi = result.interval
    assert lo <= result.recovery <= hi
    assert result.pooled_recovery <= 1.0
    assert [dict(block._forward_hooks) for block in tiny.model.model.layers] == hooks_before  # steering hooks removed
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        BehaviorConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="confidence"):
        BehaviorConfig(confidence=1.0)


# --- `realize behavior` on the tiny model saved to disk ----------------------------------------------------------

import argparse  # noqa: E402
import json  # noqa: E402

from realize.data.errors import UserInputError  # noqa: E402
from realize.data.vectors import SteeringVector  # noqa: E402


def _run_cli(argv: list[str]) -> int:
    from realize.commands import behavior

    parser = argparse.ArgumentParser()
    behavior.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, tiny) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    vec = SteeringVector(directions=_vector(tiny, 2), scale=4.0, name="rand")
    vec_path = path / "v.safetensors"
    vec.save(vec_path)
    return str(path), str(vec_path)


def test_behavior_cli_prints_and_writes(tiny_files, tmp_path, capsys) -> None:
    model_dir, vec_path = tiny_files
    out = tmp_path / "b.json"
    code = _run_cli(["behavior", vec_path, "--prompt", "You are a pirate.", "--model", model_dir, "--tokens", "4",
                     "--contexts", "3", "--json", str(out), "--force"])
    assert code == 0
    text = capsys.readouterr().out
    assert "behavior recovery" in text and text.count("steered :") == 3
    payload = json.loads(out.read_text())
    assert len(payload["results"][0]["per_context"]) == 3


def test_behavior_cli_bad_arguments(tiny_files) -> None:
    model_dir, vec_path = tiny_files
    with pytest.raises(UserInputError, match="--prompt"):
        _run_cli(["behavior", vec_path, "--prompt", "   ", "--model", model_dir])
    with pytest.raises(UserInputError, match="--contexts"):
        _run_cli(["behavior", vec_path, "--prompt", "hi", "--contexts", "0", "--model", model_dir])
    with pytest.raises(UserInputError, match="max_new_tokens"):
        _run_cli(["behavior", vec_path, "--prompt", "hi", "--tokens", "0", "--model", model_dir])


def test_tiny_vector_flagged_inert(tiny) -> None:
    small = behavior_recovery(tiny, _vector(tiny), 1e-4, "You are a pirate.", CONTEXTS[:2],
                              config=BehaviorConfig(max_new_tokens=3, n_bootstrap=10))
    big = behavior_recovery(tiny, _vector(tiny), 50.0, "You are a pirate.", CONTEXTS[:2],
                            config=BehaviorConfig(max_new_tokens=3, n_bootstrap=10, min_effect_kl=1e-6))
    assert small.inert and not big.inert


@pytest.mark.slow
def test_real_model_default_system_prompt_recovers_nothing() -> None:
    # SmolLM2's template inserts this system message when none is given: as the system prompt it rebuilds the
    # base input exactly, so whatever the vector does, recovery is 0.
    from realize.data.models import load_model

    lm = load_model()
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    v = {8: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0))}
    result = behavior_recovery(lm, v, 8.0, system, CONTEXTS[:2], "system", BehaviorConfig(max_new_tokens=6))
    assert not result.inert
    assert result.recovery == pytest.approx(0.0, abs=1e-3)


def test_measure_prompts_matches_behavior_recovery_and_reads_direction(tiny) -> None:
    """The audit's batched measure agrees with the CLI's behavior_recovery, and a prompt identical in effect to
    the vector has direction cos 1 and ratio 1."""
    from realize.data.chat import chat_layout, encode
    from realize.data.steered import steered_contexts
    from realize.scorers.behavior import measure_prompts

    layout = chat_layout(tiny.tokenizer)
    vector = _vector(tiny)
    steered = steered_contexts(tiny, layout, vector, 8.0, CONTEXTS[:3], 6)
    prompt = "Explain it like I am five years old."
    (m,) = measure_prompts(tiny, layout, steered, [encode(tiny.tokenizer, prompt)])
    ref = behavior_recovery(tiny, vector, 8.0, prompt, CONTEXTS[:3], "prefix", BehaviorConfig(max_new_tokens=6))
    assert m.recovery == pytest.approx(ref.pooled_recovery, rel=1e-3, abs=1e-5)  # batch padding: float noise only
    assert m.recovery == pytest.approx(1 - sum(m.kl_sums) / sum(m.effect_sums), abs=1e-9)  # pooled, not a mean
    assert -1.0 <= m.direction_cos <= 1.0 and m.effect > 0 and m.prompt_effect >= 0


def test_unrelated_panel_avoids_the_vectors_neighbours() -> None:
    """The generic baseline's panel: one prompt per cluster, none from a cluster of the prompts closest to the
    steer's first-answer effect, the same for the same seed."""
    from realize.axes.behavior import RELATED, rank_by_behavior, unrelated_panel
    from realize.data.steered import SteeredContext
    from realize.prompt_effects import PromptEffects

    v, n = 7, 80
    gen = torch.Generator().manual_seed(0)
    effects = torch.randn(n, v, generator=gen)
    clusters = tuple(f"c{i // 2}" for i in range(n))  # 40 clusters of 2
    base = torch.log_softmax(torch.zeros(1, v), -1)
    steered = torch.log_softmax(effects[5:6] * 3, -1)  # the steer pushes like prompt 5
    opt = [SteeredContext("ctx", (1,), (1,), (2,), steered, base)]
    table = PromptEffects.of(tuple(f"p{i}" for i in range(n)), clusters, effects)
    ranking = rank_by_behavior(table, opt)
    related = {clusters[i] for i in ranking[:RELATED]}
    panel = unrelated_panel(table, opt, 4, seed=3)
    assert len(panel) == 4 and panel == unrelated_panel(table, opt, 4, seed=3)
    picked = [clusters[int(p[1:])] for p in panel]
    assert len(set(picked)) == 4 and not set(picked) & related and "c2" in related  # prompt 5's own cluster
    assert len(unrelated_panel(table, opt, 100, seed=3)) == len(set(clusters) - related)


def test_sparse_prompt_effects_rank_like_dense_ones() -> None:
    """Keeping each prompt's largest first-answer changes: the cosine with a steer's change equals the dense one
    when nothing is dropped, and stays close when only the largest are kept."""
    from realize.prompt_effects import PromptEffects

    gen = torch.Generator().manual_seed(1)
    dense = torch.randn(30, 500, generator=gen) * (torch.rand(30, 500, generator=gen) < 0.05)  # sparse-ish rows
    steer = dense[3] + 0.1 * torch.randn(500, generator=gen)
    full = PromptEffects.of(tuple(map(str, range(30))), tuple(map(str, range(30))), dense, top_k=500)
    exact = (dense @ steer) / (dense.norm(dim=1) * steer.norm())
    assert torch.allclose(full.cosine(steer, list(range(30))), exact, atol=1e-5)
    kept = PromptEffects.of(full.prompts, full.clusters, dense, top_k=40)
    assert int(kept.cosine(steer, list(range(30))).argmax()) == 3
