"""Run one generator family until it has written enough negatives or spent its time, resumably.

    generate(lm, family, config) -> list of rows (also written to `config.out`, JSON lines, atomically after each run)

Run k of a family uses the seed `seed * 100_000 + k` and `random.Random(f"{family}:{seed}:{k}")` for its draws, so a
rerun with the same arguments reproduces the same runs (up to float noise in the forwards); runs already in the
output file are skipped (resume after a stop). Outputs equal to a shipped corpus item (case-insensitive) or to an
earlier row, or shorter than 3 characters, are dropped: they are natural text or repeats, not search artefacts.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from realize.data.atomic import write_text_atomic
from realize.data.corpora import CORPUS_NAMES, load_corpus
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel
from realize.realism_negatives.families import FAMILIES, Family, run_family

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    out: str  # JSON lines file (resumed when it exists)
    n_rows: int = 300  # stop after this many rows
    minutes: float = 30.0  # or after this much wall time (checked between runs)
    max_runs: int = 1000  # or after this many runs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_rows < 1 or self.max_runs < 1:
            raise ValueError("n_rows, max_runs: expected >= 1")
        if self.minutes <= 0:
            raise ValueError(f"minutes: expected > 0, got {self.minutes}")


def read_rows(path: str | Path) -> list[dict[str, object]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def generate(lm: LoadedModel, family: Family, config: GenerateConfig) -> list[dict[str, object]]:
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    rows = read_rows(config.out)
    done = {int(r["run"]) for r in rows}  # type: ignore[arg-type]
    known = {t.lower() for name in CORPUS_NAMES for t in load_corpus(name)}  # type: ignore[arg-type]
    seen = {" ".join(str(r["text"]).split()).lower() for r in rows if r.get("text")}
    started = time.time()
    for k in range(config.max_runs):
        if len(rows) >= config.n_rows or time.time() - started > 60 * config.minutes:
            break
        if k in done:
            continue
        t0 = time.time()
        try:
            new = run_family(lm, family, random.Random(f"{family}:{config.seed}:{k}"), config.seed * 100_000 + k)
        except (RuntimeError, ValueError, UserInputError) as err:  # one failed run must not end a long job
            logger.warning("%s run %d failed: %s", family, k, err)
            new = []
        kept = 0
        for row in new:
            text = str(row["text"])
            key = " ".join(text.split()).lower()  # repeats that differ only in spacing or case are repeats
            if len(text) < 3 or text.lower() in known or key in known or key in seen:
                continue
            seen.add(key)
            rows.append(row | {"run": k, "seconds": round(time.time() - t0, 1)})
            kept += 1
        if not kept:  # a run with no usable output still counts as done
            rows.append({"run": k, "family": family, "text": None, "seed": config.seed * 100_000 + k})
        write_text_atomic(config.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        logger.info("%s run %d: %d kept (%.0fs); %d rows", family, k, kept, time.time() - t0,
                    sum(1 for r in rows if r.get("text")))
    return [r for r in rows if r.get("text")]
