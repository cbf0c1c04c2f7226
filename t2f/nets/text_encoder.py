"""Text side of T2F: caption encoder, conditioning augmentation and the conditional generator.

* :class:`TextEncoder` -- token embedding + multi-layer LSTM over packed sequences; the
  caption embedding is the last layer's hidden state at the caption's real last token,
  so padding never changes it.
* :class:`ConditioningAugmentation` -- StackGAN's conditioning augmentation (Zhang et
  al. 2017): the text embedding parameterises ``N(mu, diag(exp(logvar)))`` from which the
  condition is sampled with the reparameterisation trick; :func:`kl_divergence` is the
  matching regulariser towards ``N(0, I)``, which the generator returns as its auxiliary loss.
* :class:`T2FGenerator` -- conditioning augmentation + ProGAN generator on ``cat(c, z)``.
  The text encoder stays a separate module (the LightningModule holds it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from t2f.nets.progan import ProGANGenerator
from t2f.nets.recorded import GeneratorNet, RecordedNet

__all__ = ["ConditioningAugmentation", "T2FGenerator", "TextEncoder", "kl_divergence"]


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over dimensions, mean over the batch."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1).mean()


class TextEncoder(RecordedNet):
    """Caption encoder: embedding + LSTM (batch_first) over packed padded sequences.

    Args:
        vocab_size: number of token ids (including PAD).
        embedding_dim: token embedding size.
        hidden_dim: LSTM hidden size, also the output embedding size.
        num_layers: stacked LSTM layers.
        dropout: dropout between LSTM layers (ignored with a single layer).
        padding_idx: PAD token id (its embedding is zero and receives no gradient).

    ``forward(tokens (B, L) long, lengths (B,) long) -> (B, hidden_dim)``.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(
            self.embedding_dim,
            self.hidden_dim,
            num_layers=self.num_layers,
            batch_first=True,
            dropout=float(dropout) if self.num_layers > 1 else 0.0,
        )

    @property
    def output_dim(self) -> int:
        """Size of the caption embedding (``hidden_dim``)."""
        return self.hidden_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.long).detach().cpu()
        if lengths.shape != (tokens.shape[0],):
            raise ValueError(
                f"lengths must have shape ({tokens.shape[0]},), got {tuple(lengths.shape)}"
            )
        if bool((lengths < 1).any()) or bool((lengths > tokens.shape[1]).any()):
            raise ValueError(
                f"every length must be in [1, {tokens.shape[1]}] (the padded token length), got {lengths.tolist()}"
            )
        packed = pack_padded_sequence(
            self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False
        )
        # With enforce_sorted=False the LSTM returns h_n in the original batch order.
        _, (h_n, _) = self.lstm(packed)
        return h_n[-1]


