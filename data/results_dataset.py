"""Audit results as a typed table, and the dataset of realizable steers as a Hugging Face dataset directory.

One row per (vector, frontier prompt). `FEATURES` is the explicit schema; `write_rows` writes `results.parquet` and
`results.jsonl` atomically; `export_dataset` writes `DIR/data/train-00000-of-00001.parquet` plus a `README.md`
dataset card with YAML metadata, so `datasets.load_dataset(DIR)` loads it offline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from realize.data.atomic import atomic_output, write_text_atomic
from realize.data.errors import UserInputError
from realize.data.safe_text import jsonl_line

FEATURES = datasets.Features(
    {
        "vector_id": datasets.Value("string"),  # stable id: hash of the vector bytes and what its result depends on
        "vector_name": datasets.Value("string"),
        "source_file": datasets.Value("string"),
        "source_sha256": datasets.Value("string"),  # the vector file's digest ("" for controls)
        "kind": datasets.Value("string"),  # "vector" | "null" | "null-isotropic" | "positive" | "behavior-positive"
        "axis": datasets.Value("string"),  # "activation": the prompt's shift at the layer; "behavior": its outputs
        "model": datasets.Value("string"),
        "model_sha256": datasets.Value("string"),  # the model file's digest ("" for a directory)
        "realize_version": datasets.Value("string"),
        "source_digest": datasets.Value("string"),  # digest of realize's own source that produced the row
        "layer": datasets.Value("int32"),  # the deepest layer of the steer
        "layers": datasets.Sequence(datasets.Value("int32")),  # every layer it acts at (one for most vectors)
        "scale": datasets.Value("float32"),
        "target_norm": datasets.Value("float32"),  # |scale * v|
        "strength": datasets.Sequence(datasets.Value("float32")),  # |a v_i| / median residual norm, per layer
        "method": datasets.Value("string"),
        "attack": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "prompt_ids": datasets.Sequence(datasets.Value("int32")),
        "is_best": datasets.Value("bool"),  # the prompt the vector's verdict rests on (chosen on selection contexts)
        # this prompt's verdict on its own selection numbers (attack "hypothesis", a prompt the user suspected: its
        # verdict judged as if it were the best prompt, on test numbers it was not chosen on; so are the row's
        # verdict columns below)
        "prompt_verdict": datasets.Value("string"),
        "selection_specific_cos": datasets.Value("float32"),  # selection contexts: it chose, it is not a result
        "cos_test": datasets.Value("float32"),  # test contexts from here on
        "specific_cos_test": datasets.Value("float32"),
        "per_position_cos": datasets.Value("float32"),
        "norm_ratio": datasets.Value("float32"),
        "fve": datasets.Value("float32"),  # 1 - |s - t|^2 / |t|^2
        "per_layer_specific_cos": datasets.Sequence(datasets.Value("float32")),  # several layers: per layer
        "perplexity": datasets.Value("float32"),
        "worst_window_perplexity": datasets.Value("float32"),
        "realism": datasets.Value("float32"),
        "behavior_recovery": datasets.Value("float32"),  # activation axis: the best prompt's behavior recovery
        "selection_recovery": datasets.Value("float32"),  # behavior axis (NaN on activation rows): chose
        "recovery_test": datasets.Value("float32"),  # 1 - KL(steered || prompted) / KL(steered || base), test
        "direction_cos": datasets.Value("float32"),  # same tokens pushed? cos of log-prob changes along the text
        "effect_ratio": datasets.Value("float32"),  # how hard, relative to the vector (1 = as hard)
        "effect_kl": datasets.Value("float32"),  # the vector's KL(steered || base) per token on test contexts
        "verdict": datasets.Value("string"),  # the item's verdict on this row's axis
        "direction_verdict": datasets.Value("string"),  # the same before the content and magnitude qualifiers
        "content": datasets.Value("string"),  # content test: specific | form | generic ("" when the direction fails)
        "content_margin": datasets.Value("float32"),  # the best prompt's value minus its form siblings' mean
        "true_content_margin": datasets.Value("float32"),  # the same for the positives' own prompts (median)
        "content_cosine": datasets.Value("float32"),  # --content-cosine: the best prompt's content cosine (else NaN)
        "true_content_cosine": datasets.Value("float32"),  # the same for the positives' own prompts (median)
        "unrelated_value": datasets.Value("float32"),  # the best unrelated instruction's test value
        "verdict_stability": datasets.Value("float32"),  # share of joint test-context resamples with that verdict
        "null_percentile": datasets.Value("float32"),
        "realizability_score": datasets.Value("float32"),
        "score_low": datasets.Value("float32"),
        "score_high": datasets.Value("float32"),
        "magnitude_factor": datasets.Value("float32"),  # |scale * v| / p99 of natural shift norms at the layer
        "realizable_scale": datasets.Value("float32"),  # a*: the largest coefficient natural prompts reach in norm
        "seed": datasets.Value("int64"),
        "budget": datasets.Value("string"),
        "seconds": datasets.Value("float32"),
    }
)
COLUMNS = tuple(FEATURES)


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    clean = []
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if c not in row]
        extra = [c for c in row if c not in FEATURES]
        if missing or extra:
            raise ValueError(f"row {i}: missing columns {missing}, unknown columns {extra}")
        clean.append({c: row[c] for c in COLUMNS})
    return clean


def to_dataset(rows: Sequence[Mapping[str, Any]]) -> datasets.Dataset:
    """Rows as a `datasets.Dataset` with the explicit schema."""
    clean = _check_rows(rows)
    columns = {c: [r[c] for r in clean] for c in COLUMNS}  # from_dict also handles zero rows
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def write_rows(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> Path:
    """Write `results.parquet` and `results.jsonl` under `out_dir` (atomically); returns the parquet path."""
    out = Path(out_dir)
    table = to_dataset(rows).data.table
    parquet = out / "results.parquet"
    with atomic_output(parquet) as tmp:
        pq.write_table(table, tmp)
    lines = "".join(jsonl_line(r) for r in _check_rows(rows))
    write_text_atomic(out / "results.jsonl", lines)
    return parquet


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows from a results parquet file (schema checked)."""
    file = Path(path)
    try:
        table = pq.read_table(file)
    except (OSError, ValueError) as err:
        raise UserInputError(f"{file}: cannot read as a results parquet file ({err})") from err
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise UserInputError(f"{file}: not a realize results file (missing columns {missing})")
    return table.select(list(COLUMNS)).to_pylist()


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _card(n_rows: int, n_bytes: int, verdicts: Iterable[str], model_names: Iterable[str], kinds: Sequence[str],
          provenance: str) -> str:
    features_yaml = "\n".join(
        f"  - name: {name}\n    "
        + (
            f"sequence: {feature.feature.dtype}"
            if isinstance(feature, datasets.Sequence)
            else f"dtype: {feature.dtype}"
        )
        for name, feature in FEATURES.items()
    )
    verdict_list = ", ".join(sorted(set(verdicts))) or "none"
    models = ", ".join(sorted(set(model_names))) or "none"
    return f"""---
license: cc-by-4.0
language:
- en
pretty_name: Realizable steers
size_categories:
- {_size_category(n_rows)}
task_categories:
- text-generation
tags:
- steering-vectors
- interpretability
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
dataset_info:
  features:
{features_yaml}
  splits:
  - name: train
    num_bytes: {n_bytes}
    num_examples: {n_rows}
  download_size: {n_bytes}
  dataset_size: {n_bytes}
---

# Realizable steers

Steering vectors paired with ordinary-language prompts that reproduce their activation shift, found and judged by
[realize](https://pypi.org/project/realize/) (`realize audit`, then `realize export`).

- Rows: {n_rows} (one per item x axis x prompt that passes on its own selection numbers); kinds kept:
  {", ".join(kinds)}; prompt verdicts kept: {verdict_list}.
- Models: {models}. Provenance: {provenance or "see the audit's report"}.
- How it was made: for each steer, a fluency-constrained token search looked for a prompt whose mean activation
  shift on optimization contexts matches `scale * v` at the steer's layers (activation axis), or whose outputs
  match the steered model's along its own text (behavior axis); every candidate was re-measured on selection
  contexts (which chose the steer's best prompt, `is_best`) and on test contexts, scored for naturalness
  (`perplexity`, `worst_window_perplexity`, `realism`), and calibrated against random directions of the natural
  shift space and held-out natural-prompt controls (`realizability_score`, `null_percentile`).
- How rows were chosen: only on numbers that report nothing. A row is here when the prompt's *selection* value
  passes against the controls' selection values, its realism clears the threshold by a margin, and its steer's
  content test did not find the prompt's form alone enough (`content`, `content_margin`: the prompt against its
  form siblings, the same template with other content). The test-context columns (`cos_test`,
  `specific_cos_test`, `recovery_test`, `fve`) were never used to choose a row, so they are unbiased.
- `verdict` is the steer's own verdict on the row's axis, with `verdict_stability` under resampled test contexts and
  the magnitude facts (`magnitude_factor` k = a / a*, `realizable_scale` a*).
- Layer convention: `layer` i is the output of decoder block i (transformers `hidden_states[i+1]`); the steer adds
  `scale * v` there at every position.
"""


