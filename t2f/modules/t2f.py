"""T2F: text to face with an LSTM text encoder, conditioning augmentation and ProGAN.

Training signal for the text encoder: it is optimised with the critic, by the
matching-aware loss (a real face with its own caption is real; with another sample's
caption it is fake), which rewards embeddings that tell captions apart by what they say
about a face. The generator reads the embedding without changing it, so it cannot
"explain away" the caption by moving the embedding; the KL term keeps the conditioning
augmentation smooth. (The original T2F code trained the encoder through the generator
loss; see experiment=t2f_original and the README.)
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from t2f.callbacks.progressive import ProgressiveSchedule
from t2f.data.base import pad_captions
from t2f.data.vocab import Vocabulary
from t2f.modules.base import GANModule
from t2f.modules.progressive import ProgressiveMixin
from t2f.nets.progan import ProGANDiscriminator
from t2f.nets.text_encoder import T2FGenerator, TextEncoder, kl_divergence


class T2FModule(ProgressiveMixin, GANModule):
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
        **base: Any,
    ) -> None:
        growth = ProgressiveSchedule(max_resolution=resolution, **dict(schedule))
        super().__init__(total_kimg=growth.total_kimg, **base)
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d"])
        self.init_progressive(growth)
        self.noise_dim = noise_dim
        self.kl_weight = float(kl_weight)
        self.text_encoder = TextEncoder(vocab_size, **dict(text_encoder or {}))
        text_dim = self.text_encoder.output_dim
        widths = {"fmap_base": fmap_base, "fmap_max": fmap_max}
        self.generator = T2FGenerator(
            text_dim, condition_dim, noise_dim, resolution, channels=g_channels, **widths
        )
        self.discriminator = ProGANDiscriminator(
            resolution, channels=d_channels, mbstd_group_size=mbstd_group_size,
            condition_dim=text_dim, **widths,
        )
        self.init_ema()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return chain(self.discriminator.parameters(), self.text_encoder.parameters())

    # --- conditioning -----------------------------------------------------------------------
    def conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"text_embedding": self.text_encoder(batch["caption"], batch["caption_length"])}

    def critic(self, images: Tensor, conditions: dict[str, Any]) -> Tensor:
        return self.discriminator(images, self.stage, self.alpha, condition=conditions["text_embedding"])

    def mismatched_scores(self, real: Tensor, conditions: dict[str, Any]) -> Tensor:
        """Each real face scored with the next sample's caption: counts as fake."""
        shifted = conditions["text_embedding"].roll(1, dims=0)
        return self.discriminator(real, self.stage, self.alpha, condition=shifted)

    # --- generation -------------------------------------------------------------------------
    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        device = self.device if generator is None else "cpu"
        z = torch.randn(batch_size, self.noise_dim, device=device, generator=generator)
        return {**(conditions or {}), "z": z.to(self.device)}

    def synthesize(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        embedding = inputs.get("text_embedding")
        if embedding is None:  # fixed grids and generate.py pass token ids
            embedding = self.text_encoder(inputs["caption"], inputs["caption_length"])
        images, mu, logvar = net(embedding, inputs["z"], self.stage, self.alpha,
                                 sample=inputs.get("ca_sample", True))
        inputs["mu"], inputs["logvar"] = mu, logvar
        return images

    def extra_g_terms(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        return {"kl": self.kl_weight * kl_divergence(inputs["mu"], inputs["logvar"])}

    def encode_captions(self, captions: list[str], vocab: Vocabulary) -> dict[str, Tensor]:
        """Token ids and lengths for captions (unknown words map to <unk> with a warning)."""
        ids = [torch.tensor(vocab.encode(c, warn_unknown=True)) for c in captions]
        padded, lengths = pad_captions(ids)
        return {"caption": padded.to(self.device), "caption_length": lengths}

    def fixed_sample_inputs(self, n: int, nrow: int, seed: int
                            ) -> tuple[dict[str, Any], list[str] | None]:
        datamodule = self.trainer.datamodule
        rows = -(-n // nrow)
        captions = datamodule.sample_captions(rows, seed=seed)
        per_image = [c for c in captions for _ in range(nrow)][:n]
        gen = torch.Generator().manual_seed(seed)
        inputs = self.encode_captions(per_image, datamodule.vocab)
        inputs["z"] = torch.randn(n, self.noise_dim, generator=gen).to(self.device)
        inputs["ca_sample"] = False  # the grid shows each caption's mean condition
        return inputs, captions
