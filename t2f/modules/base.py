"""The generic GAN training step that every model reuses (manual optimization).

One batch of real images = one critic step; every ``d_steps_per_g`` batches the
generator takes a step, then the EMA generator follows it. Training length is
counted in images seen (``images_seen``, summed over all ranks), never in steps.
Subclasses own their networks and say how to score real and fake images.

With ``model.augment`` (t2f.augment) every image the critic scores goes through the same
random differentiable transformations first: real and fake in the critic step, fake in the
generator step, after real images are brought to the stage's resolution (a matching-aware
critic scores the same augmented real images under the mismatched captions). The critic's
penalties (WGAN-GP, R1) are taken at the augmented images, the points the critic scores.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from t2f.augment import build_augment
from t2f.compiling import compile_for_training
from t2f.losses import AdversarialLoss

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class GANModule(pl.LightningModule):
    """Base LightningModule: subclasses set ``self.generator`` and ``self.discriminator``.

    Subclass API: ``sample_inputs`` (latents + conditions -> generator inputs) and
    ``synthesize`` (inputs -> images in [-1, 1]); conditional models add ``conditions``,
    ``critic_condition``, ``critic_trunk``/``critic_head`` and ``mismatched_condition``; ``extra_d_terms`` and
    ``extra_g_terms`` add critic and generator loss terms.
    """

    generator: nn.Module
    discriminator: nn.Module

    def __init__(
        self,
        optimizer_g: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        loss: dict[str, Any] | None = None,
        d_steps_per_g: int = 1,
        total_kimg: float = 100.0,
        ema_half_life_kimg: float | str = "auto",
        ema_rampup: float | None = 0.05,
        ema_norm_samples: int = 1024,
        channels_last: bool = True,
        augment: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if d_steps_per_g < 1:
            raise ValueError(f"model.d_steps_per_g={d_steps_per_g} must be >= 1")
        if total_kimg <= 0:
            raise ValueError(f"model.total_kimg={total_kimg} must be positive")
        self.optimizer_g = check_optimizer("optimizer_g", optimizer_g or torch.optim.Adam)
        self.optimizer_d = check_optimizer("optimizer_d", optimizer_d or torch.optim.Adam)
        self.adversarial = AdversarialLoss(**dict(loss or {}))
        self.d_steps_per_g = int(d_steps_per_g)
        self.total_kimg = float(total_kimg)
        if ema_half_life_kimg != "auto" and not float(ema_half_life_kimg) > 0:
            raise ValueError(f"model.ema_half_life_kimg={ema_half_life_kimg} must be positive or auto")
        self.ema_half_life_kimg = None if ema_half_life_kimg == "auto" else float(ema_half_life_kimg)
        self.ema_rampup = ema_rampup
        self.ema_norm_samples = int(ema_norm_samples)
        self._ema_norms_at: int | None = None  # images_seen when the EMA's batch-norm statistics were computed
        self.channels_last = bool(channels_last)
        self.compile_networks = bool(compile)
        self.augment = build_augment(augment)  # None: the critic sees images as they are
        self.images_seen = 0
        self.batches_seen = 0
        self.run_config: dict[str, Any] | None = None  # set by t2f.train, stored in checkpoints
        self.end_epoch_early = False  # set by callbacks that need a new data loader

    # --- networks ---------------------------------------------------------------------------
    def init_ema(self) -> None:
        """Call at the end of a subclass's __init__, once ``self.generator`` exists."""
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # Batch-norm statistics belong to the weights they were measured with: the EMA
        # generator's are computed from its own passes (refresh_ema_norms), never copied.
        norms = {name: m for name, m in self.generator_ema.named_modules() if isinstance(m, BATCH_NORMS)}
        self._ema_norms = list(norms.values())
        self._ema_copied_buffers = [name for name, _ in self.generator.named_buffers()
                                    if name.rpartition(".")[0] not in norms]

    def setup(self, stage: str) -> None:
        """Channels-last weights (and images, see ``training_step``) make CPU convolutions about a
        quarter faster under bf16 and a tenth under fp32. Set here, before the strategy moves the
        module and wraps it for DDP, so gradient buckets match the weights' layout."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_networks:
            rank_zero_info(f"model.compile: {compile_for_training(self.generator, self.discriminator, self.adversarial)}")

    def conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        """What the networks are conditioned on for this batch (e.g. a text embedding)."""
        return {}

    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        """Generator inputs (latents plus the conditions) for ``batch_size`` fakes."""
        raise NotImplementedError

    def gaussian(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        """N(0, I) latents on this module's device; a CPU ``generator`` makes them reproducible."""
        if generator is None:
            return torch.randn(n, dim, device=self.device)
        return torch.randn(n, dim, generator=generator).to(self.device)

    def synthesize(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """Images from generator inputs, using ``net`` (the generator or its EMA).

        May add by-products to ``inputs`` (e.g. conditioning-augmentation statistics) for
        ``extra_g_terms`` to use.
        """
        raise NotImplementedError

    def generator_step_conditions(self, conditions: dict[str, Any]) -> dict[str, Any]:
        """The conditions the generator step draws its fakes under (default: the batch's; T2F's
        mode-seeking term pairs two fakes per caption)."""
        return conditions

    def critic_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        """The vector the critic scores images under (None: an unconditional critic)."""
        return None

    def critic_trunk(self, images: Tensor) -> Tensor:
        """The part of the critic that reads the images alone, run once per batch of real images
        for every condition they are scored under (default: none, the head is the whole critic)."""
        return images

    def critic_head(self, features: Tensor, condition: Tensor | None) -> Tensor:
        """Critic scores (B,) of the trunk's ``features`` under ``condition``."""
        return self.discriminator(features)

    def critic(self, images: Tensor, condition: Tensor | None) -> Tensor:
        """Critic scores (B,) of ``images`` under ``condition``."""
        return self.critic_head(self.critic_trunk(images), condition)

    def mismatched_condition(self, conditions: dict[str, Any]) -> Tensor | None:
        """Other samples' conditions for a matching-aware critic (None: not matching-aware)."""
        return None

    def prepare_real(self, images: Tensor) -> Tensor:
        """Real images as the critic should see them now (progressive models resize them)."""
        return images

    def augment_images(self, images: Tensor) -> Tensor:
        """Images as the critic sees them in training: through ``model.augment`` (real and fake
        alike, in both steps, at the current stage's resolution), or as they are when it is off."""
        return images if self.augment is None else self.augment(images)

    def observe_real_scores(self, scores: Tensor) -> None:
        """ADA's overfitting signal: the signs of the critic's real scores, summed over all ranks
        every batch (one all-reduce of two numbers) so that every rank adapts ``p`` the same way."""
        stats = torch.stack([scores.float().sign().sum(), scores.new_tensor(scores.numel(), dtype=torch.float32)])
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        self.augment.accumulate(stats[0], stats[1])

    def adapt_augmentation(self) -> dict[str, Tensor]:
        """After a critic step: ADA adjusts ``p`` every ``ada_interval`` critic steps; the values to log."""
        if self.augment is None:
            return {}
        logs = {}
        if self.augment.adaptive and self.batches_seen % self.augment.ada_interval == 0:
            logs["augment/r_t"] = self.augment.adjust()
        logs["augment/p"] = torch.as_tensor(self.augment.probability, dtype=torch.float32).detach().clone()
        return logs

    def extra_d_terms(self, real_features: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        """Critic loss terms beyond the adversarial one (e.g. a text-image contrastive term), read
        from the real images' ``critic_trunk`` features."""
        return {}

    def extra_g_terms(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        """Generator loss terms beyond those on its fakes' critic pass (e.g. the KL of T2F)."""
        return {}

    def generator_terms(self, fake: Tensor, conditions: dict[str, Any]) -> dict[str, Tensor]:
        """Generator loss terms read from one critic pass over its fakes: the adversarial one
        (a text-conditional critic adds its contrastive term from the same pass)."""
        return {"adv": self.adversarial.g_loss(self.critic(fake, self.critic_condition(conditions)))}

    # --- training ---------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers = [
            self.optimizer_g(self.generator.parameters()),
            self.optimizer_d(self.discriminator_parameters()),
        ]
        for optimizer in optimizers:  # groups with an "lr_scale" run at a fraction of the lr
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * group.setdefault("lr_scale", 1.0)
        return optimizers

    def discriminator_parameters(self) -> Iterator[nn.Parameter] | list[dict[str, Any]]:
        """Parameters (or param groups, optionally with an ``lr_scale``) trained by the critic
        loss (T2F adds its text encoder)."""
        return self.discriminator.parameters()

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.end_epoch_early:  # Lightning ends the epoch on -1 and rebuilds the loader
            self.end_epoch_early = False
            return -1
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """One critic step (and a generator step every ``d_steps_per_g`` batches); returns the
        values it logged, detached, which callbacks read as ``outputs`` (the divergence guard
        tests the losses on their device, without a host sync)."""
        opt_g, opt_d = self.optimizers()
        real = self.prepare_real(batch["image"])
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        batch_size = real.shape[0]

        with self.toggled_optimizer(opt_d):
            conditions = self.conditions(batch)
            with torch.no_grad():
                fake = self.synthesize(self.generator, self.sample_inputs(batch_size, conditions))
            condition = self.critic_condition(conditions)
            adaptive = self.augment is not None and self.augment.adaptive
            # augmented (or not) images are what the critic scores and what its penalties are taken at
            d_loss, d_parts = self.adversarial.d_loss(
                self.critic_head, self.augment_images(real), self.augment_images(fake), condition=condition,
                mismatched=self.mismatched_condition(conditions),
                step=self.batches_seen,  # counts critic steps: lazy R1 runs every r1_interval
                trunk=self.critic_trunk, real_terms=lambda features: self.extra_d_terms(features, conditions),
                on_real_scores=self.observe_real_scores if adaptive else None,
            )
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        logs = {"loss/d": d_loss.detach(), **{f"loss/d_{k}": v.detach() for k, v in d_parts.items()}}
        self.batches_seen += 1
        logs.update(self.adapt_augmentation())
        if self.batches_seen % self.d_steps_per_g == 0:
            with self.toggled_optimizer(opt_g):
                with torch.no_grad():  # the generator step trains the generator only
                    conditions = self.generator_step_conditions(self.conditions(batch))
                inputs = self.sample_inputs(batch_size, conditions)
                fake = self.synthesize(self.generator, inputs)
                g_parts = self.generator_terms(self.augment_images(fake), conditions)
                g_parts.update(self.extra_g_terms(inputs))
                g_loss = sum(g_parts.values())
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                opt_g.step()
            logs["loss/g"] = g_loss.detach()
            logs.update({f"loss/g_{k}": v.detach() for k, v in g_parts.items()})

        world_batch = batch_size * self.trainer.world_size
        self.images_seen += world_batch
        self.update_ema(world_batch)
        logs["kimg"] = torch.tensor(self.kimg)
        logs["step"] = torch.tensor(float(self.images_seen))  # every logger's x-axis: images seen (t2f.loggers)
        logs["lr/d"] = torch.tensor(float(opt_d.param_groups[0]["lr"]))
        logs["lr/g"] = torch.tensor(float(opt_g.param_groups[0]["lr"]))
        shown = ("kimg", "loss/d", "loss/g")  # on the progress bar; the parts go to loggers only
        self.log_dict({k: v for k, v in logs.items() if k in shown}, prog_bar=True)
        self.log_dict({k: v for k, v in logs.items() if k not in shown})
        if self.images_seen >= self.total_kimg * 1000:
            self.trainer.should_stop = True
        return logs

    def ema_half_life_images(self, world_batch: int) -> float:
        """StyleGAN2-ADA's rule: ``model.ema_half_life_kimg`` (``auto``: 10 kimg per 32 images
        of batch), but never more than ``model.ema_rampup`` of the images seen so far, so the
        average forgets its random start and follows a short run as closely as a long one."""
        kimg = self.ema_half_life_kimg if self.ema_half_life_kimg is not None else world_batch * 10 / 32
        half_life = kimg * 1000.0
        if self.ema_rampup:
            half_life = min(half_life, self.images_seen * self.ema_rampup)
        return half_life

    @torch.no_grad()
    def update_ema(self, world_batch: int) -> None:
        beta = 0.5 ** (world_batch / max(self.ema_half_life_images(world_batch), 1e-8))
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        if self._ema_copied_buffers:  # e.g. StyleGAN's tracked w_avg (names: .to() replaces buffer tensors)
            ema_buffers, buffers = dict(self.generator_ema.named_buffers()), dict(self.generator.named_buffers())
            for name in self._ema_copied_buffers:
                ema_buffers[name].copy_(buffers[name])

    @torch.no_grad()
    def refresh_ema_norms(self) -> None:
        """Batch-norm statistics of the EMA generator from ``model.ema_norm_samples`` of its own
        samples (the average over batches of 256), once per images-seen count. Copied from the
        training generator they belong to other weights: at 100 kimg on CelebA they made the
        EMA's samples worse than the raw generator's. Latents come from a fixed seed, so the same
        weights always get the same statistics and training's random state is untouched; the
        statistics are computed on this process alone, so rank 0 may sample by itself under DDP."""
        if not self._ema_norms or self._ema_norms_at == self.images_seen:
            return
        net = self.generator_ema
        was_training = net.training
        for m in self._ema_norms:
            m.reset_running_stats()
        gen = torch.Generator().manual_seed(0)
        net.eval()
        try:
            for k, start in enumerate(range(0, self.ema_norm_samples, 256)):
                inputs = self.sample_inputs(min(256, self.ema_norm_samples - start), {}, generator=gen)
                with _batch_statistics(self._ema_norms, momentum=1.0 / (k + 1)):  # a running mean of batches
                    self.synthesize(net, inputs)
        finally:
            net.train(was_training)
        self._ema_norms_at = self.images_seen

    @torch.no_grad()
    def generate(self, inputs: dict[str, Any], ema: bool = True) -> Tensor:
        """Images in [-1, 1] for sample grids and evaluation, from the EMA generator by default."""
        if ema:
            self.refresh_ema_norms()
        net = self.generator_ema if ema else self.generator
        was_training = net.training
        net.eval()
        try:
            return self.synthesize(net, inputs).clamp(-1, 1)
        finally:
            net.train(was_training)

    def fixed_sample_inputs(self, n: int, nrow: int, seed: int
                            ) -> tuple[dict[str, Any], list[str] | None]:
        """Inputs for the fixed sample grid (rows of ``nrow``) and, for conditional models,
        one label per row."""
        gen = torch.Generator().manual_seed(seed)
        return self.sample_inputs(n, {}, generator=gen), None

    # --- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.refresh_ema_norms()  # checkpoints, and generators exported from them, sample with their own
        state = checkpoint.get("state_dict", {})
        for name, buffer in self.generator_ema.named_buffers(prefix="generator_ema"):
            if name in state:
                state[name] = buffer.detach().clone()
        checkpoint["t2f"] = {"images_seen": self.images_seen, "batches_seen": self.batches_seen,
                             "ema_norms_own": True}
        if self.run_config is not None:
            checkpoint["t2f"]["config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("t2f", {})
        self.images_seen = int(state.get("images_seen", 0))
        self.batches_seen = int(state.get("batches_seen", 0))
        # the EMA's statistics in the checkpoint are its own (older checkpoints: copied, so recompute)
        self._ema_norms_at = self.images_seen if state.get("ema_norms_own") else None


def check_optimizer(name: str, factory: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Build the optimizer once on a dummy parameter, so that a bad setting (a learning rate that
    is not positive, betas outside [0, 1)) is an error naming the key now, not a traceback from
    inside ``fit``."""
    lr = (getattr(factory, "keywords", None) or {}).get("lr")
    if isinstance(lr, (int, float)) and not lr > 0:  # torch takes lr=0, which trains nothing
        raise ValueError(f"model.{name}.lr={lr} must be positive")
    try:
        factory([nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as error:
        raise ValueError(f"model.{name} cannot be built: {error}") from None
    return factory


@contextmanager
def _batch_statistics(norms: list[nn.Module], momentum: float) -> Iterator[None]:
    """Batch norm that normalises with each batch's own statistics and folds them into the
    running ones with ``momentum``, on this process only (a SyncBatchNorm would wait for the
    other ranks), whatever mode the network is in."""
    def forward(m: nn.Module, x: Tensor) -> Tensor:
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, True, momentum, m.eps)

    for m in norms:
        m.forward = partial(forward, m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward
