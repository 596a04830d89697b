"""A small built-in contrastive set for CAA: the same questions asked by a cheerful vs a gloomy persona instruction.

Written for this project (CC0). Users pass their own pairs as JSONL: {"positive": "...", "negative": "..."}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from realize.data.errors import UserInputError
from realize.data.safe_text import is_encodable

_QUESTIONS = (
    "How was your day?",
    "What do you think about Mondays?",
    "Tell me about the weather today.",
    "What should I cook for dinner?",
    "How do you feel about getting older?",
    "Describe your ideal weekend.",
    "What is the best thing about winter?",
    "Can you tell me about your job?",
    "What do you think of crowded cities?",
    "How do you spend a rainy afternoon?",
    "What is your opinion of homework?",
    "Tell me about a train journey.",
)
_POSITIVE = "You are extremely happy and cheerful. "
_NEGATIVE = "You are extremely sad and gloomy. "


def builtin_pairs() -> list[tuple[str, str]]:
    """(positive, negative) user messages: happy vs sad persona, same question."""
    return [(_POSITIVE + q, _NEGATIVE + q) for q in _QUESTIONS]


def read_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read JSONL pairs with string fields "positive" and "negative"."""
    file = Path(path)
    try:
        # split on "\n" only: splitlines() would also cut at U+2028/U+0085, which are valid inside JSON strings
        lines = file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"{file}: cannot read as UTF-8 text ({err})") from err
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = (row["positive"], row["negative"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserInputError(
                f"{file}:{number}: expected a JSON object with string fields 'positive' and 'negative'"
            ) from err
        if not all(isinstance(x, str) and x.strip() for x in pair):
            raise UserInputError(f"{file}:{number}: 'positive' and 'negative' must be non-empty strings")
        if not is_encodable("".join(pair)):
            raise UserInputError(f"{file}:{number}: a lone surrogate escape (\\ud800-\\udfff); expected valid "
                                 "Unicode text")
        pairs.append(pair)
    if not pairs:
        raise UserInputError(f"{file}: no pairs found")
    return pairs
