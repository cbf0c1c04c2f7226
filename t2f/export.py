"""Standalone generators: ``python -m t2f.export ckpt=PATH out=generator.pt``.

A training checkpoint needs Lightning, Hydra and the run's config to be read back; an
exported generator needs only PyTorch and ``t2f.nets``. The file is a plain dict (tensors,
lists, strings, numbers), so ``torch.load(path, weights_only=True)`` reads it:

* ``generator``: the EMA generator's class path, the constructor arguments it recorded
  (:mod:`t2f.nets.recorded`) and its weights (StyleGAN's tracked ``w_avg`` is one of its buffers);
  only registered t2f generators load, so a file cannot name another class;
* ``stage`` / ``alpha``: where a progressive model was in its growth (it samples there);
* ``text_encoder`` and ``vocab``: the caption encoder and its words, for text models;
* ``truncation_cutoff``: StyleGAN's truncated layers; ``source``: the checkpoint, kimg, config.

:func:`load_generator` rebuilds a :class:`StandaloneGenerator` whose ``generate`` samples
exactly what the checkpoint's module samples from the same latents (``t2f.generate`` uses
the same object for every command, from a checkpoint or an exported file).

Truncation (``psi`` in [0, 1], 1 = none) pulls latents towards their average: StyleGAN
``w <- w_avg + psi (w - w_avg)`` on the first ``truncation_cutoff`` layers; T2F and DCGAN
``z <- psi z`` (the average of z is 0: the same interpolation towards the mean latent,
"reduced-temperature" sampling). Unlike resampling a truncated normal, it keeps each face
recognisable as psi changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from t2f.checkpoints import build_module, checkpoint_vocab, read_checkpoint
from t2f.data.vocab import Vocabulary
from t2f.nets.recorded import GeneratorNet, generator_class
from t2f.nets.text_encoder import TextEncoder
from t2f.utils import check_output_file

__all__ = ["FORMAT", "StandaloneGenerator", "build_generator", "check_count", "check_psi", "checkpoint_state",
           "export", "export_state", "generator_state", "is_exported", "load_generator"]

FORMAT = "t2f.generator"
VERSION = 1


def check_psi(psi: Any) -> float:
    """``psi`` as a float in [0, 1], or an error that says what psi means."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0.0 <= float(psi) <= 1.0:
        raise ValueError(f"psi={psi!r} must be a number in [0, 1]: the truncation strength "
                         "(1 = no truncation, 0.7 = typical, 0 = the average face)")
    return float(psi)


def check_count(n: Any, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}={n!r} must be a whole number >= 1")
    return n


