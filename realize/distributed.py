"""Process-group glue for batch audits: one plain process, `accelerate launch`, or `torchrun`, CPU or GPU.

    process_state() -> accelerate.PartialState   # a single process when no launcher set the environment

On a machine without CUDA the state is created with `cpu=True` (gloo), which several CPU processes need; with CUDA
the launcher's defaults apply unchanged. The barrier timeout is long (48 h) because one rank may be auditing a slow
item while the others wait to merge. Thread count: Accelerate divides the physical cores among the local processes
when OMP_NUM_THREADS is unset; torchrun sets OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import torch
from accelerate import PartialState

logger = logging.getLogger(__name__)
BARRIER_TIMEOUT = timedelta(hours=48)


def process_state() -> PartialState:
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
    if state.num_processes > 1:
        logger.info("process %d of %d (%s), %d torch threads", state.process_index, state.num_processes,
                    state.distributed_type, torch.get_num_threads())
    return state
