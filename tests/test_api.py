"""The Python API beside the CLI: ``t2f.train(*overrides)``, ``t2f.load_generator``, model.compile."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import t2f
from t2f.compiling import channels_last_when_compiling, compile_for_training
from t2f.gan_loss import GANLoss
from t2f.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from tests.conftest import REPO, TINY, TINY_MODEL


def test_train_from_python_with_cli_overrides_then_load_the_generator(tmp_path, monkeypatch):
    from t2f import train

    monkeypatch.setenv("T2F_CACHE_DIR", str(tmp_path / "cache"))
    metrics = train("model=dcgan", *TINY, *TINY_MODEL["dcgan"], output_dir=tmp_path / "run")
    assert metrics["kimg"] > 0 and torch.isfinite(torch.tensor(metrics["loss/d"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    images = t2f.load_generator(ckpt).generate(n=3, seed=1)
    assert images.shape == (3, 3, 32, 32) and images.min() >= -1 and images.max() <= 1


@pytest.mark.slow
def test_from_t2f_import_train_is_callable_whatever_was_imported_first():
    import t2f.train as module  # imported first, as the CLI does: the package attribute is the module
    from t2f import train

    assert train is module and callable(train)
    # the name first, in a fresh interpreter
    code = "from t2f import train; import t2f.train as m; assert train is m and callable(train); print(train.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "t2f.train", out.stderr


def test_compile_leaves_a_penalised_critic_eager_and_keeps_parameter_names():
    def nets():
        return DCGANGenerator(16, 16, width=8), DCGANDiscriminator(16, width=8, norm="layer")

    g, d = nets()
    names = [n for n, _ in g.state_dict().items()]
    why = compile_for_training(g, d, GANLoss("wgan_gp"))
    assert g._compiled_call_impl is not None and d._compiled_call_impl is None  # compiled lazily, on first call
    assert "critic runs eagerly" in why and "gradient penalty" in why
    assert list(g.state_dict()) == names  # checkpoints load with or without compile
    g, d = nets()
    assert "R1" in compile_for_training(g, d, GANLoss("nonsaturating", r1_gamma=1.0))
    g, d = nets()
    assert compile_for_training(g, d, GANLoss("hinge")) == "the generator and the critic are compiled"
    assert d._compiled_call_impl is not None
    # compiled on a GPU, weights stay NCHW (channels-last failed there); elsewhere as configured
    assert channels_last_when_compiling(True, True, "cuda")[0] is False
    assert "NCHW" in channels_last_when_compiling(True, True, "cuda")[1]
    assert channels_last_when_compiling(True, True, "cpu") == (True, None)
    assert channels_last_when_compiling(True, False, "cuda") == (True, None)
