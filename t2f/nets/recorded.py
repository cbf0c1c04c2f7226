"""Networks that remember how they were built, so that a file can rebuild them.

:class:`RecordedNet` stores the arguments its most derived constructor received
(``init_kwargs``, defaults filled in), so ``t2f.export`` writes a generator as its class path, those
arguments and its weights, with no per-model table. :class:`GeneratorNet` is the face every
generator shares for tools (latent size, family name) and registers each generator class, so that
a file (untrusted) can only name a generator of ``t2f.nets``, never an arbitrary import.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["GeneratorNet", "RecordedNet", "generator_class", "generator_classes"]


def _plain(value: Any) -> Any:
    """Arguments as a file stores them: tuples become lists, everything else must be plain."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"constructor argument {value!r} ({type(value).__name__}) cannot be recorded: "
                    "give networks plain numbers, strings, lists and dicts")


class RecordedNet(nn.Module):
    """An ``nn.Module`` whose ``init_kwargs`` rebuild it: ``type(net)(**net.init_kwargs)``."""

    init_kwargs: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: RecordedNet, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self).__init__ is recording_init:  # the outermost constructor records
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.init_kwargs = {k: _plain(v) for k, v in list(bound.arguments.items())[1:]}

        cls.__init__ = recording_init


_GENERATORS: dict[str, type[GeneratorNet]] = {}


class GeneratorNet(RecordedNet):
    """The face every generator shares, for training and for the tools.

    ``forward(z, condition=None, *, stage=None, alpha=1.0, noise=None) -> (images, aux)`` is the
    training pass: images and the generator's auxiliary loss terms, weighted (T2F's KL; ``{}``
    for most). ``sample`` is the inference pass (truncation, no training-time randomness beyond
    ``noise``). ``stage`` None is the full resolution; non-growing generators ignore it. Every
    generator tells its output size: ``resolution``, or ``max_resolution`` when it grows.
    Capabilities beyond sampling are asked of the network itself (StyleGAN's ``styles`` for
    style mixing), never of the family name.
    """

    family: ClassVar[str] = ""
    latent_dim: int  # an attribute or property of every generator
    text_conditional: bool = False  # whether sampling needs a caption embedding

    @property
    def full_resolution(self) -> int:
        """The side of the images it draws at its last stage."""
        return int(getattr(self, "max_resolution", None) or self.resolution)

    def sampling_noise(self, n: int, generator: torch.Generator | None, device: torch.device | str
                       ) -> list[Tensor] | None:
        """The per-image randomness besides ``z`` that a fixed seed must fix (None: there is none);
        drawn with the CPU ``generator`` when given, else on ``device``."""
        return None

    def sample(self, z: Tensor, condition: Tensor | None = None, *, stage: int | None = None, alpha: float = 1.0,
               psi: float = 1.0, noise: Sequence[Tensor] | None = None, truncation_cutoff: int | None = None
               ) -> Tensor:
        """Images (unclamped) for inference: no training-time randomness beyond ``noise``,
        latents truncated towards their mean by ``psi``."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _GENERATORS[f"{cls.__module__}.{cls.__qualname__}"] = cls


def generator_classes() -> dict[str, type[GeneratorNet]]:
    """Every generator class of ``t2f.nets`` by its path (``t2f.nets.dcgan.DCGANGenerator``): each
    file of the package is imported, so a new network file registers itself."""
    import importlib
    import pkgutil

    import t2f.nets

    for info in pkgutil.iter_modules(t2f.nets.__path__):
        importlib.import_module(f"t2f.nets.{info.name}")
    return dict(_GENERATORS)


def generator_class(name: str) -> type[GeneratorNet]:
    """The generator class a file names: its path, or (files written before paths) its class name."""
    classes = generator_classes()
    if name in classes:
        return classes[name]
    by_name = {path.rsplit(".", 1)[-1]: cls for path, cls in classes.items()}
    if name in by_name:
        return by_name[name]
    raise ValueError(f"unknown generator class {name!r}: expected one of {', '.join(classes)}")
