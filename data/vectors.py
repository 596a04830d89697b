"""Steering vectors: the `SteeringVector` dataclass, loaders for common formats, savers, compatibility checks.

Layer convention: layer `i` is the output of decoder block `i` (0-based) = `hidden_states[i+1]` in transformers;
steering with scale `a` adds `a*v` there at every position. Other tools are translated on load:
repeng `direction.{i}`, llama.cpp control-vector `direction.N` (N >= 1, no layer 0) and steering-vectors'
`layer_activations[i]` (layer_type "decoder_block") all use the same numbering; MELBO's `(n_vectors, d)` tensor
of one source layer `s` (a bias on `layers[s].mlp.down_proj`, i.e. added to block `s`'s output) becomes n vectors
at the layer given by the caller.

Formats read by `load_vectors` (dispatch on extension): `.safetensors` (ours: `layer.{i}` tensors + string
metadata; repeng-like `direction.{i}` also accepted), `.pt`/`.pth` (safe `weights_only` load; full pickle only with
`trust_pickle`), `.gguf` (llama.cpp / repeng control vectors), `.npy`. Every bad file raises one `UserInputError`
naming the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from realize.data import vector_formats as _fmt
from realize.data.errors import UserInputError, arg
from realize.data.safe_text import printable

logger = logging.getLogger(__name__)

__all__ = ["SteeringVector", "check_compatible", "describe", "load_vectors", "save_control_vector_gguf",
           "save_safetensors", "single_layer"]


@dataclass(frozen=True, kw_only=True, eq=False)  # eq=False: tensors have no boolean ==; compare with torch.equal
class SteeringVector:
    """A direction per layer plus provenance. Tensors are detached copies; `directions` is sorted by layer."""

    directions: Mapping[int, torch.Tensor]  # layer -> (d,) tensor (float32 CPU as loaded)
    scale: float | None = None  # coefficient a; steering adds a*v
    model_hint: str | None = None  # model it was made for, e.g. "smollm2-135m-instruct" or an HF id
    method: str | None = None  # "melbo" | "caa" | "repeng" | ...
    source: str | None = None  # file it was read from
    name: str = ""  # e.g. "melbo.3" or the file stem
    notes: str = ""  # free text

    def __post_init__(self) -> None:
        if not isinstance(self.directions, Mapping) or len(self.directions) == 0:
            raise ValueError("directions: expected a non-empty mapping layer -> (d,) tensor")
        clean: dict[int, torch.Tensor] = {}
        dim: int | None = None
        for layer in sorted(self.directions, key=lambda k: (0, k, "") if isinstance(k, int) else (1, 0, str(k))):
            t = self.directions[layer]
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ValueError(f"directions: layer key {layer!r} must be an int >= 0")
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() == 0:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"directions[{layer}]: expected a 1-D tensor (d,), got {shape}")
            if not t.is_floating_point():
                raise ValueError(f"directions[{layer}]: expected a floating-point tensor, got {t.dtype}")
            if dim is not None and t.numel() != dim:
                raise ValueError(f"directions[{layer}]: dimension {t.numel()} differs from {dim} at other layers")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"directions[{layer}]: contains NaN or inf")
            if not bool(t.any()):
                raise ValueError(f"directions[{layer}]: is all zeros (no direction)")
            if not bool(torch.isfinite(t.float().norm())):  # e.g. entries of 1e20: every cosine would be NaN
                raise ValueError(f"directions[{layer}]: its norm overflows float32 (largest entry "
                                 f"{float(t.abs().max()):.3g}); rescale the vector")
            dim = t.numel()
            clean[layer] = t.detach().clone()
        object.__setattr__(self, "directions", clean)
        if self.scale is not None:
            s = self.scale
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise ValueError(f"scale: expected a finite number or None, got {self.scale!r}")
            if self.scale == 0:
                raise ValueError("scale: 0 would make the steering target a*v zero; expected a non-zero number")
            object.__setattr__(self, "scale", float(self.scale))
            norm = max(float(t.float().norm()) for t in clean.values())
            if abs(self.scale) * norm > torch.finfo(torch.float32).max:
                raise ValueError(f"scale: {self.scale!r} times the norm {norm:.3g} overflows float32 (a*v is inf)")

    @property
    def layers(self) -> tuple[int, ...]:
        """Sorted layer indices."""
        return tuple(self.directions)

    @property
    def dim(self) -> int:
        """Hidden size d."""
        return next(iter(self.directions.values())).numel()

    @property
    def layer(self) -> int:
        """The single layer; UserInputError if the vector spans several."""
        return single_layer(self)[0]

    @property
    def vector(self) -> torch.Tensor:
        """The single (d,) direction; UserInputError if the vector spans several layers."""
        return single_layer(self)[1]

    def to(self, dtype_or_device: torch.dtype | torch.device | str) -> SteeringVector:
        """A copy with every direction moved/cast by `Tensor.to`."""
        return dataclasses.replace(self, directions={k: t.to(dtype_or_device) for k, t in self.directions.items()})

    def only(self, layer: int) -> SteeringVector:
        """A copy restricted to one layer."""
        if layer not in self.directions:
            raise UserInputError(f"{_label(self)}: has no direction at layer {layer}; layers: {list(self.layers)}")
        return dataclasses.replace(self, directions={layer: self.directions[layer]})

    def norms(self) -> dict[int, float]:
        """L2 norm per layer."""
        return {k: float(t.float().norm()) for k, t in self.directions.items()}

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, layer: int | None = None, scale: float | None = None,
             trust_pickle: bool = False) -> SteeringVector:
        """Exactly one vector from `path` (see `load_vectors`); UserInputError if the file holds several."""
        vectors = load_vectors(path, layer=layer, scale=scale, trust_pickle=trust_pickle)
        if len(vectors) != 1:
            raise UserInputError(f"{os.fspath(path)}: holds {len(vectors)} vectors "
                                 f"({', '.join(v.name for v in vectors[:5])}...); expected one")
        return vectors[0]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as `.safetensors` (lossless) or `.gguf` (llama.cpp control vector), by extension."""
        suffix = Path(path).suffix.lower()
        if suffix == ".safetensors":
            save_safetensors([self], path)
        elif suffix == ".gguf":
            save_control_vector_gguf(self, path)
        else:
            raise UserInputError(f"{os.fspath(path)}: cannot save a {suffix or 'extension-less'} file; "
                                 "expected .safetensors or .gguf")


