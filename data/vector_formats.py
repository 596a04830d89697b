"""Readers and writers for steering-vector files; `data.vectors` is the public API on top of them.

Readers return `RawVector`s: tensors keyed by layer (our convention, block output) or by `None` when the file does
not say which layer (plain tensors, MELBO, `.npy`). Every parse failure becomes one `UserInputError` that names the
file. Writers go through a temporary file in the target directory and `os.replace`, so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from realize.data.atomic import atomic_output
from realize.data.errors import UserInputError, arg
from realize.data.gguf_layout import GGUFLayoutError, check_layout
from realize.data.safe_text import is_encodable, printable

if TYPE_CHECKING:
    from realize.data.vectors import SteeringVector

logger = logging.getLogger(__name__)

FORMAT_NAME = "realize.steering_vector"
FORMAT_VERSION = "1"
LAYER_CONVENTION = "block_output"
_LAYER_KEY = re.compile(r"^(?:(?:layer|layers|direction)\.)?(\d+)$")
# Messages of torch's weights-only unpickler when the pickle needs code (a global it will not import).
_NEEDS_CODE = re.compile(r"was not an allowed global|is blocked|must be \S+ to load")


@dataclass
class RawVector:
    """One vector as read from a file; `directions` is keyed by layer, or by `None` if the file has no layer."""

    directions: dict[int | None, torch.Tensor]
    name: str
    scale: float | None = None
    model_hint: str | None = None
    method: str | None = None
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def fail(path: str | os.PathLike[str], what: str, exc: BaseException | None = None) -> UserInputError:
    """Build the one-line UserInputError `"<path>: <what> (<exception summary>)"`."""
    msg = f"{os.fspath(path)}: {what}"
    if exc is not None:
        detail = " ".join(str(exc).replace("\033[1m", "").replace("\033[0m", "").split())
        detail = detail or type(exc).__name__
        msg += f" ({detail[:240]}{'...' if len(detail) > 240 else ''})"
    return UserInputError(printable(" ".join(msg.split())))  # keys/names from the file: no raw ESC in the terminal


def parse_layer_key(key: object) -> int | None:
    """`12`, `"12"`, `"layer.12"`, `"layers.12"`, `"direction.12"` -> 12; anything else -> None."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, str):
        m = _LAYER_KEY.match(key.strip())
        return int(m.group(1)) if m else None
    return None


