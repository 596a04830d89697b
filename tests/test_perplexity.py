"""Perplexity: oracle against unbatched forwards, windows, truncation, config validation."""

from __future__ import annotations

import math

import pytest
import torch

from realize.data.chat import chat_layout, encode
from realize.scorers.perplexity import (
    PerplexityConfig,
    mean_perplexity,
    score_perplexity,
    token_surprisals,
    worst_window_perplexity,
)

PROMPTS = ["Explain it like I am five years old.", "zq xx", "You are a pirate. Answer every question like a pirate."]


def _unbatched(lm, prefix: list[int], target: list[int]) -> list[float]:
    ids = torch.tensor([prefix + target])
    logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
    start = max(len(prefix), 1)
    return [-logp[j - 1, ids[0, j]].item() for j in range(start, ids.shape[1])]


def test_batched_matches_unbatched(tiny) -> None:
    scores = score_perplexity(tiny, PROMPTS, PerplexityConfig(batch_size=2, window=3))
    head = list(chat_layout(tiny.tokenizer).head)
    bos = [tiny.tokenizer.bos_token_id]
    for prompt, score in zip(PROMPTS, scores, strict=True):
        ids = encode(tiny.tokenizer, prompt)
        assert score.n_tokens == len(ids) == len(score.surprisals) == len(score.alone_surprisals)
        chat_ref, alone_ref = torch.tensor(_unbatched(tiny, head, ids)), torch.tensor(_unbatched(tiny, bos, ids))
        torch.testing.assert_close(torch.tensor(score.surprisals), chat_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.tensor(score.alone_surprisals), alone_ref, atol=1e-4, rtol=1e-4)
        assert score.perplexity == pytest.approx(math.exp(sum(score.surprisals) / len(ids)))
        assert score.worst_window_perplexity >= score.perplexity - 1e-6
        assert not score.truncated


def test_token_budget_batches_agree(tiny) -> None:
    a = score_perplexity(tiny, PROMPTS, PerplexityConfig(batch_size=16))
    b = score_perplexity(tiny, PROMPTS, PerplexityConfig(batch_size=16, max_batch_tokens=1))
    for x, y in zip(a, b, strict=True):
        assert x.perplexity == pytest.approx(y.perplexity, rel=1e-4)


@pytest.mark.parametrize("batch_size", [2, 16])
def test_skipping_alone_keeps_chat_numbers(tiny, batch_size: int) -> None:
    """`alone=False` (used by the audit's naturalness) leaves every chat-position number bit-identical, also when
    the alone rows would have shared the chat rows' batches (prompts of many lengths)."""
    prompts = [*PROMPTS, "a", "Tell me a story about a dragon and a knight who become friends over tea in winter."]
    config = PerplexityConfig(batch_size=batch_size, window=3)
    full = score_perplexity(tiny, prompts, config)
    chat_only = score_perplexity(tiny, prompts, config, alone=False)
    for a, b in zip(full, chat_only, strict=True):
        assert (a.perplexity, a.worst_window_perplexity, a.surprisals) == (
            b.perplexity, b.worst_window_perplexity, b.surprisals)
        assert a.alone_surprisals and not b.alone_surprisals and math.isnan(b.alone_perplexity)


def test_no_prefix_skips_first_token(tiny) -> None:
    out = token_surprisals(tiny, [[], [5]], [[7, 8, 9], [7, 8, 9]])
    assert len(out[0]) == 2 and len(out[1]) == 3


def test_windows() -> None:
    s = [1.0] * 10 + [5.0] * 10 + [1.0] * 5
    assert worst_window_perplexity(s, 10) == pytest.approx(math.exp(5.0))
    assert worst_window_perplexity([2.0, 4.0], 10) == pytest.approx(math.exp(3.0))
    assert mean_perplexity(s) == pytest.approx(math.exp(sum(s) / len(s)))
    assert math.isnan(mean_perplexity([]))


def test_truncation_flagged(tiny, caplog) -> None:
    long = "the quick brown fox " * 40
    (score,) = score_perplexity(tiny, [long], PerplexityConfig(max_prompt_tokens=12))
    assert score.truncated and score.n_tokens == 12
    assert "truncated" in caplog.text


def test_empty_prompt_and_config_errors(tiny) -> None:
    with pytest.raises(ValueError, match="prompt 1"):
        score_perplexity(tiny, ["hello", ""])
    with pytest.raises(ValueError, match="window"):
        PerplexityConfig(window=0)
    with pytest.raises(ValueError, match="batch_size"):
        PerplexityConfig(batch_size=0)