def _label(vector: SteeringVector) -> str:
    return f"vector {vector.name!r}" + (f" from {vector.source}" if vector.source else "")


def single_layer(vector: SteeringVector) -> tuple[int, torch.Tensor]:
    """(layer, direction) of a one-layer vector; UserInputError naming the layers if it has several."""
    if len(vector.directions) != 1:
        raise UserInputError(f"{_label(vector)}: has directions at layers {list(vector.layers)}, but this step "
                             f"needs a single layer; pick one with {arg('layer')}")
    (layer, tensor), = vector.directions.items()
    return layer, tensor


def load_vectors(path: str | os.PathLike[str], *, layer: int | None = None, scale: float | None = None,
                 trust_pickle: bool = False) -> list[SteeringVector]:
    """All vectors in `path` (.safetensors, .pt/.pth, .gguf, .npy).

    A file may hold several vectors (MELBO's `(n, d)` tensor -> n vectors named `{stem}.{k}`). `scale`, when given,
    overrides the file's scale (it may stay None). `layer` places vectors whose file has no layer information; if
    the file has layer information, `layer` must be one of its layers and selects it (a multi-layer repeng vector
    is cut down to that layer); a layer the file lacks is a UserInputError. Unknown layer -> UserInputError asking
    for --layer. A pickle that needs code is refused unless `trust_pickle`.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    reader = _fmt.READERS.get(suffix)
    if reader is None:
        raise UserInputError(f"{p}: unknown vector file extension {suffix or '(none)'!r}; expected one of "
                             f"{', '.join(sorted(_fmt.READERS))}")
    if not p.is_file():
        raise UserInputError(f"{p}: no such file")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise UserInputError(f"{p}: {arg('layer')} {layer!r} is invalid; expected an integer >= 0")
    if scale is not None and (not math.isfinite(scale) or scale == 0):
        raise UserInputError(f"{p}: {arg('scale')} {scale!r} is invalid; expected a finite non-zero number")
    out: list[SteeringVector] = []
    for raw in reader(p, trust_pickle):
        directions = raw.directions
        if None in directions:  # the file says nothing about the layer
            if layer is None:
                raise UserInputError(f"{p}: the file does not say which layer {raw.name!r} belongs to; "
                                     f"pass {arg('layer')} (layer i = output of decoder block i, 0-based)")
            directions = {layer: directions[None]}
        elif layer is not None:
            known = sorted(k for k in directions if k is not None)
            if layer not in known:
                raise UserInputError(f"{p}: {arg('layer')} {layer} disagrees with the file, whose vector {raw.name!r} "
                                     f"is at layer(s) {known}")
            if len(known) > 1:
                logger.info("%s: keeping layer %d of layers %s (%s)", p, layer, known, arg("layer"))
            directions = {layer: directions[layer]}
        try:
            out.append(SteeringVector(directions=directions,  # type: ignore[arg-type]
                                      scale=scale if scale is not None else raw.scale, model_hint=raw.model_hint,
                                      method=raw.method, source=str(p), name=raw.name, notes=raw.notes))
        except ValueError as exc:
            raise UserInputError(f"{p}: vector {raw.name!r}: {exc}") from exc
    return out


def _normalize_model(name: str) -> str:
    return re.sub(r"[-_/\s]", "", name.lower())


def check_compatible(vector: SteeringVector, *, hidden_size: int, num_layers: int, model_name: str | None = None,
                     model_type: str | None = None, force: bool = False) -> None:
    """UserInputError if `vector` cannot steer this model.

    Dimension and layer range are always checked. The model hint (case, '-', '_', '/' and spaces ignored) matches
    if it contains or is contained in `model_name` or `model_type` (repeng stores `config.model_type`, e.g.
    "llama" for SmolLM2); a clear mismatch is an error unless `force` (then a warning).
    """
    where = _label(vector)
    if vector.dim != hidden_size:
        raise UserInputError(f"{where}: dimension {vector.dim} does not match the model's hidden size {hidden_size}")
    too_high = [layer for layer in vector.layers if layer >= num_layers]
    if too_high:
        raise UserInputError(f"{where}: layer(s) {too_high} out of range; the model has {num_layers} decoder blocks "
                             f"(layers 0..{num_layers - 1})")
    if not vector.model_hint or not (model_name or model_type):
        return
    hint = _normalize_model(vector.model_hint)
    names = [_normalize_model(n) for n in (model_name, model_type) if n]
    if hint and not any(n and (hint in n or n in hint) for n in names):
        msg = (f"{where}: made for model {vector.model_hint!r}, but the model is "
               f"{model_name or model_type!r}; pass {arg('force')} to use it anyway")
        if not force:
            raise UserInputError(msg)
        logger.warning("%s (continuing: %s)", msg.removesuffix(f"; pass {arg('force')} to use it anyway"), arg("force"))


def save_safetensors(vectors: Sequence[SteeringVector], path: str | os.PathLike[str]) -> None:
    """Write vectors to our `.safetensors` format (atomically). Several vectors must share layers and metadata."""
    _fmt.write_safetensors(list(vectors), path)


def save_control_vector_gguf(vector: SteeringVector, path: str | os.PathLike[str], *,
                             model_hint: str | None = None) -> None:
    """Write a llama.cpp/repeng control-vector GGUF (atomically); a direction at layer 0 is refused."""
    _fmt.write_gguf(vector, path, model_hint)


def describe(vectors: Sequence[SteeringVector]) -> str:
    """Human-readable summary for `realize inspect`."""
    lines: list[str] = []
    for k, v in enumerate(vectors):
        lines.append(f"[{k}] {printable(v.name) or '(unnamed)'}")  # names come from files: no raw ESC/bidi
        lines.append(f"    layers: {', '.join(map(str, v.layers))}   dim: {v.dim}")
        lines.append("    L2 norm: " + ", ".join(f"layer {i}: {n:.4g}" for i, n in v.norms().items()))
        lines.append(f"    scale: {v.scale if v.scale is not None else '(not set)'}   "
                     f"model hint: {printable(v.model_hint or '(none)')}   "
                     f"method: {printable(v.method or '(unknown)')}")
        lines.append(f"    source: {printable(v.source or '(in memory)')}")
        if v.notes:
            lines.append(f"    notes: {printable(v.notes)}")
    return "\n".join(lines)
