"""A web page to try a model: ``t2f-demo ckpt=PATH`` (or ``python -m t2f.demo ckpt=PATH``).

Type a caption, pick how many faces, a seed and the truncation psi, press Generate, see the
faces. StyleGAN models get a style-mixing tab; unconditional models hide the caption box. It
loads a training checkpoint or a file written by ``t2f.export``, on CPU or GPU (``device``),
and answers bad input (an empty caption, words the model never saw, counts out of range) on the
page. Needs the optional extra: ``pip install -e ".[demo]"`` (Gradio).

The page's work is done by :class:`Demo`, whose methods take and return plain values, so they
are tested without a browser; :func:`build_app` only lays them out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image

from t2f.data.vocab import tokenize
from t2f.export import StandaloneGenerator, check_psi, load_generator
from t2f.generate import caption_grid, mixing_layers, style_mixing_grid
from t2f.grids import grid_image

MAX_FACES = 64
MIX_GROUPS = ("coarse", "middle", "fine")


class Demo:
    """What the page does with a generator: faces for a caption, and StyleGAN's style mixing."""

    def __init__(self, gen: StandaloneGenerator) -> None:
        self.gen = gen

    @property
    def conditional(self) -> bool:
        return self.gen.conditional

    @property
    def can_mix(self) -> bool:
        return self.gen.mixes_styles

    def title(self) -> str:
        source = self.gen.source.get("checkpoint") or self.gen.source.get("path") or ""
        kind = "text-to-face" if self.conditional else "unconditional"
        return f"t2f: {self.gen.model} ({kind}, {self.gen.resolution} px) {source}".strip()

    def unknown_words(self, caption: str) -> list[str]:
        """Words of ``caption`` the model never saw (they are read as one unknown word)."""
        vocab = self.gen.vocab
        return [w for w in dict.fromkeys(tokenize(caption)) if vocab is not None and w not in vocab]

    def faces(self, caption: str, n: Any, seed: Any, psi: Any) -> tuple[Image.Image | None, str]:
        """The grid of ``n`` faces, and a message for the page (empty when all went well)."""
        try:
            n, seed, psi = _count(n), _seed(seed), check_psi(psi)
            caption = (caption or "").strip()
            if self.conditional and not caption:
                return None, "Type a caption first, e.g. \"a smiling woman with long red hair\"."
            note = ""
            if self.conditional:
                unknown = self.unknown_words(caption)
                if unknown:
                    note = (f"Words this model never saw, read as one unknown word: {', '.join(unknown)}. "
                            "Describe hair, eyes, glasses, beard, smile, skin and background in other words.")
            with _quietly():
                picture = caption_grid(self.gen, [caption] if self.conditional else [], n, seed=seed, psi=psi)
            return picture, note
        except ValueError as error:
            return None, str(error)

    def mix(self, caption: str, n: Any, rows: Any, group: str, seed: Any, psi: Any) -> tuple[Image.Image | None, str]:
        """StyleGAN's style-mixing figure: ``group`` layers of the left faces on the top faces."""
        if not self.can_mix:
            return None, f"Style mixing needs a StyleGAN model; this one is a {self.gen.model} model."
        try:
            n, rows, seed, psi = _count(n, 8), _count(rows, 8, "rows"), _seed(seed), check_psi(psi)
            caption = (caption or "").strip()
            if self.conditional and not caption:
                return None, "Type a caption first: this StyleGAN draws faces for a caption."
            layers = mixing_layers(group, self.gen.resolution)
            with _quietly():
                cells = style_mixing_grid(self.gen, n, rows, layers, seed=seed, psi=psi,
                                          caption=caption if self.conditional else None)
            return grid_image(cells, n + 1), ""
        except ValueError as error:
            return None, str(error)


@contextmanager
def _quietly() -> Iterator[None]:
    """Sampling for the page: no autograd, and no console warnings (unknown words are reported
    on the page instead)."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        yield


def _count(value: Any, limit: int = MAX_FACES, name: str = "n") -> int:
    try:
        count = int(float(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number between 1 and {limit}, got {value!r}") from None
    if not 1 <= count <= limit:
        raise ValueError(f"{name} must be between 1 and {limit}, got {count}")
    return count


def _seed(value: Any) -> int:
    try:
        seed = int(float(value))
    except (TypeError, ValueError):
        raise ValueError(f"the seed must be a whole number, got {value!r}") from None
    if seed < 0:
        raise ValueError(f"the seed must be 0 or more, got {seed}")
    return seed


def build_app(demo: Demo) -> Any:
    """The Gradio page for ``demo``."""
    import gradio as gr

    with gr.Blocks(title="t2f demo") as app:
        gr.Markdown(f"## {demo.title()}")
        with gr.Tab("Faces"):
            caption = gr.Textbox(label="Caption", placeholder="a smiling woman with long red hair and glasses",
                                 visible=demo.conditional, elem_id="caption")
            with gr.Row():
                n = gr.Slider(1, MAX_FACES, value=16, step=1, label="Faces")
                seed = gr.Number(value=0, precision=0, label="Seed")
                psi = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Truncation psi")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            image = gr.Image(type="pil", label="Faces", elem_id="faces")
            message = gr.Markdown(elem_id="message")
            button.click(demo.faces, [caption, n, seed, psi], [image, message])
            caption.submit(demo.faces, [caption, n, seed, psi], [image, message])
        if demo.can_mix:
            with gr.Tab("Style mixing"):
                mix_caption = gr.Textbox(label="Caption", visible=demo.conditional)
                with gr.Row():
                    top = gr.Slider(1, 8, value=5, step=1, label="Faces on top (source A)")
                    rows = gr.Slider(1, 8, value=3, step=1, label="Faces on the left (source B)")
                    group = gr.Radio(list(MIX_GROUPS), value="coarse", label="Styles taken from B")
                with gr.Row():
                    mix_seed = gr.Number(value=0, precision=0, label="Seed")
                    mix_psi = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Truncation psi")
                mix_button = gr.Button("Mix", variant="primary")
                mix_image = gr.Image(type="pil", label="Style mixing")
                mix_message = gr.Markdown()
                mix_button.click(demo.mix, [mix_caption, top, rows, group, mix_seed, mix_psi],
                                 [mix_image, mix_message])
    return app


def serve(cfg: DictConfig) -> None:
    """Load the generator of ``cfg.ckpt`` and serve the page (blocks until stopped)."""
    from t2f.checkpoints import resolve_device

    if not cfg.get("ckpt"):
        raise ValueError("ckpt is required: t2f-demo ckpt=<run>/checkpoints/last.ckpt (or an exported .pt)")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the demo needs Gradio: pip install -e ".[demo]" (or pip install "t2f[demo]")') from None
    demo = Demo(load_generator(cfg.ckpt, resolve_device(cfg.get("device", "auto"))))
    app = build_app(demo)
    print(f"{demo.title()}: open http://{cfg.host}:{cfg.port} in a browser (Ctrl-C stops)", flush=True)
    app.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=False, quiet=True)


def main() -> None:
    import hydra

    from t2f.checkpoints import user_errors

    @hydra.main(version_base="1.3", config_path="conf", config_name="demo")
    def _run(cfg: DictConfig) -> None:
        with user_errors():
            serve(cfg)

    _run()


if __name__ == "__main__":
    main()
