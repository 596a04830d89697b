"""Audit one work item (a vector or a control) on each of its axes. The result is evidence only (`VectorAudit`);
`realize.judging` turns it into verdicts.

Behavior positives first distill their steer from their held-out prompt (at every layer of the steers they
calibrate); then each axis runs the same protocol (`realize.axes`), activation first (the behavior axis measures
the activation axis's best prompt too). Vectors also get the on-manifold share.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from realize.axes import AXIS_IMPLEMENTATIONS, measure_axis
from realize.config import AuditConfig
from realize.data.shift import project_out
from realize.distill import DistillConfig, train_distilled
from realize.effects import bin_effect, matched_scale
from realize.evidence import ActivationScore, Axis, AxisEvidence, VectorAudit
from realize.magnitude import magnitude_at
from realize.scorers.manifold import manifold_share
from realize.setting import AuditSetting
from realize.targets import Target

logger = logging.getLogger(__name__)
# Adam's rate for behavior positives: at the quick preset's 30 steps, 0.2 lets the held-out prompt recover 0.40 / 0.28
# of its own distilled steer's behavior where 0.05 gave 0.21 / -0.13 (two positives, layer 7; 100 steps at 0.05:
# 0.25 / 0.22), for the same cost.
DISTILL_LR = 0.2


def _manifold(setting: AuditSetting, directions: dict[int, torch.Tensor]) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, v in directions.items():
        share = manifold_share(setting.lm, v, i)
        suffix = "" if len(directions) == 1 else f"@L{i}"
        out |= {f"share90{suffix}": share.share90, f"share99{suffix}": share.share99,
                f"random_share90{suffix}": share.random_share90, f"random_share99{suffix}": share.random_share99}
    return out


def audit_target(setting: AuditSetting, target: Target, config: AuditConfig) -> VectorAudit:
    """The evidence for one target (see module docstring)."""
    start = time.perf_counter()
    directions, distill_losses = dict(target.directions), None
    if target.kind == "behavior-positive":
        distilled = train_distilled(setting.lm, setting.layout, target.prompt, target.layers,
                                    setting.contexts.optimization,
                                    DistillConfig(steps=config.distill_steps, tokens=config.behavior_tokens,
                                                  lr=DISTILL_LR))
        directions = dict(distilled.vector.directions)
        distill_losses = (distilled.losses[0], distilled.losses[-1])
    scale, effect = target.scale, target.effect
    if target.kind == "null" and target.effect_bin is not None:  # a behavior null: rescaled to the effect bin
        assert setting.behavior_contexts is not None
        scale, effect = matched_scale(setting.lm, setting.layout, directions, setting.behavior_contexts.optimization,
                                      bin_effect(target.effect_bin))
    goal = {i: scale * v.float() for i, v in sorted(directions.items())}
    axes: dict[Axis, AxisEvidence] = {}
    for axis in target.axes:
        evidence = measure_axis(AXIS_IMPLEMENTATIONS[axis], setting, target, goal, config, axes)
        if evidence.behavior is not None and distill_losses is not None:
            evidence = dataclasses.replace(evidence, behavior=dataclasses.replace(evidence.behavior,
                                                                                  distill_losses=distill_losses))
        axes[axis] = evidence
    activation = axes.get("activation")
    best = activation.best.score if activation is not None and activation.best is not None else None
    steer_norms = {i: float(project_out(t, setting.generic_magnitude[i]).norm()) for i, t in goal.items()}
    mag = magnitude_at(steer_norms, scale, setting.natural_norms,
                       best.fve if isinstance(best, ActivationScore) else None)
    return VectorAudit(
        vector_id=target.vector_id, name=target.name, source=target.source, kind=target.kind,
        layers=tuple(sorted(goal)), layer_norms=tuple(float(goal[i].norm()) for i in sorted(goal)),
        scale=scale, method=target.method,
        target_norm=float(torch.linalg.vector_norm(torch.cat([goal[i] for i in sorted(goal)]))),
        magnitude=mag, min_realism=setting.min_realism, unnatural_below=setting.classifier.unnatural_below,
        axes=axes,
        manifold=_manifold(setting, directions) if target.kind == "vector" and config.manifold else {},
        prompt=target.prompt, nearest_corpus=target.nearest_corpus, source_sha256=target.source_sha256,
        strength=tuple(float(goal[i].norm()) / setting.residual_norm[i] for i in sorted(goal)),
        effect=effect, effect_bin=target.effect_bin,
        seconds=time.perf_counter() - start,
    )
