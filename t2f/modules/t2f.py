"""T2F: text to face with an LSTM text encoder, conditioning augmentation and ProGAN.

The text encoder is trained with the critic (see t2f.modules.text_conditioning); the KL
term keeps the conditioning augmentation smooth. ``mode_seeking`` (MSGAN, Mao et al. 2019)
keeps the noise in use: the generator step draws two fakes per caption (the batch's first half
of captions, twice) and is penalised by ``weight / (mean |x1 - x2| / mean |(z1, e1) - (z2, e2)|)``,
large when different latents give the same face for one caption.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from t2f.growth import ProgressiveSchedule
from t2f.losses import kl_divergence, mode_seeking_loss
from t2f.modules.base import GANModule
from t2f.modules.progressive import ProgressiveMixin
from t2f.modules.text_conditioning import TextConditionedMixin
from t2f.nets.progan import ProGANDiscriminator
from t2f.nets.text_encoder import T2FGenerator, TextEncoder


class T2FModule(TextConditionedMixin, ProgressiveMixin, GANModule):
    def __init__(
        self,
        vocab_size: int,
        resolution: int,
        schedule: dict[str, Any],
        noise_dim: int = 128,
        condition_dim: int = 128,
        text_encoder: dict[str, Any] | None = None,
        g_channels: list[int] | None = None,
        d_channels: list[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mbstd_group_size: int = 4,
        kl_weight: float = 1.0,
        text_encoder_lr_scale: float = 1.0,
        contrastive: dict[str, float] | None = None,
        word_prediction: dict[str, float] | None = None,
        mismatch: str = "shifted",
        mode_seeking: float = 0.0,
        **base: Any,
    ) -> None:
        growth = ProgressiveSchedule(max_resolution=resolution, **dict(schedule))
        super().__init__(total_kimg=growth.total_kimg, **base)
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d"], logger=False)  # t2f.train logs the resolved config, once
        self.init_progressive(growth)
        self.noise_dim = noise_dim
        self.condition_dim = condition_dim
        self.kl_weight = float(kl_weight)
        if mode_seeking < 0:
            raise ValueError(f"model.mode_seeking={mode_seeking} must be >= 0 (0: off)")
        self.mode_seeking = float(mode_seeking)
        if text_encoder_lr_scale < 0:
            raise ValueError(f"model.text_encoder_lr_scale={text_encoder_lr_scale} must be >= 0")
        self.text_encoder_lr_scale = float(text_encoder_lr_scale)
        self.text_encoder = TextEncoder(vocab_size, **dict(text_encoder or {}))
        text_dim = self.text_encoder.output_dim
        widths = {"fmap_base": fmap_base, "fmap_max": fmap_max}
        self.generator = T2FGenerator(
            text_dim, condition_dim, noise_dim, resolution, channels=g_channels, **widths
        )
        self.init_mismatch(mismatch)
        self.init_contrastive(contrastive)
        self.init_word_prediction(word_prediction)
        self.discriminator = ProGANDiscriminator(
            resolution, channels=d_channels, mbstd_group_size=mbstd_group_size,
            condition_dim=text_dim, embed_dim=self.image_embedding_dim, **widths,
        )
        self.init_ema()

    # --- generation -------------------------------------------------------------------------
    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        # Conditioning-augmentation noise is drawn here with z, so a seed fixes the whole sample.
        return {**(conditions or {}), "z": self.gaussian(batch_size, self.noise_dim, generator),
                "ca_eps": self.gaussian(batch_size, self.condition_dim, generator)}

    def synthesize(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        images, mu, logvar = net(self.text_embedding(inputs), inputs["z"], self.stage, self.alpha,
                                 sample=inputs.get("ca_sample", True), eps=inputs.get("ca_eps"))
        inputs["mu"], inputs["logvar"] = mu, logvar
        inputs["images"] = images
        return images

    def generator_step_conditions(self, conditions: dict[str, Any]) -> dict[str, Any]:
        if self.mode_seeking <= 0:
            return conditions
        n = conditions["text_embedding"].shape[0]
        index = torch.arange(n // 2, device=self.device).repeat(2)
        index = torch.cat([index, index[: n - len(index)]])  # an odd batch: one caption thrice
        paired = {k: v[index] for k, v in conditions.items()}
        if "same_caption" in conditions:
            paired["same_caption"] = conditions["same_caption"][index][:, index]
        return paired

    def extra_g_terms(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        terms = {"kl": self.kl_weight * kl_divergence(inputs["mu"], inputs["logvar"])}
        if self.mode_seeking > 0 and inputs["images"].shape[0] >= 2:
            terms["mode_seeking"] = self.mode_seeking * mode_seeking_loss(
                inputs["images"], torch.cat([inputs["z"], inputs["ca_eps"]], dim=1))
        return terms

    def fixed_sample_inputs(self, n: int, nrow: int, seed: int
                            ) -> tuple[dict[str, Any], list[str] | None]:
        datamodule = self.trainer.datamodule
        rows = -(-n // nrow)
        captions = datamodule.sample_captions(rows, seed=seed)
        per_image = [c for c in captions for _ in range(nrow)][:n]
        gen = torch.Generator().manual_seed(seed)
        inputs = self.sample_inputs(n, self.encode_captions(per_image, datamodule.vocab), gen)
        return inputs, captions
