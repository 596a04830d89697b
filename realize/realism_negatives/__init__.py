"""Fluent adversarial negatives for the realism judge: CPU-sized versions of published optimizer families run on the
embedded model against many objectives (`families`, `objectives`, `genetic`, `flrt`), written as JSON lines with
their provenance (`generate`). It composes attacks/ and data/ (the judge in scorers/ never imports attacks/):
the texts it writes are data files that `realize.scorers.realism.dataset` reads."""
