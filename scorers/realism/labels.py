"""Hand and reader labels read by the realism dataset: mined search outputs and reader-checked corruptions.

- mined prompts (`scorers/weights/realism_mined.jsonl`): rows `text, generator, target, parent, label` (0 unnatural,
  1 natural-looking, null unsure);
- reader labels (`scorers/weights/realism_reader_labels.jsonl`): rows `text, kind, label` (1 still natural English,
  0 broken) for the near-natural corruptions of the seed-0 dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

from realize.data.errors import UserInputError

MINED_NATURAL = "mined_natural_looking"  # search outputs labelled natural by hand: test only, never trained on
READER_NATURAL = "corruption_natural_looking"  # corruptions a reader judged still natural: test only, never trained


def read_mined(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Rows of a mined-prompts JSONL file (text, generator, target, parent, label: 0 unnatural, 1 natural-looking,
    null unsure). Unreadable file: UserInputError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: cannot read mined prompts ({err})") from err


def read_reader_labels(path: str | os.PathLike[str]) -> dict[str, int]:
    """{text: label} of a reader-labels JSONL file (rows: text, kind, label 1 = still natural English, 0 = broken).
    Unreadable file or a row without text / a 0-1 label: UserInputError."""
    out: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("text"), str) or row.get("label") not in (0, 1):
                raise ValueError(f"line {n}: expected {{'text': str, 'label': 0 or 1}}")
            out[row["text"]] = int(row["label"])
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: cannot read reader labels ({err})") from err
    return out


def apply_reader_labels(rows: list[dict[str, object]], labels: dict[str, int], kinds: Collection[str]
                        ) -> list[dict[str, object]]:
    """Near-natural corruptions a reader judged still natural English leave the negatives: they become the test-only
    natural source `READER_NATURAL` (a check that the classifier passes them; never trained on). Only rows whose
    source is in `kinds` move; rows the labels do not cover stay as they are (unchecked negatives)."""
    out = []
    for row in rows:
        if row["source"] in kinds and labels.get(str(row["text"])) == 1:
            row = dict(row, label=1, split="test", source=READER_NATURAL)
        out.append(row)
    return out
