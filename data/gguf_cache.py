"""Dequantize a GGUF into a plain HF directory (config, tokenizer, model.safetensors), tensor by tensor.

    write_gguf_cache(gguf, target, dtype) -> None   # atomically: a temp dir, then rename
    dequantize_apart(gguf, target, dtype) -> None   # the same, in a child interpreter

transformers' own GGUF loading dequantizes every tensor into one float32 dict, then builds the float32 model from it
(for Gemma-3-270M, whose 262k x 640 embedding alone is 0.67 GB in float32, that peaks at 2.6 GB). Here each tensor
is dequantized in row chunks straight into a float32 buffer of its own, mapped and processed exactly as
transformers does (its name map and its per-architecture tensor processor), cast to `dtype`, and kept; only the
`dtype` weights are ever whole in memory. The result is bitwise the state dict of `from_pretrained(gguf).to(dtype)`
(tests/test_gguf_cache.py checks it on the embedded model).

transformers reads a GGUF's whole metadata again for the config, for the tokenizer and for the tensor processor,
and gguf-py's reader parses every vocabulary entry each time (4 parses, ~20 s each for Gemma's 262k-token
vocabulary on 2 cores); it also rebuilds gguf's tensor-name map once per module. `one_metadata_parse` memoizes all
three while the cache is written, so each file is parsed once. Measured back to back (2 cores, 2026-12-07), with
byte-identical outputs: SmolLM2's float32 cache 37.6 s -> 9.1 s, Gemma-3-270M's bf16 cache 107.9 s -> 39.6 s, peak RSS
unchanged (1.1 / 2.15 GiB).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from realize.data.errors import UserInputError, arg

logger = logging.getLogger(__name__)

__all__ = ["dequantize_apart", "dequantized_state", "one_metadata_parse", "write_gguf_cache"]

_ROWS_PER_CHUNK = 4096  # rows dequantized at once: bounds the dequantizer's float32 temporaries (~10 MB per 640 cols)


def _dequantize_rows(tensor: object) -> np.ndarray:
    """The float32 values of one GGUF tensor (a `gguf.ReaderTensor`), dequantized `_ROWS_PER_CHUNK` rows at a time
    into one buffer; the same numbers as `gguf.dequantize(tensor.data, tensor.tensor_type)` (elementwise per block)."""
    from gguf import dequantize

    data = tensor.data  # a memory map of the file: quantized rows are uint8 [rows, bytes per row]
    if data.ndim < 2 or data.shape[0] <= _ROWS_PER_CHUNK:
        return dequantize(data, tensor.tensor_type)
    first = dequantize(data[:_ROWS_PER_CHUNK], tensor.tensor_type)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=first.dtype)
    out[:_ROWS_PER_CHUNK] = first
    for start in range(_ROWS_PER_CHUNK, data.shape[0], _ROWS_PER_CHUNK):
        out[start:start + _ROWS_PER_CHUNK] = dequantize(data[start:start + _ROWS_PER_CHUNK], tensor.tensor_type)
    return out


@contextmanager
def one_metadata_parse() -> Iterator[None]:
    """While inside: gguf-py's `GGUFReader` is built once per (file, mode), transformers' metadata-only
    `load_gguf_checkpoint(path)` runs once per file (each caller gets its own deep copy, so none sees another's
    edits), and gguf's `get_tensor_name_map(arch, n_blocks)` once per pair. transformers imports these names inside
    its functions at call time, so it sees the memoized ones; the originals are restored in `finally`. Read-only
    metadata only: a reader's tensors are memory maps of the file, never written."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    real_reader, real_load, real_name_map = gguf.GGUFReader, hf_gguf.load_gguf_checkpoint, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], object] = {}
    checkpoints: dict[str, dict] = {}

    def reader(path: os.PathLike | str, mode: str = "r") -> object:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    def load(path: os.PathLike | str, return_tensors: bool = False, **kwargs: object) -> dict:
        if return_tensors or any(v is not None for v in kwargs.values()):
            return real_load(path, return_tensors, **kwargs)
        key = str(Path(path).resolve())
        if key not in checkpoints:
            checkpoints[key] = real_load(path, return_tensors=False)
        return _copied(checkpoints[key])

    gguf.GGUFReader, hf_gguf.load_gguf_checkpoint = reader, load
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(real_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, hf_gguf.load_gguf_checkpoint = real_reader, real_load
        gguf.get_tensor_name_map = real_name_map


_ATOMS = (str, bytes, int, float, bool, type(None))


def _copied(value: object) -> object:
    """A copy no caller's edit can leak through: dicts and lists copied level by level, a list of immutable atoms
    (a vocabulary's 262k tokens, scores, merges) in one `list()` (`copy.deepcopy` visits every element: ~8 s)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value) if all(isinstance(v, _ATOMS) for v in value) else [_copied(v) for v in value]
    return value if isinstance(value, _ATOMS) else copy.deepcopy(value)


@dataclass(frozen=True)
class _Layout:
    """What dequantizing a GGUF's tensors needs from its metadata."""

    config: object  # the HF config
    reader: object  # gguf.GGUFReader: the tensors as memory maps of the file
    processor: object  # transformers' per-architecture TensorProcessor
    names: dict[str, str]  # GGUF tensor name -> HF parameter name
    expected: frozenset[str]  # every HF parameter the model needs (lm_head may be tied)


def _layout(gguf: Path) -> _Layout:
    """The names and the per-architecture processing (Llama's q/k un-permutation, Gemma's norm offset) are
    transformers' own (`modeling_gguf_pytorch_utils`), so the tensors equal those `from_pretrained` loads. Call
    inside `one_metadata_parse` to parse the file once."""
    import gguf as gguf_py
    import transformers.modeling_gguf_pytorch_utils as hf_gguf
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)  # parameter names only, no memory
    reader = gguf_py.GGUFReader(str(gguf))
    architecture = read_field(reader, "general.architecture")[0]
    parsed = hf_gguf.load_gguf_checkpoint(str(gguf), return_tensors=False)  # metadata only: the processor's config
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed.get("config", {}))
    return _Layout(config, reader, processor, get_gguf_hf_weights_map(skeleton, processor),
                   frozenset(skeleton.state_dict()) - {"lm_head.weight"})


