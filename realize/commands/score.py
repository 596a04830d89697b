"""`realize score PROMPTS.txt|.jsonl --out scores.jsonl`: perplexity and realism of each prompt.

One JSON object per prompt: prompt, n_tokens, perplexity and worst_window_perplexity (in the chat turn, the
prompt's real position), alone_perplexity and alone_worst_window_perplexity (after BOS only), realism
(P(natural) from the shipped classifier), natural (realism >= the classifier's threshold), truncated.

Bad input: a missing, empty or non-UTF-8 file, or a bad .jsonl line: one-line error, exit 2. Blank lines are
skipped with a count. Prompts longer than the model's context are truncated with a warning (and flagged). Missing
classifier weights fail before the model loads. The output is written to a temp file and renamed.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from realize.data.atomic import write_text_atomic
from realize.data.chat import encode
from realize.data.corpora import read_prompt_file
from realize.data.models import load_model
from realize.data.safe_text import jsonl_line
from realize.commands.common import add_model_argument, build_config, load_model_arg
from realize.scorers.perplexity import PerplexityConfig, score_perplexity
from realize.scorers.realism import load_classifier, realism_scores

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="perplexity and realism (P(natural)) of each prompt in a file")
    parser.add_argument("prompts", metavar="PROMPTS", help=".txt (one prompt per line) or .jsonl ({\"prompt\": ...})")
    parser.add_argument("--out", required=True, help="output .jsonl, one object per prompt")
    parser.add_argument("--weights", default=None, help="realism classifier weights (default: the shipped ones)")
    parser.add_argument("--no-realism", action="store_true", help="skip the realism classifier")
    parser.add_argument("--window", type=int, default=10, help="worst-window length in tokens (default 10)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward (default 16)")
    parser.add_argument("--fluency-model", default=None, metavar="M",
                        help="optional held-out fluency model (HF directory or .gguf, e.g. Gemma 3 270M): adds "
                        "fluency_perplexity / fluency_worst_window_perplexity (prompt alone) to each row")
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def _blank_lines(path: str) -> int:
    """Blank or whitespace-only lines in a prompt file (read_prompt_file skips them)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the final newline
    return sum(1 for line in lines if not line.strip())


def _finite(x: float | None) -> float | None:
    """JSON has no NaN/inf: write null instead."""
    return None if x is None or not math.isfinite(x) else x


def write_jsonl_atomic(path: str, rows: list[dict[str, object]]) -> None:
    write_text_atomic(path, "".join(jsonl_line(row) for row in rows))


def _run(args: argparse.Namespace) -> int:
    config = build_config(PerplexityConfig, {"window": args.window, "batch_size": args.batch_size})
    prompts = read_prompt_file(args.prompts)
    blank = _blank_lines(args.prompts)
    if blank:
        print(f"realize score: skipped {blank} blank line(s) in {args.prompts}", file=sys.stderr)
    classifier = None if args.no_realism else load_classifier(args.weights)  # fail before loading the model
    lm = load_model_arg(args)
    scores = score_perplexity(lm, prompts, config)
    realism: list[float | None] = [None] * len(prompts)
    if classifier is not None:
        # Score what the model saw: a truncated prompt's realism is that of its kept tokens.
        seen = [
            lm.tokenizer.decode(encode(lm.tokenizer, s.prompt)[: s.n_tokens]) if s.truncated else s.prompt
            for s in scores
        ]
        realism = list(realism_scores(lm, seen, classifier, batch_size=args.batch_size))
    rows: list[dict[str, object]] = []
    for s, r in zip(scores, realism, strict=True):
        rows.append(
            {
                "prompt": s.prompt,
                "n_tokens": s.n_tokens,
                "perplexity": _finite(s.perplexity),
                "worst_window_perplexity": _finite(s.worst_window_perplexity),
                "alone_perplexity": _finite(s.alone_perplexity),
                "alone_worst_window_perplexity": _finite(s.alone_worst_window_perplexity),
                "realism": _finite(r),
                "natural": None if r is None or classifier is None else bool(r >= classifier.threshold),
                "truncated": s.truncated,
            }
        )
    if args.fluency_model:
        judge = load_model(args.fluency_model)
        for row, f in zip(rows, score_perplexity(judge, prompts, config), strict=True):
            row["fluency_model"] = judge.name
            row["fluency_perplexity"] = _finite(f.alone_perplexity)
            row["fluency_worst_window_perplexity"] = _finite(f.alone_worst_window_perplexity)
    write_jsonl_atomic(args.out, rows)
    n_natural = sum(1 for row in rows if row["natural"])
    summary = f"; {n_natural} judged natural" if classifier is not None else ""
    print(f"scored {len(rows)} prompt(s) with {lm.name}{summary}; wrote {args.out}")
    return 0
