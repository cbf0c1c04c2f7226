"""``trainer.precision=auto``: bf16 mixed precision where the hardware makes it pay, else fp32.

On a CPU with bf16 matrix units (Intel AMX) autocast makes T2F's training step 1.6 times as
fast as fp32, the critic's gradient penalty included, at the same caption alignment and SWD
(README, "Precision and speed"). CPUs without them have no fast bf16 path, so fp32 stays. On
GPUs auto keeps fp32: on an H200 at the default widths the step waits on kernel launches and
bf16 made T2F slower (0.86x; experiments/results/benchmark_gpu.md). Set
``trainer.precision=bf16-mixed`` for wide models, where it also halves activation memory.
"""

from __future__ import annotations

import torch

AUTO = "auto"


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: guard it
    return bool(probe()) if probe is not None else False


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting will train on the CPU."""
    if accelerator == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return accelerator == "cpu"


def resolve_precision(precision: str | int, accelerator: str) -> str | int:
    """The Lightning precision for ``trainer.precision`` (``auto`` resolved, others unchanged)."""
    return explain_precision(precision, accelerator)[0]


def explain_precision(precision: str | int, accelerator: str) -> tuple[str | int, str]:
    """The resolved precision and why, for the line a run prints at start."""
    if precision != AUTO:
        return precision, "set by trainer.precision"
    if not runs_on_cpu(str(accelerator)):
        return "32-true", ("auto on a GPU: at the default widths bf16 did not pay on an H200 "
                           "(experiments/results/benchmark_gpu.md); set trainer.precision=bf16-mixed for wide models")
    if cpu_has_bf16_matrix_units():
        return "bf16-mixed", "auto: this CPU has bf16 matrix units (AMX), 1.6x faster than fp32 at equal quality"
    return "32-true", "auto: this CPU has no bf16 matrix units (AMX); bf16 would not be faster"
