"""How much of each caption attribute a T2F checkpoint's text encoder keeps: linear probes.

    python experiments/probe_text_encoder.py <run>/checkpoints/last.ckpt [--random]

Encodes 4,000 fresh synthetic captions, fits one logistic-regression probe per attribute on 75%
of the captions that mention it and prints held-out accuracy, for the caption embedding and for
the conditioning-augmentation mean the generator reads. ``--random`` re-initialises the encoder
first: a trained encoder that keeps less than a random one is being collapsed by its training.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from t2f.checkpoints import build_module, checkpoint_vocab, read_checkpoint
from t2f.data.synthetic import ATTRIBUTES, make_caption, parse_caption, sample_attributes


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--random", action="store_true", help="re-initialise the text encoder first")
    parser.add_argument("--captions", type=int, default=4000)
    args = parser.parse_args()
    ckpt = read_checkpoint(args.ckpt)  # the module and vocabulary only: no dataset to build
    module, vocab = build_module(ckpt, args.ckpt), checkpoint_vocab(ckpt)
    if getattr(module, "text_encoder", None) is None:
        raise SystemExit(f"{args.ckpt} is not a text-conditional model")
    if args.random:
        torch.manual_seed(0)
        for layer in module.text_encoder.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    rng = np.random.default_rng(0)
    captions = [make_caption(sample_attributes(rng), rng) for _ in range(args.captions)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = module.encode_captions(captions, vocab)
    with torch.no_grad():
        embedding = module.text_embedding(inputs)
        features = {"embedding": embedding}
        if hasattr(module.generator_ema, "ca"):
            features["ca_mean"] = module.generator_ema.ca(embedding, sample=False)[1]
    mentioned = [parse_caption(c) for c in captions]
    print("attribute".ljust(12), *(name.rjust(10) for name in features), "chance".rjust(8))
    for attribute, values in ATTRIBUTES.items():
        rows = [i for i, m in enumerate(mentioned) if attribute in m]
        labels = torch.tensor([mentioned[i][attribute] for i in rows])
        accs = [probe_accuracy(f[rows], labels, len(values)) for f in features.values()]
        chance = labels.bincount().max().item() / len(labels)
        print(attribute.ljust(12), *(f"{a:10.2f}" for a in accs), f"{chance:8.2f}")


if __name__ == "__main__":
    main()
