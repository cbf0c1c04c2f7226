"""DCGAN baseline: unconditional, N(0, I) latents, any of the three adversarial losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from t2f.modules.base import GANModule
from t2f.nets.dcgan import DCGANDiscriminator, DCGANGenerator


class DCGANModule(GANModule):
    def __init__(
        self,
        resolution: int = 64,
        latent_dim: int = 100,
        g_width: int = 64,
        d_width: int = 64,
        d_norm: str = "batch",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if self.adversarial.needs_input_gradients and d_norm == "batch":
            raise ValueError(
                f"model.loss.name={self.adversarial.name} penalises per-sample input gradients, "
                "which batch norm in the critic mixes across samples: set model.d_norm=layer "
                "(or none)"
            )
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d"], logger=False)  # t2f.train logs the resolved config, once
        self.latent_dim = latent_dim
        self.generator = DCGANGenerator(latent_dim, resolution, g_width)
        self.discriminator = DCGANDiscriminator(resolution, d_width, norm=d_norm)
        self.init_ema()

    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        return {"z": self.gaussian(batch_size, self.latent_dim, generator)}

    def synthesize(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        return net(inputs["z"])