def export_dataset(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    verdicts: Sequence[str] = ("realizable", "partially realizable"),
    kinds: Sequence[str] = ("vector",),
    provenance: str = "",
) -> int:
    """Write the rows whose *prompt* verdict (decided on the prompt's own selection numbers, not on the test numbers
    the rows report) is in `verdicts` and kind in `kinds` as an HF dataset directory; returns the row count.
    Controls (positives: natural-prompt shifts with the prompt found for them) are left out unless `kinds` asks
    for them. With zero rows only the card is written."""
    kept = [r for r in _check_rows(rows) if r["prompt_verdict"] in verdicts and r["kind"] in kinds]
    out = Path(out_dir)
    shard = out / "data" / "train-00000-of-00001.parquet"
    if kept:
        table = to_dataset(kept).data.table
        with atomic_output(shard) as tmp:
            pq.write_table(table, tmp)
    else:
        # `datasets` cannot load a parquet file with zero rows: leave no data file, only the card saying so.
        shard.unlink(missing_ok=True)
    n_bytes = shard.stat().st_size if kept else 0
    card = _card(len(kept), n_bytes, (r["prompt_verdict"] for r in kept), (r["model"] for r in kept), kinds,
                 provenance)
    write_text_atomic(out / "README.md", card)
    return len(kept)
