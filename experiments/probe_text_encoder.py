"""How much of each caption attribute a T2F checkpoint's text encoder keeps: linear probes.

    python experiments/probe_text_encoder.py <run>/checkpoints/last.ckpt [--random] [--critic]

Encodes 4,000 fresh synthetic captions, fits one logistic-regression probe per attribute on 75%
of the captions that mention it and prints held-out accuracy, for the caption embedding and for
the conditioning-augmentation mean the generator reads. ``--random`` re-initialises the encoder
first: a trained encoder that keeps less than a random one is being collapsed by its training.
``--critic`` probes the image side instead: the critic's image embedding and 4x4 features (and
the pixels, for reference) of 3,000 fresh real faces at the checkpoint's resolution.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from t2f.checkpoints import build_module, checkpoint_vocab, read_checkpoint
from t2f.data.synthetic import (
    ATTRIBUTES,
    make_caption,
    parse_caption,
    render_face,
    sample_attributes,
)


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear probe trained on the first 75% of the rows."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    n = int(len(x) * 0.75)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(x[:n] @ weight + bias, labels[:n]) + 1e-3 * weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ((x[n:] @ weight + bias).argmax(1) == labels[n:]).float().mean().item()


def print_table(features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
    """One row per attribute: probe accuracy on each feature set, and the majority-class chance."""
    print("attribute".ljust(12), *(name.rjust(10) for name in features), "chance".rjust(8))
    for attribute, values in ATTRIBUTES.items():
        rows, y = labels[attribute]
        accs = [probe_accuracy(f[rows], y, len(values)) for f in features.values()]
        chance = y.bincount().max().item() / len(y)
        print(attribute.ljust(12), *(f"{a:10.2f}" for a in accs), f"{chance:8.2f}")


def probe_critic(module: torch.nn.Module, faces: int) -> None:
    critic, stage = module.discriminator, module.stage
    rng = np.random.default_rng(1)
    attributes = [sample_attributes(rng) for _ in range(faces)]
    pixels = np.stack([render_face(a, rng, critic.resolution(stage)) for a in attributes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        grid = torch.cat([critic.features(chunk, stage, module.alpha) for chunk in images.split(500)])
    features = {"4x4": grid.flatten(1), "pixels": images.flatten(1)}
    if critic.image_embed is not None:  # read from the same 4x4 features, not a second pass
        features = {"embedding": critic.embed(features["4x4"]).detach(), **features}
    everyone = torch.arange(faces)
    print_table(features, {a: (everyone, torch.tensor([x[a] for x in attributes])) for a in ATTRIBUTES})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--random", action="store_true", help="re-initialise the text encoder first")
    parser.add_argument("--captions", type=int, default=4000)
    parser.add_argument("--critic", action="store_true", help="probe the critic's image features instead")
    args = parser.parse_args()
    ckpt = read_checkpoint(args.ckpt)  # the module and vocabulary only: no dataset to build
    module, vocab = build_module(ckpt, args.ckpt), checkpoint_vocab(ckpt)
    if module.text is None:
        raise SystemExit(f"{args.ckpt} is not a text-conditional model")
    if args.critic:
        probe_critic(module, faces=3000)
        return
    if args.random:
        torch.manual_seed(0)
        for layer in module.text.encoder.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    rng = np.random.default_rng(0)
    captions = [make_caption(sample_attributes(rng), rng) for _ in range(args.captions)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = module.encode_captions(captions, vocab)
    with torch.no_grad():
        embedding = module.text.embed(inputs)
        features = {"embedding": embedding}
        if hasattr(module.generator_ema, "ca"):
            features["ca_mean"] = module.generator_ema.ca(embedding, sample=False)[1]
    mentioned = [parse_caption(c) for c in captions]
    labels = {}
    for attribute in ATTRIBUTES:
        rows = [i for i, m in enumerate(mentioned) if attribute in m]
        labels[attribute] = (torch.tensor(rows), torch.tensor([mentioned[i][attribute] for i in rows]))
    print_table(features, labels)


if __name__ == "__main__":
    main()
