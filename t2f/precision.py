"""``trainer.precision=auto``: bf16 mixed precision where the hardware makes it pay, else fp32.

On a CPU with bf16 matrix units (Intel AMX) autocast makes T2F's training step 1.6 times as
fast as fp32, the critic's gradient penalty included, at the same caption alignment and SWD
(README, "Precision and speed"); with AVX-512 BF16 instructions and no AMX (AMD EPYC) it was
1.5 times as fast (issue 20: 118 -> 179 images/s, T2F at 32 px, 2 cores). bf16 autocast rounds
the same way whichever instructions multiply, so the quality measured with AMX holds there.
Other CPUs have no fast bf16 path, so fp32 stays. On
GPUs auto keeps fp32: on an H100 bf16 made every model slower, at the default widths and 64 px
(T2F 0.83x, StyleGAN 0.93x) and at the paper's widths and 128 px (StyleGAN 0.91x, T2F 0.78x),
since fp32 convolutions already run in TF32 on tensor cores (experiments/results/benchmark_gpu.md).
Set ``trainer.precision=bf16-mixed`` for a model that does not fit: it cut peak GPU memory 6x.
"""

from __future__ import annotations

import torch

AUTO = "auto"


#: Where Linux lists the CPU's instruction-set flags.
CPUINFO = "/proc/cpuinfo"


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: guard it
    return bool(probe()) if probe is not None else False


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has the AVX-512 BF16 instructions (Linux: the ``avx512_bf16`` flag)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "avx512_bf16" in line.split() for line in f)
    except OSError:
        return False


def cpu_bf16_kind() -> str | None:
    """The CPU's fast bf16 path, if any: ``AMX`` or ``AVX-512 BF16``."""
    if cpu_has_bf16_matrix_units():
        return "AMX"
    return "AVX-512 BF16" if cpu_has_avx512_bf16() else None


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
        return "32-true", ("auto on a GPU: bf16 was slower than fp32 (TF32) on an H100 for every model, at the default "
                           "and the paper's widths (experiments/results/benchmark_gpu.md); "
                           "trainer.precision=bf16-mixed uses 6x less GPU memory")
    kind = cpu_bf16_kind()
    if kind == "AMX":
        return "bf16-mixed", "auto: this CPU has bf16 matrix units (AMX), 1.6x faster than fp32 at equal quality"
    if kind:
        return "bf16-mixed", "auto: this CPU has AVX-512 BF16, 1.5x faster than fp32 (T2F, AMD EPYC)"
    return "32-true", "auto: this CPU has neither bf16 matrix units (AMX) nor AVX-512 BF16; bf16 would not be faster"
