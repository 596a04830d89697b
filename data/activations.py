"""Read and steer the residual stream at decoder-block outputs.

Layer convention (the whole project): layer `i` is the output of decoder block `i` (0-based), which equals
`hidden_states[i + 1]` of a transformers forward with `output_hidden_states=True`. It is *raw*: never read
`last_hidden_state` of a truncated model, which has the final norm applied.

Every hook is registered inside a context manager that removes all handles in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from realize.data.errors import UserInputError, arg

HookFn = Callable[[nn.Module, tuple[Any, ...], Any], Any]
_LAYER_LIST_SUFFIXES = ("model.layers", "layers", "h", "blocks", "decoder.layers", "transformer.h")


def decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """The model's list of decoder blocks.

    Found by suffix search over module names (a ModuleList whose length is `config.num_hidden_layers`), or at the
    explicit dotted `path` (e.g. "model.layers") when given.
    """
    if path is not None:
        module = model.get_submodule(path)
        if not isinstance(module, nn.ModuleList):
            raise UserInputError(f"layer path '{path}': expected an nn.ModuleList, found {type(module).__name__}")
        return module
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and any(
            name == s or name.endswith("." + s) for s in _LAYER_LIST_SUFFIXES
        ):
            if expected is None or len(module) == expected:
                found.append((name, module))
    if not found:
        raise UserInputError(
            f"{type(model).__name__}: cannot find the decoder block list; pass its dotted path (e.g. 'model.layers')"
        )
    return min(found, key=lambda item: item[0].count("."))[1]


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def check_layer(model: nn.Module, layer: int, what: str | None = None) -> None:
    """Raise UserInputError unless `layer` indexes a decoder block; `what` names it (default: the caller's `layer`
    argument: `layer` in Python, `--layer` under the CLI)."""
    n = num_layers(model)
    if not 0 <= layer < n:
        raise UserInputError(f"{what or arg('layer')} {layer}: expected a block index in 0..{n - 1} for this model "
                             f"({n} blocks)")


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def forward_hooks(hooks: Sequence[tuple[nn.Module, HookFn]]) -> Iterator[None]:
    """Register forward hooks for the duration of the block; every handle is removed in `finally`,
    also when registration itself fails half-way."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def steer(
    model: nn.Module,
    directions: Mapping[int, torch.Tensor],
    scale: float = 1.0,
    *,
    layer_path: str | None = None,
) -> Iterator[None]:
    """Add `scale * directions[i]` (shape (d,)) to block i's output at every position while the block runs."""
    blocks = decoder_layers(model, layer_path)
    hooks: list[tuple[nn.Module, HookFn]] = []
    for layer, vector in directions.items():
        check_layer(model, layer, "steering layer")

        def add(_m: nn.Module, _i: tuple[Any, ...], out: Any, v: torch.Tensor = vector) -> Any:
            hidden = _hidden(out)
            return _replace_hidden(out, hidden + scale * v.to(hidden.dtype).to(hidden.device))

        hooks.append((blocks[layer], add))
    with forward_hooks(hooks):
        yield


class _StopForward(Exception):
    """Raised by a hook to end a forward early, once the last needed block has run."""


def block_outputs(
    model: nn.Module,
    layers: Sequence[int],
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    layer_path: str | None = None,
) -> dict[int, torch.Tensor]:
    """Raw outputs of the given decoder blocks, each (B, T, d); the forward stops after the deepest one (no later
    blocks, no final norm, no LM head): a hook on that block raises once it has run. This is the project's one
    early-exit forward (`attacks.prompt_cache.run_to_layer` adds KV reuse on top of it). Gradients flow when the
    inputs require them. A `cache` (transformers Cache) is extended in place by the blocks that ran; attention_mask
    and position_ids are passed to the model as they are (a 4D additive mask passes through transformers)."""
    if not layers:
        raise ValueError("layers: expected at least one block index")
    for layer in layers:
        check_layer(model, layer, "layer")
    blocks = decoder_layers(model, layer_path)
    last = max(layers)
    captured: dict[int, torch.Tensor] = {}

    def make_hook(layer: int) -> HookFn:
        def hook(_m: nn.Module, _i: tuple[Any, ...], out: Any) -> None:
            captured[layer] = _hidden(out)
            if layer == last:
                raise _StopForward

        return hook

    base = getattr(model, "model", model)  # skip the LM head when the model has a base model
    kwargs: dict[str, Any] = {"attention_mask": attention_mask, "use_cache": cache is not None}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs["cache"] = cache
    with forward_hooks([(blocks[i], make_hook(i)) for i in sorted(set(layers))]):
        try:
            base(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)
        except _StopForward:
            pass
    return captured


def block_output(
    model: nn.Module,
    layer: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw output of block `layer` for a batch of ids, (B, T, d); see `block_outputs`."""
    return block_outputs(model, [layer], input_ids=input_ids, attention_mask=attention_mask)[layer]