def _dequantize_all(gguf: Path, layout: _Layout, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{HF parameter name: tensor in `dtype`}, one tensor in float32 at a time."""
    state: dict[str, torch.Tensor] = {}
    for tensor in layout.reader.tensors:
        result = layout.processor.process(weights=_dequantize_rows(tensor), name=tensor.name,
                                          tensor_key_mapping=layout.names, parsed_parameters={"tensors": state})
        if result.name in layout.names:
            weights = np.ascontiguousarray(result.weights)
            weights = weights if weights.flags.writeable else weights.copy()  # unquantized tensors map the file
            state[layout.names[result.name]] = torch.from_numpy(weights).to(dtype)
            del weights, result
    missing = layout.expected - set(state)
    if missing:
        raise UserInputError(f"{arg('model')} {gguf}: no GGUF tensor for {sorted(missing)[:3]}")
    return state


def dequantized_state(gguf: Path, dtype: torch.dtype) -> tuple[object, dict[str, torch.Tensor]]:
    """(the HF config, {HF parameter name: tensor in `dtype`}) of a GGUF, one tensor in float32 at a time; the
    metadata parsed once, and its parse freed before the first tensor."""
    with one_metadata_parse():
        layout = _layout(gguf)
    _return_freed_memory()  # the metadata parse leaves ~0.7 GB of small objects (Gemma's 262k-token vocabulary)
    return layout.config, _dequantize_all(gguf, layout, dtype)


def _return_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's `malloc_trim`; a no-op elsewhere)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def write_gguf_cache(gguf: Path, target: Path, dtype: torch.dtype) -> None:
    """Dequantize the GGUF once and save it as a plain HF directory (atomically: temp dir, then rename)."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    try:
        with one_metadata_parse():  # the tokenizer, the config and the tensor layout share one parse
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
            layout = _layout(gguf)
        _return_freed_memory()  # before the weights: the vocabulary's parse is as large as Gemma's bf16 weights
        config, state = layout.config, _dequantize_all(gguf, layout, dtype)
        del layout
        # save_pretrained refuses GGUF-quantized configs; the weights are already dequantized, so drop that marker.
        config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
        config.dtype = dtype  # what the saved weights are
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        config.save_pretrained(tmp)
        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dequantize_apart(gguf: Path, target: Path, dtype: torch.dtype) -> None:
    """`write_gguf_cache` in a child interpreter, so that the memory dequantizing touches is returned with the
    child instead of staying with the audit's process for its whole life. (A fresh interpreter, not a
    multiprocessing child: that would re-run a user's unguarded script.) Falls back to this process when no child
    can be started."""
    code = ("import sys, torch; from pathlib import Path; from realize.data.gguf_cache import write_gguf_cache; "
            "write_gguf_cache(Path(sys.argv[1]), Path(sys.argv[2]), getattr(torch, sys.argv[3]))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(gguf), str(target),
                               str(dtype).removeprefix("torch.")], capture_output=True, text=True, check=False)
    except OSError as err:  # no process could be started (a sandbox): do it here
        logger.warning("dequantizing in this process (%s)", err)
        write_gguf_cache(gguf, target, dtype)
        return
    if done.returncode != 0 or not (target / "model.safetensors").is_file():
        raise UserInputError(f"{arg('model')} {gguf}: dequantizing it failed ({done.stderr.strip()[-300:]})")
