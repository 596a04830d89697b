"""The Python API: what the CLI does, callable from a notebook with the same presets.

    import realize

    report = realize.audit("vectors.safetensors", budget="quick")     # model: the embedded SmolLM2
    report.verdicts                       # {"melbo.0": "not realizable", ...}
    report.to_pandas()                    # one row per (item, evaluated prompt), the results schema
    report.save("runs/audit")             # results.parquet/jsonl, dataset/, report.html

`audit` takes vector files, `SteeringVector`s, or a mix; a model spec or a loaded model (`realize.load_model`);
`budget` names an `AuditConfig` preset (exactly what `realize audit --budget` runs) and `config` overrides it.
Errors name the argument (`vectors`, `model`, ...), never a CLI flag.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from realize.config import AuditConfig
from realize.data.errors import UserInputError
from realize.data.models import DEFAULT_MODEL, LoadedModel, cache_root
from realize.data.models import load_model as _load_model
from realize.data.vectors import SteeringVector, check_compatible
from realize.data.vectors import load_vectors as _load_vectors
from realize.optimizing import OptimizeReport, OptimizeRequest, run_optimize
from realize.outputs import AuditReport
from realize.pipeline import run_audit
from realize.scorers.realism import RealismClassifier
from realize.store import ItemStore

__all__ = ["AuditReport", "OptimizeReport", "audit", "load_model", "load_vectors", "optimize"]


def load_model(spec: str | os.PathLike[str] = DEFAULT_MODEL) -> LoadedModel:
    """A model by name (`"smollm2-135m-instruct"`, the default), `.gguf` file or HF directory, frozen, eval mode.

    >>> lm = realize.load_model()            # doctest: +SKIP
    """
    return _load_model(str(spec))


def load_vectors(path: str | os.PathLike[str], *, layer: int | None = None, scale: float | None = None,
                 trust_pickle: bool = False, model: LoadedModel | None = None,
                 force: bool = False) -> list[SteeringVector]:
    """Every vector in `path` (.safetensors, .gguf control vector, .pt/.pth, .npy); `layer`/`scale` fill missing
    metadata; with `model`, each vector is checked to fit it (hidden size, layer range, model hint unless `force`).

    >>> vectors = realize.load_vectors("melbo.safetensors", scale=1.0)    # doctest: +SKIP
    """
    vectors = _load_vectors(path, layer=layer, scale=scale, trust_pickle=trust_pickle)
    if model is not None:
        for vector in vectors:
            check_compatible(vector, hidden_size=model.hidden_size, num_layers=model.num_layers,
                             model_name=model.name, model_type=getattr(model.model.config, "model_type", None),
                             force=force)
    return vectors


def _as_vectors(vectors: Any, lm: LoadedModel, scale: float | None) -> list[SteeringVector]:
    items: Iterable[Any]
    if isinstance(vectors, (str, os.PathLike, SteeringVector)):
        items = [vectors]
    elif isinstance(vectors, Iterable):
        items = list(vectors)
    else:
        raise UserInputError(f"vectors: expected a path, a SteeringVector or a list of them, got "
                             f"{type(vectors).__name__}")
    out: list[SteeringVector] = []
    for item in items:
        if isinstance(item, SteeringVector):
            loaded = [item if item.scale is not None or scale is None else dataclasses.replace(item, scale=scale)]
            check_compatible(loaded[0], hidden_size=lm.hidden_size, num_layers=lm.num_layers, model_name=lm.name,
                             model_type=getattr(lm.model.config, "model_type", None))
        elif isinstance(item, (str, os.PathLike)):
            loaded = load_vectors(item, scale=scale, model=lm)
        else:
            raise UserInputError(f"vectors: expected paths or SteeringVectors, got {type(item).__name__}")
        for vector in loaded:
            if vector.scale is None:
                raise UserInputError(f"vectors: {vector.name or vector.source or 'a vector'} has no scale; pass "
                                     "scale= (steering adds scale * v)")
        out += loaded
    if not out:
        raise UserInputError("vectors: nothing to audit")
    return out


def audit(
    vectors: str | os.PathLike[str] | SteeringVector | Sequence[str | os.PathLike[str] | SteeringVector],
    *,
    model: str | LoadedModel = DEFAULT_MODEL,
    budget: str = "default",
    config: AuditConfig | None = None,
    hypotheses: Sequence[str] = (),
    scale: float | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    classifier: RealismClassifier | None = None,
    control_cache: bool | str | os.PathLike[str] = True,
    show_progress: bool = True,
) -> AuditReport:
    """Audit vectors: search, calibrate against controls, judge. The same presets and the same pipeline as
    `realize audit --budget` (`realize.pipeline.run_audit`).

    vectors: file path(s) and/or `SteeringVector`s; `scale` fills a missing coefficient. model: a spec for
    `load_model` or a loaded model. config: an `AuditConfig` (overrides `budget`). hypotheses: prompts you suspect
    produce the steers (`realize audit --prompt`), each judged on every vector and axis as if it were the best
    prompt (`JudgedAudit.judgement(axis).hypotheses`). out: a directory for the finished
    items (a rerun resumes there; another audit's results there are refused unless `overwrite`) and, at the end,
    the outputs (`AuditReport.save`); None keeps items in a temporary directory. control_cache: reuse calibration
    controls cached under $REALIZE_CACHE/controls (True), in another directory (a path), or not at all (False).

    >>> report = realize.audit("vectors.safetensors", budget="quick")   # doctest: +SKIP
    >>> report.verdicts                                                  # doctest: +SKIP
    {'melbo.0': 'not realizable', 'melbo.1': 'not realizable'}
    """
    if config is None:
        if budget not in ("quick", "default", "thorough"):
            raise UserInputError(f"budget: expected one of quick, default, thorough, got {budget!r}")
        config = AuditConfig(budget=budget, show_progress=show_progress)
    if hypotheses:
        try:
            config = dataclasses.replace(config, hypotheses=tuple(hypotheses))
        except ValueError as err:
            raise UserInputError(str(err)) from None
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    items = _as_vectors(vectors, lm, scale)
    cache = None
    if control_cache is not False:
        cache = ItemStore(cache_root() / "controls" if control_cache is True else Path(control_cache))
    with tempfile.TemporaryDirectory(prefix="realize-audit-") as scratch:
        report = run_audit(lm, items, config, Path(out) if out is not None else Path(scratch), classifier=classifier,
                           control_cache=cache, overwrite=overwrite, write=out is not None)
    assert report is not None, "a single process is the main process"
    return report


def optimize(
    vector: str | os.PathLike[str] | SteeringVector,
    *,
    model: str | LoadedModel = DEFAULT_MODEL,
    attack: str = "natural",
    objective: str = "activation",
    config: Any = None,
    steps: int | None = None,
    init: str | None = None,
    init_from: str | None = "retrieval",
    scale: float | None = None,
    index: int = 0,
    placement: str = "prefix",
    n_contexts: int = 8,
    n_heldout: int = 16,
    split_seed: int = 0,
    show_progress: bool = True,
) -> OptimizeReport:
    """Search for one prompt that does what one vector does: what `realize optimize` runs.

    vector: a file (its `index`-th vector) or a `SteeringVector`; attack: a name of `realize.attacks.ATTACKS`
    (default the strongest, natural GCG, started from the best corpus prompt: `init_from="retrieval"`; pass
    `init_from=None` or an `init` text to start elsewhere); objective: "activation" or "behavior"; config: the
    attack's config dataclass (`steps` overrides its steps). Contexts: the first `n_contexts` of a seeded split of the
    shipped contexts for the search, `n_heldout` others to measure the result.

    >>> report = realize.optimize("caa.safetensors", steps=20)      # doctest: +SKIP
    >>> report.best_prompt, report.heldout["specific_cos"]          # doctest: +SKIP
    """
    from realize.attacks import ATTACKS
    from realize.data.chat import encode
    from realize.data.corpora import load_corpus, split_contexts

    if attack not in ATTACKS:
        raise UserInputError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    vectors = _as_vectors(vector, lm, scale)
    if not 0 <= index < len(vectors):
        raise UserInputError(f"index: {index} is out of range for {len(vectors)} vector(s)")
    spec = ATTACKS[attack]
    if config is None:
        fields = {f.name for f in dataclasses.fields(spec.config)}
        config = spec.config(**{k: v for k, v in (("steps", steps), ("show_progress", show_progress))
                                if k in fields and v is not None})
    elif steps is not None:
        config = dataclasses.replace(config, steps=steps)
    if init is not None or not spec.takes_init:
        init_from = None
    contexts = load_corpus("contexts")
    if n_contexts < 1 or n_heldout < 1 or n_contexts + n_heldout > len(contexts):
        raise UserInputError(f"n_contexts, n_heldout: expected >= 1 each and at most {len(contexts)} together")
    opt, held = split_contexts(contexts, n_heldout, split_seed)
    try:
        request = OptimizeRequest(attack=attack, attack_config=config, objective=objective,  # type: ignore[arg-type]
                                  placement=placement, init_from=init_from,  # type: ignore[arg-type]
                                  init=None if init is None else tuple(encode(lm.tokenizer, init)))
    except ValueError as err:
        raise UserInputError(str(err)) from None
    return run_optimize(lm, vectors[index], opt[:n_contexts], held, request)
