"""Which attributes a T2F critic can see, and how loudly the generator hears each one.

    python experiments/critic_probe.py CKPT [CKPT ...]   (checkpoints of one dataset)

The contrastive term rewards the generator for faces whose critic embedding identifies their
caption, so an attribute the critic's embedding hardly encodes earns the generator little for
drawing it. For each checkpoint (a CelebA-like attribute dataset), the critic's image embedding
and its 4x4 features of real training faces fit one logistic regression per attribute; the
held-out AUC on the validation faces (and of the word reader's embedding, where the run has one,
``model/text/word_reader``) is printed beside the same probe on the evaluation's
attribute classifier's penultimate features (trained on those attributes: the reference of what a
small network sees at this resolution).

Then the generator's side: the conditioning augmentation's mean ``mu`` for the validation faces'
own captions, and per attribute the separation d' of captions that mention it from those that do
not, against the augmentation's noise (``sqrt(sum_j (mean_j difference)^2 / var_j)``, var the mean
``exp(logvar)``): how far apart a face for "with glasses" and one for a caption without them start,
measured in the noise the generator sees on the same condition.
"""

from __future__ import annotations

import sys

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from t2f.checkpoints import load_checkpoint
from t2f.metrics.alignment import classifier_features
from t2f.metrics.measures import attribute_task
from t2f.metrics.suite import _item_captions, _items, _resize, _subset, dataset_identity

SHOWN = ("Eyeglasses", "No_Beard", "Goatee", "Mustache", "Bangs", "Wearing_Lipstick", "Heavy_Makeup", "Male",
         "Smiling", "Black_Hair", "Blond_Hair", "Wearing_Hat")
CLASSIFIER_ROW = "the evaluation's classifier"


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The probability that a positive outscores a negative (ties half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def probe_aucs(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
               names: tuple[str, ...]) -> dict[str, float]:
    """Per shown attribute, the held-out AUC of an L2-regularised logistic regression on features
    standardised once with the training statistics: ``train``/``test`` are (features, attributes)."""
    (train_x, train_y), (test_x, test_y) = train, test
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    out = {}
    for i, name in enumerate(names):
        if name not in SHOWN:
            continue
        w = torch.zeros(a.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")
        y = train_y[:, i].float()

        def closure(w=w, bias=bias, opt=opt, y=y) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(a @ w + bias, y) + 1e-2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            out[name] = auc(b @ w + bias, test_y[:, i])
    return out


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: python experiments/critic_probe.py CKPT [CKPT ...]")
    torch.manual_seed(0)
    rows: dict[str, dict[str, float]] = {}
    hearing: dict[str, dict[str, float]] = {}
    names: tuple[str, ...] = ()
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path in paths:
        module, dm, _ = load_checkpoint(path, "cpu")
        task = attribute_task(dm)
        names = task.names
        res = int(module.run_config["dataset"]["resolution"])
        if not data:  # the faces of the first checkpoint's dataset, read once
            for split, dataset, count in (("train", dm.train_set, 3000), ("val", dm.val_set, 500)):
                items = _items(dataset, _subset(len(dataset), count, 0), ("image", "attributes"))
                data[split] = (_resize(items["image"], res), items["attributes"].long())
        critic = module.discriminator.eval()
        (tr_e, tr_f), (va_e, va_f) = critic_embedding(critic, data["train"][0]), critic_embedding(critic, data["val"][0])
        labels = data["train"][1], data["val"][1]
        rows[f"{path} embedding"] = probe_aucs((tr_e, labels[0]), (va_e, labels[1]), names)
        rows[f"{path} 4x4 features"] = probe_aucs((tr_f, labels[0]), (va_f, labels[1]), names)
        reader = None if module.text is None else module.text.word_reader
        if reader is not None:  # model/text/word_reader: the word heads' own network
            tr_r, va_r = (critic_embedding(reader.eval(), data[split][0])[0] for split in ("train", "val"))
            rows[f"{path} word reader embedding"] = probe_aucs((tr_r, labels[0]), (va_r, labels[1]), names)
        hearing[path] = condition_separation(module, dm, task)
        if CLASSIFIER_ROW not in rows:  # the first checkpoint's dataset: pass checkpoints of one dataset
            with initialize_config_module("t2f.conf", version_base=None):
                cfg = compose("evaluate", overrides=[f"ckpt={path}", "metrics=[alignment]"])
            suite = instantiate(cfg.metrics, num_samples=2000, num_real=2000, batch_size=cfg.batch_size).suite
            ident = dataset_identity(dm, module.run_config["dataset"])
            net = suite.classifier(task, dm, ident, res, torch.device("cpu"))[0]
            rows[CLASSIFIER_ROW] = probe_aucs((classifier_features(net, data["train"][0]), labels[0]),
                                              (classifier_features(net, data["val"][0]), labels[1]), names)
    shown = [n for n in names if n in SHOWN]
    print("held-out AUC of a linear probe per attribute (3,000 training faces, 500 validation faces)")
    print("| features | " + " | ".join(shown) + " |")
    print("|---|" + "---:|" * len(shown))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[n]:.3f}" for n in shown) + " |")
    print("\nd' of the generator's condition mean, mentioned against not mentioned, in its noise's units")
    print("| checkpoint | " + " | ".join(shown) + " |")
    print("|---|" + "---:|" * len(shown))
    for name, row in hearing.items():
        print(f"| {name} | " + " | ".join(f"{row.get(n, float('nan')):.2f}" for n in shown) + " |")


def critic_embedding(critic, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's image embedding and flattened 4x4 features of images at its last stage."""
    with torch.no_grad():
        feats = torch.cat([critic.features(x, critic.num_stages - 1) for x in images.split(256)])
        return critic.embed(feats), feats.flatten(1)


def condition_separation(module, dm, task) -> dict[str, float]:
    """Per attribute, d' of the EMA generator's ``mu`` between captions that mention it and the rest."""
    dataset = dm.val_set
    captions = [c for i in range(len(dataset)) for c in _item_captions(dataset, i)[:1]]
    text = module.text
    with torch.no_grad():
        tokens = text.encode_captions(captions, dm.vocab, "cpu")
        embedding = text.conditions(tokens["caption"], tokens["caption_length"])["text_embedding"]
        _, mu, logvar = module.generator_ema.ca(embedding, sample=False)
    var = logvar.exp().mean(0)
    mentioned = task.targets(captions) >= 0
    out = {}
    for i, name in enumerate(task.names):
        m = mentioned[:, i]
        if m.sum() >= 5 and (~m).sum() >= 5:
            out[name] = float(((mu[m].mean(0) - mu[~m].mean(0)) ** 2 / var).sum().sqrt())
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
