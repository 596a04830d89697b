"""The audit's axes, each implementing one protocol (`realize.axes.common.AuditAxis`): the activation axis (can a
prompt produce the steer's shift?) and the behavior axis (can a prompt make the model do what the steer does?).

    measure_axis(AXIS_IMPLEMENTATIONS[axis], setting, target, goal, config, earlier) -> AxisEvidence
"""

from __future__ import annotations

from realize.axes.activation import ActivationAxis
from realize.axes.behavior import BehaviorAxis
from realize.axes.common import AuditAxis, measure_axis
from realize.evidence import Axis

AXIS_IMPLEMENTATIONS: dict[Axis, AuditAxis] = {"activation": ActivationAxis(), "behavior": BehaviorAxis()}

__all__ = ["AXIS_IMPLEMENTATIONS", "AuditAxis", "measure_axis"]
