"""``model.compile``: ``torch.compile`` for the networks a training step runs, where it can run.

``torch.compile`` cannot take a double backward (AOTAutograd refuses ``create_graph`` through a
compiled graph, at backward time), so a critic trained with a gradient penalty (WGAN-GP, R1),
which differentiates the critic's input gradient, stays eager; the generator is compiled either
way. A graph that fails to compile (no C++ compiler, an operation the backend lacks) runs eagerly
with a warning instead of stopping the run (dynamo's ``suppress_errors``). Compiling in place
(``nn.Module.compile``) keeps parameter names, so checkpoints load with or without it. Each new
resolution of a progressive model is a new graph, compiled on its first batch;
``experiments/benchmark.py`` prints what the first batch costs. On a GPU, compiled networks keep
NCHW weights: with channels-last weights, torch 2.11's compiled DCGAN generator failed its first
backward on an H100 (inductor expected a channels-last weight gradient of the 4x4 transposed
convolution; cuDNN returned a contiguous one), and channels-last barely changes GPU speed
(experiments/results/benchmark_gpu.md).
"""

from __future__ import annotations

from torch import nn

from t2f.gan_loss import GANLoss

#: Methods by which the modules call a critic besides ``forward`` (ProGAN's trunk, head, embedding).
CRITIC_ENTRY_POINTS = ("features", "head", "embed")


def channels_last_when_compiling(channels_last: bool, compiling: bool, device_type: str) -> tuple[bool, str | None]:
    """Whether to keep channels-last weights, and why not (for the run's log)."""
    if channels_last and compiling and device_type == "cuda":
        return False, ("model.compile on a GPU: weights and images stay NCHW (compiled channels-last "
                       "transposed convolutions failed their backward there; experiments/results/benchmark_gpu.md)")
    return channels_last, None


def compile_for_training(generator: nn.Module, critic: nn.Module, loss: GANLoss) -> str:
    """Compile ``generator`` (and ``critic`` unless ``loss`` penalises its input gradient) in
    place; returns what was compiled, and why not the critic, for the run's log."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    generator.compile()
    if loss.needs_input_gradients:
        penalty = "WGAN-GP's gradient penalty" if loss.name == "wgan_gp" else "R1"
        return (f"the generator is compiled; the critic runs eagerly ({penalty} needs a double backward, "
                "which torch.compile does not support)")
    critic.compile()
    for name in CRITIC_ENTRY_POINTS:
        method = getattr(critic, name, None)
        if callable(method):
            setattr(critic, name, torch.compile(method))
    return "the generator and the critic are compiled"
