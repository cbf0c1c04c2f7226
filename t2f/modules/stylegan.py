"""StyleGAN (v1): style-based generator grown progressively, ProGAN critic with minibatch stddev
and StyleGAN's blur before each downsampling (``model.d_blur``; false: ProGAN's critic).

Training follows Karras et al. (2019): style mixing regularisation (two latents, the generator
switches from one to the other at a random layer among those of the current stage), noise
inputs, the tracked average ``w`` (updated on every training-mode forward of the training
generator; the EMA generator copies it) and truncation at sampling time only. The loss is
WGAN-GP with drift (the paper's CelebA-HQ setting) or the non-saturating logistic loss with
(lazy) R1 (its FFHQ setting): ``model.loss``.

``model.conditional=true`` makes it text-to-face: the caption embedding (T2F's LSTM text
encoder, trained with the critic by the matching-aware loss as in T2F) is projected and
concatenated with ``z`` before the mapping network, and the critic sees the embedding too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from t2f.growth import ProgressiveSchedule
from t2f.modules.base import GANModule
from t2f.modules.progressive import ProgressiveMixin
from t2f.modules.text_conditioning import TextConditionedMixin
from t2f.nets.progan import ProGANDiscriminator
from t2f.nets.stylegan import StyleGANGenerator
from t2f.nets.text_encoder import TextEncoder


class StyleGANModule(TextConditionedMixin, ProgressiveMixin, GANModule):
    """Generator inputs (``sample_inputs`` / ``fixed_sample_inputs`` / ``generate``) are a dict:

    * ``z`` (B, z_dim); conditional models add ``text_embedding`` or ``caption`` + ``caption_length``;
    * sampling only (used when the generator is in eval mode, e.g. in :meth:`generate`):
      ``psi`` (float or one per sample; 1 = no truncation), ``truncation_cutoff`` (layers that
      are truncated, default ``model.truncation_cutoff``), ``z2`` + ``mix_layer`` (style mixing:
      layers from ``mix_layer`` on take ``z2``'s style), ``noise`` (one map per layer, e.g.
      ``generator.synthesis.make_noise``; default fresh noise), or ``ws`` (B, num_layers, w_dim)
      to bypass the mapping network.
    """

    def __init__(
        self,
        resolution: int,
        schedule: dict[str, Any],
        conditional: bool = False,
        vocab_size: int | None = None,
        text_encoder: dict[str, Any] | None = None,
        contrastive: dict[str, float] | None = None,
        word_prediction: dict[str, float] | None = None,
        mismatch: str = "shifted",
        z_dim: int = 128,
        w_dim: int = 128,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        noise_lr_multiplier: float = 1.0,
        embed_dim: int | None = None,
        g_channels: list[int] | None = None,
        d_channels: list[int] | None = None,
        fmap_base: int = 512,
        fmap_max: int = 64,
        mbstd_group_size: int = 4,
        style_mixing_prob: float = 0.9,
        w_avg_beta: float = 0.995,
        truncation_psi: float = 0.7,
        truncation_cutoff: int | None = 8,
        d_blur: bool = False,  # the config says true; false keeps older checkpoints (no d_blur key) as they trained
        **base: Any,
    ) -> None:
        growth = ProgressiveSchedule(max_resolution=resolution, **dict(schedule))
        super().__init__(total_kimg=growth.total_kimg, **base)
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d"], logger=False)  # t2f.train logs the resolved config, once
        self.init_progressive(growth)
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"model.style_mixing_prob={style_mixing_prob} must be in [0, 1]")
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"model.w_avg_beta={w_avg_beta} must be in [0, 1)")
        self.conditional = bool(conditional)
        self.z_dim = int(z_dim)
        self.style_mixing_prob = float(style_mixing_prob)
        self.truncation_psi = float(truncation_psi)
        self.truncation_cutoff = truncation_cutoff
        text_dim = 0
        self.text_encoder = None  # unconditional unless model.conditional=true
        if self.conditional:
            if not vocab_size:
                raise ValueError(
                    "model.conditional=true needs model.vocab_size (filled in by train() from a "
                    "captioned dataset: synthetic, celeba, face2text, or folder with captions)"
                )
            self.text_encoder = TextEncoder(vocab_size, **dict(text_encoder or {}))
            text_dim = self.text_encoder.output_dim
        self.init_mismatch(mismatch)
        self.init_contrastive(contrastive)
        self.init_word_prediction(word_prediction)
        widths = {"fmap_base": fmap_base, "fmap_max": fmap_max}
        self.generator = StyleGANGenerator(
            z_dim, w_dim, resolution, mapping_layers=mapping_layers,
            mapping_lr_multiplier=mapping_lr_multiplier, condition_dim=text_dim, embed_dim=embed_dim,
            channels=g_channels, w_avg_beta=w_avg_beta, noise_lr_multiplier=noise_lr_multiplier, **widths,
        )
        self.discriminator = ProGANDiscriminator(
            resolution, channels=d_channels, mbstd_group_size=mbstd_group_size,
            condition_dim=text_dim, embed_dim=self.image_embedding_dim, blur=d_blur, **widths,
        )
        self.init_ema()

    # --- generation -------------------------------------------------------------------------
    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        return {**(conditions or {}), "z": self.gaussian(batch_size, self.z_dim, generator)}

    def synthesize(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """Training mode: style mixing with ``model.style_mixing_prob``, never truncation.
        Eval mode (sampling): truncation, explicit mixing and noise from ``inputs``."""
        noise = inputs.get("noise")
        if noise is not None:
            noise = [n.to(self.device) for n in noise]
        if "ws" in inputs:
            return net.synthesis(inputs["ws"].to(self.device), self.stage, self.alpha, noise)
        if net.training:
            style = {"mixing_prob": self.style_mixing_prob}
        else:
            z2 = inputs.get("z2")
            style = {
                "psi": inputs.get("psi", 1.0),
                "truncation_cutoff": inputs.get("truncation_cutoff", self.truncation_cutoff),
                "mix_layer": inputs.get("mix_layer"),
                "z2": None if z2 is None else z2.to(self.device),
            }
        return net(inputs["z"], self.stage, self.alpha, condition=self.text_embedding(inputs), noise=noise, **style)

    def fixed_sample_inputs(self, n: int, nrow: int, seed: int
                            ) -> tuple[dict[str, Any], list[str] | None]:
        """The top half of the grid's rows without truncation (psi = 1), the bottom half the
        same latents, noise (and captions) with psi = ``model.truncation_psi``."""
        rows = -(-n // nrow)
        top_rows = -(-rows // 2)
        n_top = min(n, top_rows * nrow)
        repeat = torch.arange(n) % n_top  # the bottom half reuses the top half's inputs
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n_top, self.z_dim, generator=gen)[repeat]
        noise = [m[repeat] for m in self.generator.synthesis.make_noise(n_top, generator=gen)]
        psi = torch.where(torch.arange(n) < n_top, 1.0, self.truncation_psi)
        inputs: dict[str, Any] = {"z": z.to(self.device), "psi": psi.to(self.device), "noise": noise}
        psis = [1.0] * top_rows + [self.truncation_psi] * (rows - top_rows)
        if not self.conditional:
            return inputs, [f"psi={p:g}" for p in psis]
        datamodule = self.trainer.datamodule
        captions = datamodule.sample_captions(top_rows, seed=seed)
        per_image = [c for c in captions for _ in range(nrow)][:n_top]
        inputs.update(self.encode_captions([per_image[i] for i in repeat.tolist()], datamodule.vocab))
        labels = [f"psi={p:g}: {captions[r % top_rows]}" for r, p in enumerate(psis)]
        return inputs, labels
