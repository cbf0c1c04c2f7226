"""A built wheel is the whole product: configs inside, console commands that run anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from t2f.conf import CONFIG_DIR
from tests.conftest import REPO

COMMANDS = ("t2f-train", "t2f-generate", "t2f-evaluate", "t2f-export", "t2f-compare", "t2f-prepare", "t2f-demo")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, site): the wheel built from a copy of the sources, installed into its own folder."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(REPO / "t2f", src / "t2f", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work / "dist"), str(src)], check=True,
                   capture_output=True, timeout=600)
    wheel = next((work / "dist").glob("t2f-*.whl"))
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=600)
    return wheel, site


@pytest.mark.slow
def test_wheel_holds_every_config_and_the_console_commands(installed_wheel):
    wheel, site = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"t2f/conf/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert len(configs) > 30 and configs <= names, sorted(configs - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    listed = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{command} = " in listed for command in COMMANDS)
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert all((site / "bin" / command).is_file() for command in COMMANDS)


@pytest.mark.slow
def test_installed_commands_run_from_any_directory(installed_wheel, tmp_path):
    _, site = installed_wheel
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}  # the wheel, not this checkout

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run("-c", "import t2f.conf; print(t2f.conf.CONFIG_DIR)")
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    job = run(str(site / "bin" / "t2f-train"), "--cfg", "job", "model=stylegan", "dataset=celeba",
              "dataset.root=/data/celeba", "dataset.resolution=128")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "_target_: t2f.nets.stylegan.StyleGANGenerator" in job.stdout and "  resolution: 128" in job.stdout
    helped = run(str(site / "bin" / "t2f-train"), "--help")
    assert helped.returncode == 0 and "model: dcgan, gan_int_cls, stylegan, stylegan_text, t2f" in helped.stdout
    generate = run(str(site / "bin" / "t2f-generate"), "--cfg", "job", "text=a smiling woman")
    assert generate.returncode == 0 and "text: a smiling woman" in generate.stdout, generate.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # --cfg job writes nothing
