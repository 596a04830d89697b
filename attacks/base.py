"""What every attack shares: the objective protocol, the one attack signature, the result with its full trajectory
and typed frontier, and the mechanics every search loop needs (batched evaluation that halves on out-of-memory,
the start prompt, the context of the retokenization check).

Public API (stable):

    Objective                     protocol: losses (B, L) -> (B,), loss_and_grad (L,) -> (float, (L, V)), metrics
    Attack                        protocol of every attack's entry point:
        run(objective, lm, layout, config, *, init=None) -> AttackResult
    Step, FrontierPoint, AttackResult   frozen dataclasses (JSON via dataclasses.asdict)
    is_out_of_memory(err) -> bool
    map_in_batches(fn, items (B, ...), batch_size) -> (fn's rows concatenated (B, ...), batch size to use next)
    evaluate_in_batches(objective, candidates (B, L), batch_size) -> (losses (B,) CPU float, batch size next)
    start_ids(init) -> tuple[int, ...] | None     # validates an attack's `init`
    filter_context(objective) -> tuple[int, ...]  # the context of the in-context retokenization check

An objective scores candidate prompts (token ids that go into the prompt slot of a chat turn, see `data.chat`);
lower loss is better. Attacks are objective-agnostic: GCG needs `loss_and_grad`, gradient-free searches need only
`losses`. An objective that scores prompts on chat contexts exposes them as `context_ids` (one tuple of token ids
per context); every attack's retokenization check places candidates before/after the first of them
(`filter_context`), so the check sees the exact boundary tokens the objective scores. Objectives without contexts
(e.g. the target-string objective) get the empty context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from realize.data.chat import ChatLayout
    from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)

__all__ = [
    "Attack", "AttackResult", "FrontierPoint", "Objective", "Step", "evaluate_in_batches", "filter_context",
    "is_out_of_memory", "map_in_batches", "start_ids",
]


@runtime_checkable
class Objective(Protocol):
    """A batched loss over candidate prompts of equal length (lower is better)."""

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> losses (B,) float, no gradient."""
        ...

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        """prompt (L,) long -> (loss, gradient of the loss w.r.t. the one-hot prompt, (L, V))."""
        ...

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        """prompt (L,) long -> named diagnostics for reports (e.g. cos, specific_cos, norm_ratio)."""
        ...


@dataclass(frozen=True)
class Step:
    """One optimizer step: what was evaluated and the best so far."""

    step: int
    loss: float  # best loss among this step's candidates
    best_loss: float  # best loss so far
    prompt_ids: tuple[int, ...]  # current prompt after the step
    prompt: str  # its text
    seconds: float  # wall time of the step
    n_candidates: int  # candidates evaluated in the step
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FrontierPoint:
    """One prompt an attack returns beside its best: a Pareto point (fluent) or a ranked prompt (retrieval).
    Fields an attack does not measure are None."""

    prompt: str  # decoded text
    ids: tuple[int, ...]  # token ids of the prompt slot
    loss: float  # objective loss on the optimization contexts
    cos: float | None = None  # objective's raw cosine (fluent: -loss when the objective reports none)
    specific_cos: float | None = None  # objective's specific cosine, when it has a generic direction
    ce: float | None = None  # fluent: mean token cross-entropy under the LM (fluency)
    perplexity: float | None = None  # fluent: exp(ce)
    fluency_weight: float | None = None  # fluent: lambda of the population member that proposed the point
    rank: int | None = None  # retrieval: 0 = lowest loss


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack run."""

    attack: str  # "gcg", "beam", "fluent", "relaxed", "random", "retrieval"
    best_ids: tuple[int, ...]
    best_prompt: str
    best_loss: float
    trajectory: tuple[Step, ...]
    seconds: float
    n_evaluations: int  # candidate prompts whose loss was computed
    config: Mapping[str, object] = field(default_factory=dict)
    frontier: tuple[FrontierPoint, ...] = ()  # fluent: the Pareto set; retrieval: the `keep` best prompts


class Attack(Protocol):
    """The one entry-point shape: `lm` = `data.models.LoadedModel`, `layout` = the objective's chat layout (None
    where the attack allows it: the retokenization check is then the prompt's own text round trip), `config` = the
    attack's frozen config dataclass, `init` = optional start prompt (token ids; attacks that take none refuse it)."""

    def __call__(
        self,
        objective: Objective,
        lm: LoadedModel,
        layout: ChatLayout | None,
        config: Any,
        *,
        init: Sequence[int] | None = None,
    ) -> AttackResult: ...


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (torch.OutOfMemoryError or a RuntimeError saying so)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def map_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor], items: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, int]:
    """fn over rows of `items` (B, ...), `batch_size` rows per call (0 = all at once) -> (outputs concatenated
    along dim 0, the batch size to use next time). On out-of-memory the batch halves and the failed chunk is
    retried; at one row the error is re-raised. The returned size is the halved one after a failure, else the
    caller's (0 stays 0), so a caller that keeps it never retries a size that failed."""
    n = batch_size if batch_size > 0 else max(1, items.shape[0])
    out: list[torch.Tensor] = []
    start = 0
    while start < items.shape[0]:
        try:
            out.append(fn(items[start : start + n]))
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err) or n == 1:
                raise
            n = max(1, n // 2)
            logger.warning("out of memory; batch halved to %d", n)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += n
    outputs = torch.cat(out) if out else torch.zeros(0)
    return outputs, (n if batch_size > 0 or n < items.shape[0] else batch_size)


def evaluate_in_batches(objective: Objective, candidates: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, int]:
    """candidates (B, L) -> (losses (B,) float CPU, batch size to use next time); see `map_in_batches`."""
    return map_in_batches(lambda c: objective.losses(c).detach().float().cpu(), candidates, batch_size)


def start_ids(init: Sequence[int] | None) -> tuple[int, ...] | None:
    """An attack's `init` as a tuple of ints (None stays None); an empty prompt is refused."""
    if init is None:
        return None
    ids = tuple(int(t) for t in init)
    if not ids:
        raise ValueError("init: expected a start prompt of at least one token")
    return ids


def filter_context(objective: object) -> tuple[int, ...]:
    """Token ids of the context the retokenization check places candidates in: the objective's first context
    (`objective.context_ids[0]`), or () for an objective without contexts."""
    contexts = getattr(objective, "context_ids", None)
    return tuple(int(t) for t in contexts[0]) if contexts else ()