def _as_tensor(path: Path, value: object, where: str) -> torch.Tensor:
    """A float32 CPU copy of a tensor/ndarray; refuses non-floating dtypes."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise fail(path, f"{where} holds Python objects; expected a floating-point array")
        if not value.dtype.isnative:  # e.g. a big-endian GGUF
            value = value.astype(value.dtype.newbyteorder("="))
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise fail(path, f"{where} is a {type(value).__name__}; expected a tensor")
    if not (value.is_floating_point()):
        raise fail(path, f"{where} has dtype {value.dtype}; expected a floating-point tensor")
    return value.detach().to(device="cpu", dtype=torch.float32).clone()


def split_rows(path: Path, tensors: Mapping[int | None, torch.Tensor], stem: str) -> list[RawVector]:
    """Layer -> (d,) is one vector; layer -> (n, d) (same n everywhere) is n vectors named `stem.k`."""
    ndims = {t.dim() for t in tensors.values()}
    if ndims == {1}:
        return [RawVector(directions=dict(tensors), name=stem)]
    if ndims != {2}:
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise fail(path, f"tensor shapes {shapes}; expected (d,) or (n_vectors, d), the same rank for every layer")
    counts = {t.shape[0] for t in tensors.values()}
    if len(counts) != 1:
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise fail(path, f"tensor shapes {shapes}; expected the same number of vectors (rows) at every layer")
    n = counts.pop()
    if n == 0:
        raise fail(path, "holds 0 vectors (a tensor with 0 rows); expected at least one")
    return [RawVector(directions={k: t[r].clone() for k, t in tensors.items()}, name=f"{stem}.{r}") for r in range(n)]


def _layer_dict(path: Path, mapping: Mapping[Any, object], where: str) -> dict[int | None, torch.Tensor]:
    out: dict[int | None, torch.Tensor] = {}
    for key, value in mapping.items():
        layer = parse_layer_key(key)
        if layer is None:
            keys = ", ".join(repr(k) for k in list(mapping)[:8])
            raise fail(path, f"{where} has key {key!r} (keys: {keys}); expected layer keys like 12, '12', "
                             "'layer.12' or 'direction.12'")
        if layer in out:
            raise fail(path, f"{where} has two entries for layer {layer}; expected one per layer")
        out[layer] = _as_tensor(path, value, f"{where}[{key!r}]")
    if not out:
        raise fail(path, f"{where} is empty; expected at least one layer -> tensor entry")
    return out


# ----------------------------------------------------------------------------------------------------- safetensors
def read_safetensors(path: Path) -> list[RawVector]:
    """Our format (`layer.{i}` + string metadata) or any file with `layer.{i}`/`direction.{i}` keys."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            raw = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:  # safetensors raises SafetensorError / OSError / others on bad headers
        raise fail(path, "corrupt or truncated safetensors file", exc) from exc
    if meta.get("format") == FORMAT_NAME and meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise fail(path, f"format_version {meta['format_version']!r}; expected {FORMAT_VERSION!r}")
    convention = meta.get("layer_convention", LAYER_CONVENTION)
    if convention != LAYER_CONVENTION:
        raise fail(path, f"layer_convention {convention!r}; expected {LAYER_CONVENTION!r} (output of block i)")
    bad = [k for k in raw if parse_layer_key(k) is None or not k.startswith(("layer.", "direction."))]
    if bad or not raw:
        found = ", ".join(sorted(raw)[:10]) or "none"
        raise fail(path, f"tensor keys [{found}]; expected 'layer.{{i}}' or 'direction.{{i}}' (one per layer)")
    vectors = split_rows(path, _layer_dict(path, raw, "file"), path.stem)
    scale: float | None = None
    if meta.get("scale"):
        try:
            scale = float(meta["scale"])
        except ValueError as exc:
            raise fail(path, f"metadata scale {meta['scale']!r}; expected a number", exc) from exc
    names: list[str] | None = None
    if "names" in meta:
        try:
            names = json.loads(meta["names"])
        except json.JSONDecodeError as exc:
            raise fail(path, "metadata 'names' is not JSON; expected a JSON list of strings", exc) from exc
        if not (isinstance(names, list) and len(names) == len(vectors) and all(isinstance(n, str) for n in names)):
            raise fail(path, f"metadata 'names' = {meta['names'][:80]!r}; expected a JSON list of "
                             f"{len(vectors)} strings")
        if not all(is_encodable(n) for n in names):  # JSON "\ud800" escapes decode to text no UTF-8 writer accepts
            raise fail(path, f"metadata 'names' = {meta['names'][:80]!r} holds a lone surrogate (\\ud800-\\udfff); "
                             "expected valid Unicode names")
    for k, vec in enumerate(vectors):
        vec.scale, vec.model_hint, vec.method = scale, meta.get("model") or None, meta.get("method") or None
        vec.notes = meta.get("notes", "")
        vec.name = names[k] if names is not None and names[k] else vec.name  # unnamed -> stem-based name
    return vectors


