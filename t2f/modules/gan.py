"""The one GAN module every model is a configuration of (manual optimization).

It receives its parts from the config (``model.generator``, ``model.discriminator``,
``model.loss``, and optionally ``model.text`` and ``model.schedule``) and owns nothing
model-specific: one batch of real images = one critic step; every ``d_steps_per_g`` batches the
generator takes a step, then the EMA generator follows it. The loss object runs the networks
(:class:`t2f.gan_loss.GANLoss`); the text component encodes captions
(:class:`t2f.modules.text.TextConditioner`); a progressive schedule
(:class:`t2f.growth.ProgressiveSchedule`) gives the stage and fade-in from the images seen,
which the module reads itself. Training length is counted in images seen (``images_seen``,
summed over all ranks), never in steps.

With ``model.augment`` (t2f.augment) every image the critic scores goes through the same
random differentiable transformations first: real and fake in the critic step, fake in the
generator step, after real images are brought to the stage's resolution.
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
from t2f.compiling import channels_last_when_compiling, compile_for_training
from t2f.data.vocab import Vocabulary
from t2f.gan_loss import GANLoss, Players
from t2f.growth import ProgressiveSchedule, StageState, fade_real
from t2f.modules.text import TextConditioner
from t2f.utils import select_inputs

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class GANModule(pl.LightningModule):
    """Generator, critic, loss, and optional text component and growth schedule, from the config.

    Sampling inputs (:meth:`sample_inputs`, :meth:`fixed_sample_inputs`, :meth:`generate`) are a
    dict: ``z`` (B, latent_dim), ``noise`` (the generator's other per-image randomness, e.g.
    StyleGAN's noise maps or T2F's conditioning-augmentation draw), ``psi`` (truncation: a float
    or one per sample), and for text-conditional models ``text_embedding`` or ``caption`` +
    ``caption_length``.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss | None = None,
        text: TextConditioner | None = None,
        schedule: ProgressiveSchedule | None = None,
        optimizer_g: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        d_steps_per_g: int = 1,
        total_kimg: float | None = None,
        ema_half_life_kimg: float | str = "auto",
        ema_rampup: float | None = 0.05,
        ema_norm_samples: int = 1024,
        channels_last: bool = True,
        augment: dict[str, Any] | None = None,
        compile: bool = False,
        truncation_psi: float = 1.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.text = text
        self.loss = loss or GANLoss()
        self.schedule = schedule
        check_parts(generator, discriminator, self.loss, text, schedule)
        if d_steps_per_g < 1:
            raise ValueError(f"model.d_steps_per_g={d_steps_per_g} must be >= 1")
        if schedule is not None and total_kimg is not None:
            raise ValueError("model.total_kimg is the sum of model.schedule.kimg for a progressive model: "
                             "leave it null and lengthen the schedule")
        total_kimg = schedule.total_kimg if schedule is not None else total_kimg
        if total_kimg is None or not total_kimg > 0:
            raise ValueError(f"model.total_kimg={total_kimg} must be positive")
        self.optimizer_g = check_optimizer("optimizer_g", optimizer_g or torch.optim.Adam)
        self.optimizer_d = check_optimizer("optimizer_d", optimizer_d or torch.optim.Adam)
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
        if not 0.0 <= truncation_psi <= 1.0:
            raise ValueError(f"model.truncation_psi={truncation_psi} must be in [0, 1]")
        self.truncation_psi = float(truncation_psi)
        self.images_seen = 0
        self.batches_seen = 0
        self.run_config: dict[str, Any] | None = None  # set by t2f.train, stored in checkpoints
        self.init_ema()

    # --- growth -----------------------------------------------------------------------------
    @property
    def growth(self) -> StageState | None:
        """The stage and fade-in of the images seen (None: the model does not grow)."""
        return None if self.schedule is None else self.schedule.at(self.kimg)

    @property
    def stage(self) -> int | None:
        return stage_alpha(self.growth)[0]

    @property
    def alpha(self) -> float:
        return stage_alpha(self.growth)[1]

    @property
    def resolution(self) -> int:
        """The resolution the generator draws now."""
        state = self.growth
        if state is not None:
            return state.resolution
        return self.generator.full_resolution

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000.0

    # --- networks ---------------------------------------------------------------------------
    def init_ema(self) -> None:
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # Batch-norm statistics belong to the weights they were measured with: the EMA generator's
        # are computed from its own passes (refresh_ema_norms), never copied. A text-conditional
        # generator's would need captions to draw with, so its are copied like other buffers.
        own = not getattr(self.generator, "text_conditional", False)
        norms = {name: m for name, m in self.generator_ema.named_modules() if own and isinstance(m, BATCH_NORMS)}
        self._ema_norms = list(norms.values())
        self._ema_copied_buffers = [name for name, _ in self.generator.named_buffers()
                                    if name.rpartition(".")[0] not in norms]

    def setup(self, stage: str) -> None:
        """Channels-last weights (and images, see ``training_step``) make CPU convolutions about a
        quarter faster under bf16 and a tenth under fp32. Set here, before the strategy moves the
        module and wraps it for DDP, so gradient buckets match the weights' layout."""
        device = self._trainer.strategy.root_device.type if self._trainer is not None else "cpu"
        self.channels_last, why = channels_last_when_compiling(self.channels_last, self.compile_networks, device)
        if why:
            rank_zero_info(why)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_networks:
            rank_zero_info(f"model.compile: {compile_for_training(self.generator, self.discriminator, self.loss)}")

    def players(self, state: StageState | None = None) -> Players:
        """The networks one training step plays with, at growth ``state``."""
        return Players(self.generator, self.discriminator, self.text, self.augment, *stage_alpha(state))

    def conditions(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """What the batch's captions give the losses (nothing for an unconditional model)."""
        if self.text is None:
            return {}
        return self.text.conditions(batch["caption"], batch["caption_length"])

    def gaussian(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        """N(0, I) latents on this module's device; a CPU ``generator`` makes them reproducible."""
        if generator is None:
            return torch.randn(n, dim, device=self.device)
        return torch.randn(n, dim, generator=generator).to(self.device)

    def sample_inputs(self, batch_size: int, conditions: dict[str, Any] | None = None,
                      generator: torch.Generator | None = None, noise: bool = True) -> dict[str, Any]:
        """Sampling inputs for ``batch_size`` images; a CPU ``generator`` fixes all their randomness.
        ``noise=False`` leaves out the generator's other randomness (StyleGAN's noise maps are
        large: an evaluation draws them batch by batch with :meth:`noise_inputs`)."""
        inputs = {**(conditions or {}), "z": self.gaussian(batch_size, self.generator.latent_dim, generator)}
        if noise:
            inputs.update(self.noise_inputs(batch_size, generator))
        return inputs

    def noise_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """The generator's per-image randomness besides ``z`` (e.g. StyleGAN's noise maps, T2F's
        conditioning-augmentation draw) as sampling inputs; none for a generator without it."""
        noise = self.generator.sampling_noise(batch_size, generator, self.device)
        return {} if noise is None else {"noise": noise}

    def encode_captions(self, captions: list[str], vocab: Vocabulary) -> dict[str, Tensor]:
        """Sampling inputs for captions (token ids and lengths)."""
        if self.text is None:
            raise ValueError("this model is unconditional: it takes no captions")
        return self.text.encode_captions(captions, vocab, self.device)

    def draw(self, net: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """Images (unclamped) of ``net`` (the generator or its EMA) for sampling inputs."""
        noise = inputs.get("noise")
        if noise is not None:
            noise = [m.to(self.device) for m in noise]
        condition = None if self.text is None else self.text.embed(inputs)
        stage, alpha = stage_alpha(self.growth)
        return net.sample(inputs["z"], condition, stage=stage, alpha=alpha, psi=inputs.get("psi", 1.0), noise=noise)

    def prepare_real(self, images: Tensor, state: StageState | None) -> Tensor:
        """Real images as the critic should see them now (a progressive model's: resized, faded)."""
        return images if state is None else fade_real(images, state.resolution, state.alpha)

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

    # --- training ---------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        critic = list(self.discriminator.parameters())
        optimizers = [
            self.optimizer_g(self.generator.parameters()),
            self.optimizer_d(critic if self.text is None else self.text.param_groups(critic)),
        ]
        for optimizer in optimizers:  # groups with an "lr_scale" run at a fraction of the lr
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * group.setdefault("lr_scale", 1.0)
        return optimizers

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """One critic step (and a generator step every ``d_steps_per_g`` batches); returns the
        values it logged, detached, which callbacks read as ``outputs`` (the divergence guard
        tests the losses on their device, without a host sync)."""
        opt_g, opt_d = self.optimizers()
        state = self.growth
        players = self.players(state)
        real = self.prepare_real(batch["image"], state)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        batch_size = real.shape[0]

        with self.toggled_optimizer(opt_d):
            adaptive = self.augment is not None and self.augment.adaptive
            d_loss, d_parts = self.loss.critic_loss(
                players, real, self.conditions(batch),
                step=self.batches_seen,  # counts critic steps: lazy R1 runs every r1_interval
                on_real_scores=self.observe_real_scores if adaptive else None)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()

        logs = {"loss/d": d_loss.detach(), **{f"loss/d_{k}": v.detach() for k, v in d_parts.items()}}
        self.batches_seen += 1
        logs.update(self.adapt_augmentation())
        if self.batches_seen % self.d_steps_per_g == 0:
            with self.toggled_optimizer(opt_g):
                with torch.no_grad():  # the generator step trains the generator only
                    conditions = self.conditions(batch)
                g_loss, g_parts = self.loss.generator_loss(players, batch_size, conditions, real.device)
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
                    self.draw(net, inputs)
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
            return self.draw(net, inputs).clamp(-1, 1)
        finally:
            net.train(was_training)

    def fixed_sample_inputs(self, n: int, nrow: int, seed: int) -> tuple[dict[str, Any], list[str] | None]:
        """Inputs for the fixed sample grid (rows of ``nrow``) and one label per row (or None).

        With ``model.truncation_psi`` < 1 the top half of the rows is drawn without truncation
        and the bottom half repeats their inputs at that psi; a text-conditional model's rows each
        take one caption of the datamodule's."""
        rows = -(-n // nrow)
        truncated = self.truncation_psi < 1.0
        top_rows = -(-rows // 2) if truncated else rows
        n_top = min(n, top_rows * nrow)
        repeat = torch.arange(n) % n_top  # the bottom half reuses the top half's inputs
        gen = torch.Generator().manual_seed(seed)
        inputs = select_inputs(self.sample_inputs(n_top, {}, generator=gen), repeat)
        psis = [1.0] * top_rows + [self.truncation_psi] * (rows - top_rows)
        if truncated:
            inputs["psi"] = torch.where(torch.arange(n) < n_top, 1.0, self.truncation_psi).to(self.device)
        psi_labels = [f"psi={p:g}" for p in psis] if truncated else None
        if self.text is None:
            return inputs, psi_labels
        datamodule = self.trainer.datamodule
        captions = datamodule.sample_captions(top_rows, seed=seed)
        per_image = [c for c in captions for _ in range(nrow)][:n_top]
        inputs.update(self.encode_captions([per_image[i] for i in repeat.tolist()], datamodule.vocab))
        if not truncated:
            return inputs, captions
        return inputs, [f"{label}: {captions[r % top_rows]}" for r, label in enumerate(psi_labels)]

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


def stage_alpha(state: StageState | None) -> tuple[int | None, float]:
    """The nets' ``stage`` and ``alpha`` for a growth state (None: full resolution, no fade)."""
    return (None, 1.0) if state is None else (state.stage, state.alpha)


def check_parts(generator: nn.Module, discriminator: nn.Module, loss: GANLoss, text: TextConditioner | None,
                schedule: ProgressiveSchedule | None = None) -> None:
    """The parts fit together: one clear line naming the key to change when they do not."""
    if schedule is not None:
        nets = [("generator", generator), ("discriminator", discriminator)]
        if text is not None and text.word_reader is not None:
            nets.append(("text.word_reader", text.word_reader))
        for name, net in nets:
            size = getattr(net, "max_resolution", None)
            if size is not None and int(size) != schedule.resolutions[-1]:
                raise ValueError(f"model.schedule grows to {schedule.resolutions[-1]} px but model.{name} is built "
                                 f"for {size} px: give both the same max_resolution (the configs use "
                                 "dataset.resolution)")
    conditional = bool(getattr(generator, "text_conditional", False))
    if conditional and text is None:
        raise ValueError(f"model.generator ({type(generator).__name__}) is text-conditional but model.text is "
                         "null: give the model a text component (see model=t2f)")
    if text is not None and not conditional:
        raise ValueError(f"model.text is set but model.generator ({type(generator).__name__}) is unconditional: "
                         "build it with a condition size (e.g. condition_dim) or set model.text=null")
    width = 0 if text is None else text.output_dim
    if int(getattr(generator, "text_dim", width)) != width:
        raise ValueError(f"model.generator reads caption embeddings of size {generator.text_dim} but the caption "
                         f"embedding's size is {width} (model.text.encoder.hidden_dim): set the generator's "
                         "text_dim (StyleGAN: condition_dim) to it")
    if int(getattr(discriminator, "condition_dim", 0)) != width:
        raise ValueError(f"model.discriminator.condition_dim={getattr(discriminator, 'condition_dim', 0)} must be "
                         f"the caption embedding's size, {width} (model.text.encoder.hidden_dim; 0 without text)")
    if text is not None and text.reads_image_embedding and int(getattr(discriminator, "embed_dim", 0)) != width:
        raise ValueError(f"model.text's contrastive or image word terms read the critic's image embedding: set "
                         f"model.discriminator.embed_dim={width} (model.text.encoder.hidden_dim)")
    if loss.needs_input_gradients and any(isinstance(m, BATCH_NORMS) for m in discriminator.modules()):
        raise ValueError(f"model.loss.name={loss.name} (or R1) penalises per-sample input gradients, which batch "
                         "norm in the critic mixes across samples: set model.discriminator.norm=layer (or none)")


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