class StandaloneGenerator(nn.Module):
    """An EMA generator (+ text encoder and vocabulary) that samples without Lightning.

    Randomness comes only from ``seed`` (a CPU ``torch.Generator``): ``n`` latents, then for
    StyleGAN one noise map per layer and for T2F one conditioning-augmentation draw per image
    (T2F reads part of a face's variety from it, as in training and the sample grids); with
    several captions every caption gets the same ``n`` latents and draws, so the rows of a grid
    differ only by their caption.
    """

    def __init__(self, generator: nn.Module, text_encoder: nn.Module | None = None,
                 vocab: Vocabulary | None = None, stage: int | None = None, alpha: float | None = None,
                 truncation_cutoff: int | None = None, source: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(generator, GeneratorNet):
            raise ValueError(f"{type(generator).__name__} is not a t2f generator (t2f.nets.recorded.GeneratorNet)")
        self.model = generator.family
        self.generator = generator.eval().requires_grad_(False)  # it owns its nets: sampling only
        self.text_encoder = None if text_encoder is None else text_encoder.eval().requires_grad_(False)
        if generator.text_conditional and text_encoder is None:
            raise ValueError(f"a text-conditional {self.model} generator needs its text encoder")
        if self.text_encoder is not None and vocab is None:
            raise ValueError("a text-conditional generator needs the caption vocabulary it was trained with")
        self.vocab = vocab
        self.stage = stage
        self.alpha = 1.0 if alpha is None else float(alpha)
        self.truncation_cutoff = truncation_cutoff
        self.source = dict(source or {})

    @property
    def conditional(self) -> bool:
        return self.text_encoder is not None

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def mixes_styles(self) -> bool:
        """Whether the generator has per-layer styles to mix (StyleGAN's ``styles``)."""
        return callable(getattr(self.generator, "styles", None))

    @property
    def latent_dim(self) -> int:
        return int(self.generator.latent_dim)

    @property
    def resolution(self) -> int:
        """Side of the images it makes (a progressive model's current stage)."""
        if self.stage is None:
            return self.generator.full_resolution
        return 4 * 2 ** int(self.stage)

    # --- inputs -----------------------------------------------------------------------------
    def latents(self, n: int, seed: int, keyframes: int = 1) -> tuple[Tensor, list[Tensor] | None]:
        """``keyframes * n`` N(0, I) latents (keyframe-major) and the per-image noise that stays
        fixed across keyframes: StyleGAN's ``n`` noise maps per layer, T2F's ``n``
        conditioning-augmentation draws (a one-item list), all drawn from ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(keyframes * check_count(n), self.latent_dim, generator=gen).to(self.device)
        return z, self.generator.sampling_noise(n, gen, self.device)

    def embed(self, captions: Sequence[str]) -> Tensor:
        """Caption embeddings, one per caption; unknown words map to <unk> with one warning per caption."""
        if self.text_encoder is None:
            raise ValueError(f"this {self.model} generator is unconditional: it takes no captions")
        tokens, lengths = self.vocab.encode_batch(captions, warn_unknown=True)
        return self.text_encoder(tokens.to(self.device), lengths)

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def styles(self, z: Tensor, embedding: Tensor | None = None, psi: float = 1.0) -> Tensor:
        """StyleGAN: per-layer styles ``(B, layers, w_dim)``, truncated with ``psi``."""
        if not self.mixes_styles:
            raise ValueError(f"styles exist only in StyleGAN, this is a {self.model} generator")
        return self.generator.styles(z, self.stage, embedding, psi=check_psi(psi),
                                     truncation_cutoff=self.truncation_cutoff, update_w_avg=False)

    @torch.no_grad()
    def render(self, ws: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor:
        """StyleGAN: images in [-1, 1] from per-layer styles (e.g. mixed ones)."""
        return self.generator.synthesis(ws, self.stage, self.alpha, noise).clamp(-1, 1)

    @torch.no_grad()
    def synthesize(self, z: Tensor, embedding: Tensor | None = None, psi: float = 1.0,
                   noise: Sequence[Tensor] | None = None) -> Tensor:
        """Images in [-1, 1] from latents (and caption embeddings), truncated with ``psi``."""
        psi = check_psi(psi)
        if self.conditional and embedding is None:
            raise ValueError(f"this {self.model} generator is text-conditional: give captions")
        images = self.generator.sample(z, embedding, stage=self.stage, alpha=self.alpha, psi=psi, noise=noise,
                                       truncation_cutoff=self.truncation_cutoff)
        return images.clamp(-1, 1)

    def generate(self, texts: str | Sequence[str] | None = None, n: int = 1, seed: int = 0,
                 psi: float = 1.0) -> Tensor:
        """``len(texts) * n`` images in [-1, 1] (caption-major; ``n`` without captions).

        Unconditional generators ignore ``texts``; text-conditional ones need at least one.
        """
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        z, noise = self.latents(n, seed)
        if not self.conditional:
            return self.synthesize(z, psi=psi, noise=noise)
        if not texts:
            raise ValueError(f"this {self.model} generator is text-conditional: give at least one caption")
        embedding = self.embed([t for t in texts for _ in range(n)])
        z = z.repeat(len(texts), 1)
        noise = None if noise is None else [m.repeat(len(texts), *[1] * (m.dim() - 1)) for m in noise]
        return self.synthesize(z, embedding, psi, noise)

    # --- files ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The exported file's contents, e.g. to save this generator again."""
        return generator_state(self.generator, self.text_encoder, self.vocab, self.stage, self.alpha,
                               self.truncation_cutoff, self.source)


def generator_state(generator: nn.Module, text_encoder: nn.Module | None = None, vocab: Vocabulary | None = None,
                    stage: int | None = None, alpha: float | None = None, truncation_cutoff: int | None = None,
                    source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exported file's contents (plain dicts, lists, numbers, strings and CPU tensors)."""
    encoder = None
    if text_encoder is not None:
        encoder = {"kwargs": text_encoder.init_kwargs, "state_dict": _cpu(text_encoder)}
    cls = type(generator)
    return {
        "format": FORMAT, "version": VERSION, "model": generator.family,
        "generator": {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": generator.init_kwargs,
                      "state_dict": _cpu(generator)},
        "text_encoder": encoder,
        "vocab": None if vocab is None else vocab.state_dict(),
        "stage": stage, "alpha": None if stage is None else float(1.0 if alpha is None else alpha),
        "truncation_cutoff": truncation_cutoff,
        "source": dict(source or {}),
    }


def _cpu(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def export_state(module: nn.Module, vocab: Vocabulary | None, source: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The exported file's contents for a trained GAN module (its EMA generator); the module is
    left as it was, but for the EMA's batch-norm statistics, computed from its own samples if the
    checkpoint predates them."""
    module.refresh_ema_norms()
    text_encoder = None if module.text is None else module.text.encoder
    return generator_state(module.generator_ema, text_encoder, vocab if text_encoder is not None else None,
                           module.stage, module.alpha, getattr(module.generator_ema, "truncation_cutoff", None),
                           source)


def is_exported(state: dict[str, Any]) -> bool:
    return state.get("format") == FORMAT


def build_generator(state: dict[str, Any], device: torch.device | str = "cpu") -> StandaloneGenerator:
    """Rebuild a :class:`StandaloneGenerator` from an exported file's contents."""
    if not is_exported(state):
        raise ValueError(f"not an exported t2f generator (format {state.get('format')!r}, expected {FORMAT!r})")
    if int(state.get("version", 0)) > VERSION:
        raise ValueError(f"exported generator version {state['version']} is newer than this t2f "
                         f"(reads <= {VERSION}): upgrade t2f")
    spec = state["generator"]
    cls = generator_class(str(spec["class"]))
    try:
        generator = cls(**spec["kwargs"])
    except TypeError as error:
        raise ValueError(f"the file's generator arguments do not fit {spec['class']}: {error}") from None
    generator.load_state_dict(spec["state_dict"])
    if "truncation_cutoff" not in spec["kwargs"] and hasattr(generator, "truncation_cutoff"):
        generator.truncation_cutoff = state.get("truncation_cutoff")  # a file from before the generator kept it
    text_encoder = None
    if state.get("text_encoder"):
        text_encoder = TextEncoder(**state["text_encoder"]["kwargs"])
        text_encoder.load_state_dict(state["text_encoder"]["state_dict"])
    vocab = Vocabulary.from_state_dict(state["vocab"]) if state.get("vocab") else None
    return StandaloneGenerator(generator, text_encoder, vocab, state.get("stage"), state.get("alpha"),
                               state.get("truncation_cutoff"), state.get("source")).to(device)


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> StandaloneGenerator:
    """The EMA generator of ``python -m t2f.export``'s file (read with plain PyTorch: no Lightning,
    no Hydra) or of a training checkpoint (its allowed classes only, see :mod:`t2f.trusted`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a training checkpoint or a file written by "
                                f"python -m t2f.export ckpt=PATH out={path}")
    return build_generator(checkpoint_state(path), device)


def checkpoint_state(path: str | os.PathLike, exported_ok: bool = True) -> dict[str, Any]:
    """The exported contents for a training checkpoint (or an exported file's own contents)."""
    path = Path(path).expanduser()
    contents = read_checkpoint(path)
    if is_exported(contents):
        if not exported_ok:
            raise ValueError(f"ckpt={path} is already an exported generator")
        return contents
    module = build_module(contents, path)
    source = {"checkpoint": str(path.resolve()), "kimg": float(module.kimg), "config": module.run_config}
    return export_state(module, checkpoint_vocab(contents), source)


def export(ckpt: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the standalone generator of training checkpoint ``ckpt`` (default
    ``<ckpt stem>.generator.pt`` beside it); returns the path."""
    ckpt_path = Path(ckpt).expanduser()
    name = f"{ckpt_path.stem}.generator.pt"
    out_path = check_output_file(out, example=name) if out else None  # a bad out=: before the work
    state = checkpoint_state(ckpt_path, exported_ok=False)
    build_generator(state)  # a file that cannot be rebuilt is never written
    out_path = out_path or check_output_file(ckpt_path.with_name(name), example=name)
    torch.save(state, out_path)
    return out_path


def main() -> None:
    """``python -m t2f.export ckpt=PATH [out=PATH]`` (conf/export.yaml); Hydra is imported here
    only, so that :func:`load_generator` never needs it."""
    import hydra
    from omegaconf import DictConfig

    from t2f.checkpoints import user_errors

    @hydra.main(version_base="1.3", config_path="conf", config_name="export")
    def _run(cfg: DictConfig) -> None:
        with user_errors():
            print(f"Wrote {export(cfg.ckpt, cfg.get('out'))}")

    _run()

if __name__ == "__main__":
    main()