@contextmanager
def atomic_target(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temp path next to `path`; on success move it onto `path`, on failure delete it."""
    target = Path(path)
    if not target.parent.is_dir():
        raise fail(target, "the directory to write into does not exist")
    with atomic_output(target) as tmp:
        yield str(tmp)


def write_safetensors(vectors: Sequence[SteeringVector], path: str | os.PathLike[str]) -> None:
    """One file; several vectors must share layers and file-level metadata (model, method, scale, notes)."""
    from safetensors.torch import save_file

    if not vectors:
        raise fail(path, "nothing to save; expected at least one vector")
    first = vectors[0]
    for v in vectors[1:]:
        if v.layers != first.layers or v.dim != first.dim:
            raise fail(path, f"vector {v.name!r} has layers {list(v.layers)} (d={v.dim}) but {first.name!r} has "
                             f"{list(first.layers)} (d={first.dim}); one file holds vectors with the same layers")
        for attr in ("scale", "model_hint", "method", "notes"):
            if getattr(v, attr) != getattr(first, attr):
                raise fail(path, f"vectors {first.name!r} and {v.name!r} differ in {attr}; the file stores one "
                                 f"{attr} for all vectors, so save them to separate files")
    tensors = {}
    for layer in first.layers:
        rows = [v.directions[layer].detach().to("cpu", torch.float32) for v in vectors]
        tensors[f"layer.{layer}"] = (rows[0] if len(rows) == 1 else torch.stack(rows)).contiguous()
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layer_convention": LAYER_CONVENTION,
            "names": json.dumps([v.name for v in vectors]), "notes": first.notes}
    if first.model_hint is not None:
        meta["model"] = first.model_hint
    if first.method is not None:
        meta["method"] = first.method
    if first.scale is not None:
        meta["scale"] = repr(float(first.scale))
    with atomic_target(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


# ---------------------------------------------------------------------------------------------------- torch .pt
def _from_torch_object(path: Path, obj: object) -> list[RawVector]:
    stem = path.stem
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return split_rows(path, {None: _as_tensor(path, obj, "the tensor")}, stem)
    acts = obj.get("layer_activations") if isinstance(obj, Mapping) else getattr(obj, "layer_activations", None)
    if acts is not None:  # steering-vectors: {"layer_activations": {i: t}, "layer_type": "decoder_block"}
        layer_type = obj.get("layer_type") if isinstance(obj, Mapping) else getattr(obj, "layer_type", None)
        if layer_type not in (None, "decoder_block"):
            raise fail(path, f"steering-vectors layer_type {layer_type!r}; only 'decoder_block' (block output) "
                             "is supported")
        if not isinstance(acts, Mapping):
            raise fail(path, f"layer_activations is a {type(acts).__name__}; expected a dict layer -> tensor")
        vecs = split_rows(path, _layer_dict(path, acts, "layer_activations"), stem)
        for v in vecs:
            v.method = "steering-vectors"
        return vecs
    directions = getattr(obj, "directions", None)  # a repeng ControlVector (only reachable with trust_pickle)
    if directions is not None and not isinstance(obj, Mapping):
        if not isinstance(directions, Mapping):
            raise fail(path, f"directions is a {type(directions).__name__}; expected a dict layer -> tensor")
        vecs = split_rows(path, _layer_dict(path, directions, "directions"), stem)
        for v in vecs:
            v.method, v.model_hint = "repeng", getattr(obj, "model_type", None)
        return vecs
    if isinstance(obj, Mapping):
        return split_rows(path, _layer_dict(path, obj, "the dict"), stem)
    raise fail(path, f"holds a {type(obj).__name__}; expected a tensor (d,) or (n, d), a dict layer -> tensor, "
                     "or a steering-vectors dict with 'layer_activations'")


def read_torch(path: Path, *, trust_pickle: bool) -> list[RawVector]:
    """`torch.load(weights_only=True)` first; a pickle that needs code is loaded only with `trust_pickle`."""
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            if _NEEDS_CODE.search(str(exc)):
                raise fail(path, "this .pt file needs arbitrary code to unpickle; refusing. Re-run with "
                                 f"{arg('trust_pickle')} only if you trust its author.") from exc
            raise fail(path, "corrupt or not a PyTorch file (or it uses pickle features that safe loading "
                             f"refuses; {arg('trust_pickle')} loads those if you trust its author)", exc) from exc
        logger.warning("%s: loading with full pickle (%s): this runs any code the file contains", path, arg("trust_pickle"))
        try:
            # The one place that unpickles arbitrary code: reached only after the safe load failed AND the user
            # passed the explicit trust flag.
            obj = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as exc2:
            raise fail(path, "could not be loaded even with --trust-pickle", exc2) from exc2
    except Exception as exc:
        raise fail(path, "corrupt or truncated PyTorch file", exc) from exc
    return _from_torch_object(path, obj)


# ----------------------------------------------------------------------------------------------------------- npy
def read_npy(path: Path) -> list[RawVector]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise fail(path, "holds Python objects (needs pickle); expected a float array of shape (d,) or "
                             "(n, d)") from exc
        raise fail(path, "corrupt or truncated .npy file", exc) from exc
    except Exception as exc:
        raise fail(path, "corrupt or truncated .npy file", exc) from exc
    if not isinstance(arr, np.ndarray):
        raise fail(path, f"holds a {type(arr).__name__}; expected a .npy array of shape (d,) or (n, d)")
    return split_rows(path, {None: _as_tensor(path, arr, "the array")}, path.stem)


# ---------------------------------------------------------------------------------------------------------- gguf
def _gguf_value(field_: Any) -> object:
    """The value of a scalar or string GGUF field (stable across gguf versions)."""
    import gguf

    part = field_.parts[field_.data[0]]
    if field_.types and field_.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


def check_gguf_layout(path: Path) -> None:
    """UserInputError naming `path` if its GGUF header claims more metadata, tensors or bytes than the file holds."""
    try:
        check_layout(path)
    except GGUFLayoutError as exc:
        raise fail(path, "corrupt or truncated GGUF file", exc) from None
    except OSError as exc:
        raise fail(path, "cannot read the GGUF file", exc) from exc


def read_gguf(path: Path) -> list[RawVector]:
    """A llama.cpp / repeng control vector: tensors `direction.N`, metadata `controlvector.*`."""
    import gguf

    check_gguf_layout(path)
    try:
        reader = gguf.GGUFReader(path)
        kv = {name: _gguf_value(f) for name, f in reader.fields.items()
              if not name.startswith("GGUF.") and len(f.data) == 1}
    except Exception as exc:
        raise fail(path, "corrupt or truncated GGUF file", exc) from exc
    arch = kv.get("general.architecture")
    if arch not in (None, "controlvector"):  # checked before copying any tensor: a model file can be gigabytes
        raise fail(path, f"general.architecture is {arch!r}; expected 'controlvector' (a llama.cpp/repeng "
                         "control vector, not a model)")
    try:
        tensors = [(t.name, t.tensor_type, np.array(t.data, copy=True), t.n_elements) for t in reader.tensors]
    except Exception as exc:
        raise fail(path, "corrupt or truncated GGUF file", exc) from exc
    finally:
        reader = None  # release the memmap
    float_types = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F64}
    directions: dict[int | None, torch.Tensor] = {}
    for name, ttype, data, n in tensors:
        m = re.fullmatch(r"direction\.(\d+)", name)
        if m is None:
            found = ", ".join(t[0] for t in tensors[:8])
            raise fail(path, f"tensor {name!r} (tensors: {found}); expected only 'direction.N' tensors")
        if ttype not in float_types:
            raise fail(path, f"tensor {name!r} has type {ttype.name}; expected F32/F16/F64 (not quantized)")
        if data.size != n or sum(s > 1 for s in data.shape) > 1:
            raise fail(path, f"tensor {name!r} has shape {tuple(data.shape)}; expected a vector (d,)")
        layer = int(m.group(1))  # llama.cpp direction.N is the output of block N: same numbering as ours
        if layer in directions:
            raise fail(path, f"two tensors for layer {layer}; expected one per layer")
        directions[layer] = _as_tensor(path, data.reshape(-1), f"tensor {name!r}")
    if not directions:
        raise fail(path, "has no tensors; expected 'direction.N' tensors")
    count = kv.get("controlvector.layer_count")
    if count is not None and count != len(directions):
        logger.warning("%s: controlvector.layer_count=%s but %d direction tensors", path, count, len(directions))
    scale = kv.get("realize.scale")
    try:
        scale_f = float(scale) if scale not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise fail(path, f"realize.scale {scale!r}; expected a number", exc) from exc
    hint = kv.get("controlvector.model_hint")
    return [RawVector(directions=directions, name=str(kv.get("realize.name") or path.stem), scale=scale_f,
                      model_hint=str(hint) if hint else None, method=str(kv.get("realize.method") or "") or None,
                      notes=str(kv.get("realize.notes", "")))]


def write_gguf(vector: SteeringVector, path: str | os.PathLike[str], model_hint: str | None) -> None:
    """llama.cpp/repeng control-vector GGUF; our scale/method/name/notes go into extra `realize.*` keys."""
    import gguf

    if 0 in vector.directions:
        raise fail(path, f"vector {vector.name!r} has a direction at layer 0; llama.cpp control vectors have no "
                         "layer 0 (direction.N, N >= 1); drop layer 0 or save as .safetensors")
    hint = model_hint if model_hint is not None else vector.model_hint
    with atomic_target(path) as tmp:
        writer = gguf.GGUFWriter(tmp, "controlvector")
        try:
            # repeng's import_gguf requires this key; add_string would skip an empty string
            writer.add_key_value("controlvector.model_hint", hint or "", gguf.GGUFValueType.STRING)
            writer.add_uint32("controlvector.layer_count", len(vector.layers))
            extras: dict[str, str] = {"realize.name": vector.name, "realize.notes": vector.notes}
            if vector.method is not None:
                extras["realize.method"] = vector.method
            if vector.scale is not None:
                extras["realize.scale"] = repr(float(vector.scale))
            for key, value in extras.items():
                writer.add_string(key, value)
            for layer in vector.layers:
                arr = vector.directions[layer].detach().to("cpu", torch.float32).numpy()
                writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(arr))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()


READERS: dict[str, Callable[[Path, bool], list[RawVector]]] = {
    ".safetensors": lambda p, trust: read_safetensors(p),
    ".pt": lambda p, trust: read_torch(p, trust_pickle=trust),
    ".pth": lambda p, trust: read_torch(p, trust_pickle=trust),
    ".gguf": lambda p, trust: read_gguf(p),
    ".npy": lambda p, trust: read_npy(p),
}
