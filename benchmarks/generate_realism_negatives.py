"""Generate the realism judge's fluent adversarial negatives, one family after another (resumable).

    OMP_NUM_THREADS=1 python benchmarks/generate_realism_negatives.py --families flrt beast autodan fluent natural \
        --minutes 22 --rows 300 --seed 0

Writes `scorers/realism/negatives/<family>.jsonl` (the shipped files; see `realize.realism_negatives`): one JSON object
per line with text, family, objective, settings, seed, run, placement (whole / suffix), parent (the instruction a
suffix follows) and suffix_start (its first character). Rerunning with the same arguments skips finished runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from realize.data.models import load_model
from realize.realism_negatives.families import FAMILIES
from realize.realism_negatives.generate import GenerateConfig, generate

OUT_DIR = Path(__file__).resolve().parent.parent / "scorers" / "realism" / "negatives"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--minutes", type=float, default=22.0, help="wall time per family (default 22)")
    parser.add_argument("--rows", type=int, default=300, help="rows per family (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    lm = load_model()
    for family in args.families:
        rows = generate(lm, family, GenerateConfig(out=str(args.out_dir / f"{family}.jsonl"), n_rows=args.rows,
                                                   minutes=args.minutes, seed=args.seed))
        print(f"{family}: {len(rows)} rows", flush=True)


if __name__ == "__main__":
    main()
