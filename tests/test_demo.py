"""The web demo's functions (no browser): faces for a caption, style mixing, bad input on the page."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from t2f.demo import Demo, build_app
from t2f.export import load_generator
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demos(tiny_checkpoint):
    return {name: Demo(load_generator(tiny_checkpoint(name))) for name in ("t2f", "stylegan", "dcgan")}


def test_a_caption_gives_the_faces_asked_for_and_the_seed_fixes_them(demos) -> None:
    demo = demos["t2f"]
    picture, message = demo.faces("a smiling woman with long red hair", 4, 3, 1.0)
    assert message == "" and picture is not None
    again, _ = demo.faces("a smiling woman with long red hair", 4, 3, 1.0)
    other, _ = demo.faces("a smiling woman with long red hair", 4, 4, 1.0)
    assert np.array_equal(np.asarray(picture), np.asarray(again))
    assert not np.array_equal(np.asarray(picture), np.asarray(other))
    cells = demo.faces("a man", 9, 0, 0.7)[0]
    assert cells.height == 3 * (64 + 2) + 2  # 9 faces of 32 px: a 3 x 3 grid of 64 px cells


@pytest.mark.parametrize("caption, n, seed, psi, message", [
    ("", 4, 0, 1.0, "Type a caption first"),
    ("   ", 4, 0, 1.0, "Type a caption first"),
    ("a man", 0, 0, 1.0, "n must be between 1 and 64"),
    ("a man", 1000, 0, 1.0, "n must be between 1 and 64"),
    ("a man", "many", 0, 1.0, "n must be a whole number"),
    ("a man", 4, -1, 1.0, "the seed must be 0 or more"),
    ("a man", 4, None, 1.0, "the seed must be a whole number"),
    ("a man", 4, 0, 2.0, "psi"),
])
def test_bad_input_is_answered_on_the_page(demos, caption, n, seed, psi, message) -> None:
    picture, text = demos["t2f"].faces(caption, n, seed, psi)
    assert picture is None and message in text


def test_unknown_words_are_named_and_the_faces_still_come(demos) -> None:
    picture, message = demos["t2f"].faces("a woman with zorblax hair and qwfp", 2, 0, 1.0)
    assert picture is not None and "zorblax, qwfp" in message


def test_unconditional_models_need_no_caption_and_only_stylegan_mixes(demos) -> None:
    picture, message = demos["dcgan"].faces("", 4, 0, 1.0)
    assert picture is not None and message == "" and not demos["dcgan"].conditional
    mixed, message = demos["stylegan"].mix("", 3, 2, "coarse", 0, 1.0)
    assert message == "" and mixed.height == 3 * (64 + 2) + 2 and mixed.width == 4 * (64 + 2) + 2
    assert demos["stylegan"].mix("", 3, 2, "sideways", 0, 1.0)[1].startswith("mix=sideways selects no style layer")
    assert demos["dcgan"].mix("", 3, 2, "coarse", 0, 1.0) == (None, "Style mixing needs a StyleGAN model; "
                                                                   "this one is a dcgan model.")


def test_the_page_hides_the_caption_box_for_unconditional_models_and_has_a_mixing_tab_for_stylegan(demos) -> None:
    def layout(demo):
        app = build_app(demo).config
        labels = [c["props"].get("label") for c in app["components"]]
        visible = {c["props"].get("label"): c["props"].get("visible", True) for c in app["components"]}
        return labels, visible

    labels, visible = layout(demos["t2f"])
    assert visible["Caption"] is True and "Style mixing" not in labels
    labels, visible = layout(demos["dcgan"])
    assert visible["Caption"] is False
    labels, _ = layout(demos["stylegan"])
    assert "Style mixing" in labels


@pytest.mark.slow
def test_the_command_without_a_checkpoint_is_one_clear_line() -> None:
    result = subprocess.run([sys.executable, "-m", "t2f.demo"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: ckpt is required")