class ConditioningAugmentation(nn.Module):
    """StackGAN conditioning augmentation: one linear layer to ``(mu, logvar)``.

    ``forward(embedding, sample=True, eps=None) -> (c, mu, logvar)`` with
    ``c = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)``. Sampling happens in train
    *and* eval mode (the augmentation is part of the model: the generator learns to read
    some of its variety from it, so ``c = mu`` alone gives washed-out averages). Pass
    ``eps`` for reproducible samples, ``sample=False`` for the deterministic ``c = mu``.
    """

    def __init__(self, text_dim: int, condition_dim: int) -> None:
        super().__init__()
        self.text_dim = int(text_dim)
        self.condition_dim = int(condition_dim)
        self.fc = nn.Linear(self.text_dim, 2 * self.condition_dim)

    def forward(
        self, embedding: torch.Tensor, sample: bool = True, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(embedding).chunk(2, dim=-1)
        if not sample:
            return mu, mu, logvar
        if eps is None:  # float32 like a caller's draw: under bf16 autocast mu is bf16, c stays float32
            eps = torch.randn(mu.shape, device=mu.device)
        elif eps.shape != mu.shape:
            raise ValueError(f"eps must have shape {tuple(mu.shape)}, got {tuple(eps.shape)}")
        c = mu + torch.exp(0.5 * logvar) * eps
        return c, mu, logvar


class T2FGenerator(GeneratorNet):
    """T2F generator: conditioning augmentation + ProGAN generator on ``cat(c, z)``.

    Args:
        text_dim: size of the caption embedding (the text encoder's ``hidden_dim``).
        condition_dim: size of the augmented condition ``c``.
        noise_dim: size of the noise ``z``.
        max_resolution, channels, fmap_base, fmap_max, out_channels: passed to
            :class:`~t2f.nets.progan.ProGANGenerator` (latent size ``condition_dim + noise_dim``).

        kl_weight: weight of the conditioning augmentation's KL term, the auxiliary loss that
            ``forward`` returns (StackGAN's 1.0; T2F's CPU default 0.05).
        condition_channels: 0 (T2F): the condition ``c`` enters only with the noise at 4x4.
            Above 0, every block above 4x4 also reads ``c`` as that many projected feature maps,
            so that the caption reaches the resolutions where small attributes are drawn.

    ``forward(z, condition, stage=, alpha=, noise=[eps]) -> (images, {"kl": weighted KL})`` with a
    fresh conditioning-augmentation draw unless ``noise`` holds one; images are unbounded like ProGAN's.
    """

    family = "t2f"
    text_conditional = True

    def sampling_noise(self, n: int, generator: torch.Generator | None, device: torch.device | str
                       ) -> list[Tensor]:
        """One conditioning-augmentation draw per image (part of a face's variety, as in training)."""
        return [torch.randn(n, self.condition_dim, generator=generator, device=None if generator else device)
                .to(device)]

    def sample(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
               psi: float = 1.0, noise: Sequence[Tensor] | None = None, truncation_cutoff: int | None = None
               ) -> Tensor:
        """Without ``noise`` the condition is the augmentation's mean (``c = mu``)."""
        eps = None if noise is None else noise[0] * psi  # psi pulls both z and the CA draw towards the mean
        return self.images(condition, z * psi, stage, alpha, sample=eps is not None, eps=eps)[0]

    @property
    def latent_dim(self) -> int:
        return self.noise_dim

    def __init__(
        self,
        text_dim: int,
        condition_dim: int,
        noise_dim: int,
        max_resolution: int,
        channels: Sequence[int] | None = None,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        out_channels: int = 3,
        kl_weight: float = 1.0,
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        if not kl_weight >= 0:
            raise ValueError(f"model.generator.kl_weight={kl_weight} must be >= 0")
        if not condition_channels >= 0:
            raise ValueError(f"model.generator.condition_channels={condition_channels} must be >= 0")
        self.kl_weight = float(kl_weight)
        self.text_dim = int(text_dim)
        self.condition_dim = int(condition_dim)
        self.noise_dim = int(noise_dim)
        self.ca = ConditioningAugmentation(self.text_dim, self.condition_dim)
        self.generator = ProGANGenerator(
            self.condition_dim + self.noise_dim,
            max_resolution,
            channels=channels,
            fmap_base=fmap_base,
            fmap_max=fmap_max,
            out_channels=out_channels,
            condition_dim=self.condition_dim,
            condition_channels=condition_channels,
        )
        self.max_resolution = self.generator.max_resolution
        self.num_stages = self.generator.num_stages
        self.resolutions = self.generator.resolutions

    def forward(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
                noise: Sequence[Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Training pass: images and the weighted KL of the conditioning augmentation."""
        if condition is None:
            raise ValueError("the T2F generator is text-conditional: pass the caption embedding")
        images, mu, logvar = self.images(condition, z, stage, alpha, eps=None if noise is None else noise[0])
        return images, {"kl": self.kl_weight * kl_divergence(mu, logvar)}

    def images(
        self,
        text_embedding: torch.Tensor,
        z: torch.Tensor,
        stage: int | None = None,
        alpha: float = 1.0,
        sample: bool = True,
        eps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, mu, logvar)`` (``sample``/``eps``: see :class:`ConditioningAugmentation`)."""
        if z.dim() != 2 or z.shape != (text_embedding.shape[0], self.noise_dim):
            raise ValueError(
                f"z must have shape ({text_embedding.shape[0]}, {self.noise_dim}), got {tuple(z.shape)}"
            )
        c, mu, logvar = self.ca(text_embedding, sample=sample, eps=eps)
        images = self.generator(torch.cat([c, z], dim=1), stage, alpha, condition=c)
        return images, mu, logvar
