"""The outcome of one fitness evaluation, as plain data (no torch import), so that the
search (``nsga``) and the checkpoints can hold results without loading the training stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing this module never loads torch
    import torch


@dataclass
class FitnessResult:
    """metrics: JSON-able dict (accuracy and sparsity are the objectives, fractions in
    [0, 1]); student_state: the trained student's state_dict with masks folded in."""

    metrics: dict
    student_state: dict[str, torch.Tensor]