def test_no_chat_template_chat_position_is_after_bos(tiny) -> None:
    """A base model's prompts start the text after BOS (data.chat's plain layout): chat position = alone."""
    import copy

    from realize.data.models import LoadedModel

    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    bare = LoadedModel(model=tiny.model, tokenizer=tok, name="bare", path="<test>")
    (score,) = score_perplexity(bare, ["Explain it like I am five."])
    (ref,) = score_perplexity(tiny, ["Explain it like I am five."])
    assert score.perplexity == pytest.approx(score.alone_perplexity, rel=1e-5) and len(score.surprisals) > 0
    assert score.alone_perplexity == pytest.approx(ref.alone_perplexity, rel=1e-4)
    assert score.perplexity != pytest.approx(ref.perplexity, rel=1e-3)  # the chat model's head differs


def test_no_chat_template_nor_bos_scores_alone_only(tiny) -> None:
    import copy

    from realize.data.models import LoadedModel

    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    tok.bos_token = None
    bare = LoadedModel(model=tiny.model, tokenizer=tok, name="bare", path="<test>")
    (score,) = score_perplexity(bare, ["Explain it like I am five."])
    assert math.isnan(score.perplexity) and score.surprisals == ()
    assert not math.isnan(score.alone_perplexity)


@pytest.mark.slow
def test_real_model_separates_natural_from_gibberish() -> None:
    from realize.data.models import load_model

    lm = load_model()
    natural, gibberish = score_perplexity(
        lm, ["Explain it like I am five years old.", "ounced)=\\ Ingredients cornerstone.scalablytyped quaint"]
    )
    assert natural.perplexity * 10 < gibberish.perplexity
    assert natural.alone_perplexity * 10 < gibberish.alone_perplexity


# --- `realize score` on the tiny model saved to disk -------------------------------------------------------------

import argparse  # noqa: E402
import json  # noqa: E402

from realize.data.errors import UserInputError  # noqa: E402


def _run_cli(argv: list[str]) -> int:
    from realize.commands import score

    parser = argparse.ArgumentParser()
    score.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny) -> str:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from realize.scorers.realism import RealismTrainConfig, fit_classifier, save_classifier
    from realize.scorers.realism import FEATURE_NAMES

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, len(FEATURE_NAMES), generator=g)
    y = (x[:, 0] > 0).float()
    path = tmp_path_factory.mktemp("w") / "realism.json"
    save_classifier(fit_classifier(x, y, FEATURE_NAMES, RealismTrainConfig(steps=5)), path)
    return str(path)


def test_score_cli_writes_one_row_per_prompt(tiny_dir, weights, tmp_path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Explain it like I am five.\n   \n\nzq;; xx\n", encoding="utf-8")
    out = tmp_path / "out" / "scores.jsonl"
    assert _run_cli(["score", str(prompts), "--model", tiny_dir, "--out", str(out), "--weights", weights]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == ["Explain it like I am five.", "zq;; xx"]
    for r in rows:
        assert r["perplexity"] > 1 and r["worst_window_perplexity"] >= r["perplexity"] - 1e-6
        assert 0.0 <= r["realism"] <= 1.0 and r["alone_perplexity"] > 1
    assert "skipped 2 blank" in capsys.readouterr().err


def test_score_cli_fluency_model(tiny_dir, tmp_path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Explain it like I am five.\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    assert _run_cli(["score", str(prompts), "--model", tiny_dir, "--out", str(out), "--no-realism",
                     "--fluency-model", tiny_dir]) == 0
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["realism"] is None and row["fluency_perplexity"] == pytest.approx(row["alone_perplexity"], rel=1e-4)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "no prompts"), (b"  \n\t\n", "no prompts"), (b"caf\xe9 au lait\n", "UTF-8")],
)
def test_score_cli_bad_input(tiny_dir, weights, tmp_path, content: bytes, match: str) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(content)
    out = tmp_path / "scores.jsonl"
    with pytest.raises(UserInputError, match=match):
        _run_cli(["score", str(prompts), "--model", tiny_dir, "--out", str(out), "--weights", weights])
    assert not out.exists()


def test_score_cli_missing_weights(tiny_dir, tmp_path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    with pytest.raises(UserInputError, match="nope.json.*train-realism"):
        _run_cli(["score", str(prompts), "--model", tiny_dir, "--out", str(out),
                  "--weights", str(tmp_path / "nope.json")])
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_score_cli_truncates_long_prompts(tiny_dir, weights, tmp_path, caplog) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("the quick brown fox jumps " * 80 + "\n", encoding="utf-8")  # > 256 positions of the tiny model
    out = tmp_path / "scores.jsonl"
    assert _run_cli(["score", str(prompts), "--model", tiny_dir, "--out", str(out), "--weights", weights]) == 0
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["truncated"] and row["n_tokens"] < 256 and math.isfinite(row["realism"])
    assert "truncated" in caplog.text
