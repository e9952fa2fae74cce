"""This process's place among those `accelerate launch` started, for code that runs before or without an
Accelerator (commands, evaluation, distillation's teacher passes)."""

from __future__ import annotations

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


def process_state() -> PartialState:
    """Index, count and device of this process, as the Accelerator sees them. A bare `PartialState()` ignores
    ACCELERATE_USE_CPU (the Accelerator reads it): made first in processes launched on CPUs, it would leave each
    one alone and "main", and fix that for the Accelerator too."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
