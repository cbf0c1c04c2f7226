"""Text-image alignment: attribute classifier, caption targets, ceiling and chance levels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2f.data.celeba import celeba_attribute_task
from t2f.data.synthetic import ATTRIBUTES, SyntheticDataModule, synthetic_attribute_task
from t2f.metrics.alignment import (
    AlignmentMetric,
    class_priors,
    mismatched_candidates,
    predict_log_probs,
    train_attribute_classifier,
)
from t2f.metrics.suite import _item_captions, _items, real_alignment


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.getbasetemp() / "t2f-cache" / "synthetic"
    dm = SyntheticDataModule(root=str(root), size=1200, val_size=300, resolution=16, batch_size=8)
    dm.setup("fit")
    task = synthetic_attribute_task()
    data = _items(dm.train_set, range(len(dm.train_set)), ("image", "attributes"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster on a busy 2-core machine
    try:
        net = train_attribute_classifier(data["image"], data["attributes"], task.num_classes, epochs=5, width=16,
                                         seed=0)
    finally:
        torch.set_num_threads(threads)
    priors = class_priors(data["attributes"], task.num_classes)
    return dm, task, net, priors


def _val(dm, task, net):
    idx = list(range(len(dm.val_set)))
    data = _items(dm.val_set, idx, ("image", "attributes"))
    log_probs = predict_log_probs(net, data["image"])
    captions = [_item_captions(dm.val_set, i)[0] for i in idx]
    return data["attributes"], log_probs, captions


def test_caption_targets_are_the_mentioned_true_attributes(trained) -> None:
    dm, task, _, _ = trained
    truth = _items(dm.val_set, range(50), ("attributes",))["attributes"]
    targets = task.targets([_item_captions(dm.val_set, i)[0] for i in range(50)])
    mentioned = targets >= 0
    assert mentioned.any(1).all() and not mentioned.all()  # captions mention some attributes, not all
    assert torch.equal(targets[mentioned], truth[mentioned])
    assert task.names == tuple(ATTRIBUTES)
    celeba = celeba_attribute_task(["Male", "Smiling", "No_Beard", "Eyeglasses"]).targets(
        ["A smiling man with a beard.", "This woman is wearing glasses."])
    assert celeba.tolist() == [[1, 1, 0, -1], [0, -1, -1, 1]]


def test_real_images_score_the_classifier_accuracy_and_text_blind_generator_scores_chance(trained) -> None:
    dm, task, net, priors = trained
    truth, log_probs, captions = _val(dm, task, net)
    targets = task.targets(captions)
    preds = torch.stack([lp.argmax(1) for lp in log_probs], 1)
    mentioned = targets >= 0
    # The classifier's accuracy on those images, over the attributes their captions mention.
    per_attr = [((preds[:, a] == truth[:, a]) & mentioned[:, a]).sum() / mentioned[:, a].sum()
                for a in range(len(task.names)) if mentioned[:, a].any()]
    accuracy = float(torch.stack(per_attr).mean())
    ceiling = real_alignment(net, task, dm.val_set, range(len(dm.val_set)), priors, 16, seed=0)
    assert float(ceiling["alignment_accuracy_real"]) == pytest.approx(accuracy, abs=1e-6)
    assert float(ceiling["classifier_accuracy"]) == pytest.approx(float((preds == truth).float().mean()), abs=1e-6)
    assert accuracy > 0.6, accuracy  # the classifier learned something: the test below means something

    log_priors = [p.log() for p in priors]
    real = AlignmentMetric(task.names, log_priors, sync_on_compute=False)
    cand, valid = mismatched_candidates(targets, targets, 99, torch.Generator().manual_seed(0))
    real.update(log_probs, targets, cand, valid)
    real_values = real.compute()
    assert float(real_values["alignment_accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    assert float(real_values["r_precision"]) == pytest.approx(float(ceiling["r_precision_real"]), abs=1e-6)

    # A generator that ignores the text: its images are unrelated to the captions.
    perm = torch.randperm(len(captions), generator=torch.Generator().manual_seed(1))
    blind = AlignmentMetric(task.names, log_priors, sync_on_compute=False)
    shuffled = targets[perm]
    cand, valid = mismatched_candidates(shuffled, targets, 99, torch.Generator().manual_seed(0))
    blind.update(log_probs, shuffled, cand, valid)
    blind_values = blind.compute()
    # Chance: agreement of independent prediction and caption marginals, per attribute.
    chance = []
    for a, k in enumerate(task.num_classes):
        m = targets[:, a] >= 0
        if m.any():
            p_pred = torch.bincount(preds[:, a], minlength=k).double() / len(preds)
            p_cap = torch.bincount(targets[m, a], minlength=k).double() / int(m.sum())
            chance.append(float((p_pred * p_cap).sum()))
    chance_level = sum(chance) / len(chance)
    assert abs(float(blind_values["alignment_accuracy"]) - chance_level) < 0.08, (blind_values, chance_level)
    assert float(real_values["alignment_accuracy"]) > chance_level + 0.2
    assert float(blind_values["r_precision"]) < 0.06  # about 1/100
    assert float(real_values["r_precision"]) > 0.2  # 0.33 here; chance is 0.01, so far from any CPU's rounding


def test_alignment_is_one_for_real_faces_zero_for_ignored_text_and_a_caricature_cannot_beat_real(trained) -> None:
    """Real faces that the reference never saw (the training images with their own captions)
    score about 1; the same faces with shuffled captions about 0; and a caricature (every
    mentioned attribute certain) tops the accuracy but loses on the distribution-matched score."""
    dm, task, net, priors = trained
    reference = real_alignment(net, task, dm.val_set, range(len(dm.val_set)), priors, 16, seed=0)
    evidence = {k: reference[f"evidence_{k}"] for k in ("reference", "real", "floor")}
    log_priors = [p.log() for p in priors]
    idx = list(range(600))
    data = _items(dm.train_set, idx, ("image",))
    log_probs = predict_log_probs(net, data["image"])
    targets = task.targets([_item_captions(dm.train_set, i)[0] for i in idx])

    def score(lp, tg):
        metric = AlignmentMetric(task.names, log_priors, reference=evidence, sync_on_compute=False)
        for start in (300, 0):  # out of order: the sample indices put them back
            metric.update([x[start:start + 300] for x in lp], tg[start:start + 300],
                          index=torch.arange(start, start + 300))
        return metric.compute()

    real = score(log_probs, targets)
    blind = score(log_probs, targets[torch.randperm(600, generator=torch.Generator().manual_seed(3))])
    certain = [torch.full_like(lp, -30.0).scatter(1, targets[:, a].clamp_min(0)[:, None], -1e-6)
               for a, lp in enumerate(log_probs)]
    caricature = score(certain, targets)
    assert 0.7 < float(real["alignment"]) < 1.4, real
    assert abs(float(blind["alignment"])) < 0.35, blind
    assert float(caricature["alignment_accuracy"]) == 1.0 > float(real["alignment_accuracy"])
    assert float(caricature["alignment"]) < 0.5 * float(real["alignment"]), caricature
    shifts = [float(v) for k, v in caricature.items() if k.startswith("alignment_shift/")]
    assert shifts and min(shifts) > 0  # every mentioned attribute drawn more strongly than on real faces
    assert set(caricature) >= {f"alignment_match/{n}" for n in task.names if f"alignment_shift/{n}" in caricature}
    assert float(reference["alignment_accuracy_real"]) < 1.0


def test_ks_distance_and_mentioned_evidence_by_hand() -> None:
    from t2f.metrics.alignment import ks_distance, mentioned_evidence

    a, b = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([2.5, 3.5])
    assert float(ks_distance(a, b)) == pytest.approx(0.75)  # at 2.0: F_a = 0.75, F_b = 0
    assert float(ks_distance(a, a.flip(0))) == 0.0
    lp = [torch.tensor([[0.8, 0.2], [0.5, 0.5]]).log(), torch.tensor([[0.1, 0.9], [0.3, 0.7]]).log()]
    ev = mentioned_evidence(lp, torch.tensor([[0, -1], [1, 1]]))
    expected = torch.tensor([[4.0, float("nan")], [1.0, 0.7 / 0.3]]).log()
    assert torch.allclose(ev, expected, equal_nan=True, atol=1e-5)


def test_distribution_match_per_attribute_by_hand() -> None:
    """Per attribute: the fakes' 1 - KS and their median evidence minus the reference's, so a
    caricatured attribute shows a positive shift and an ignored one a negative shift."""
    from t2f.metrics.alignment import distribution_match

    ref = torch.arange(12.0)[:, None].repeat(1, 3)  # medians 5.5
    ref[:, 2] = float("nan")  # never mentioned: not scored
    fake = ref.clone()
    fake[:, 0] += 3.0  # drawn more strongly than real faces show it
    fake[:, 1] -= 1.0
    out = distribution_match(fake, ref, ref, ref.flip(0), min_count=10)
    assert out["by_attribute_shift"][:2].tolist() == [3.0, -1.0]
    assert out["by_attribute_match"][:2].tolist() == pytest.approx([1 - 3 / 12, 1 - 1 / 12])
    assert torch.isnan(out["by_attribute_match"][2]) and torch.isnan(out["by_attribute_shift"][2])
    assert float(out["alignment_match"]) == pytest.approx((1 - 3 / 12 + 1 - 1 / 12) / 2)
    # each attribute on the score's scale: real 1 - 0 = 1, floor (the reversed order) 1 - KS = 1 - 0 too,
    # so no attribute is scored there; against a floor 6 of 12 away (1 - KS = 0.5) the shifts score
    # (0.75 - 0.5) / 0.5 and (11/12 - 0.5) / 0.5
    assert torch.isnan(out["by_attribute_alignment"]).all()
    floored = distribution_match(fake, ref, ref, ref + 6.0, min_count=10)
    assert floored["by_attribute_alignment"][:2].tolist() == pytest.approx([0.5, (11 / 12 - 0.5) / 0.5])
    assert torch.isnan(floored["by_attribute_alignment"][2])


def test_distribution_match_averages_fakes_over_sets_of_the_real_count() -> None:
    """More fakes than real faces are scored as disjoint sets of the real count, in sample order,
    and their 1 - KS averaged: a set drawn like the reference scores 1, one shifted by 3 of 12
    scores 0.75, so both together score their mean; a remainder shorter than a set is left out."""
    from t2f.metrics.alignment import distribution_match

    ref = torch.arange(12.0)[:, None]
    fake = torch.cat([ref, ref + 3.0, ref[:5] + 100.0])  # two full sets and a remainder of 5
    out = distribution_match(fake, ref, ref, ref.flip(0) + 6.0, min_count=10)
    assert float(out["alignment_match"]) == pytest.approx((1.0 + 0.75) / 2)
    assert float(out["alignment_match_real"]) == 1.0 and float(out["alignment_match_floor"]) == 0.5
    assert float(out["alignment"]) == pytest.approx((0.875 - 0.5) / (1.0 - 0.5))
    assert float(out["by_attribute_shift"][0]) == 2.0  # both sets: lower median 7 against 5
    fewer = distribution_match(fake[:10], ref, ref, ref, min_count=10)  # fewer fakes than real: one set
    assert float(fewer["alignment_match"]) == pytest.approx(1 - 2 / 12)


def test_mismatched_candidates_are_distinct_and_differ() -> None:
    pool = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 0], [0, -1], [1, -1]])
    cand, valid = mismatched_candidates(pool[:2], pool, 4, torch.Generator().manual_seed(0))
    assert cand.shape == (2, 4, 2) and valid.shape == (2, 4)
    for row in range(2):
        got = cand[row][valid[row]]
        assert len(got) == 4 and not (got == pool[row]).all(1).any()
    few, ok = mismatched_candidates(pool[:1], pool[:3], 5, torch.Generator().manual_seed(0))
    assert few.shape == (1, 5, 2) and int(ok.sum()) == 1  # only [1, 1] differs from [0, 1]


def test_classifier_cache_round_trip(trained, tmp_path: Path) -> None:
    from t2f.metrics.alignment import classifier_from_statistics, classifier_to_statistics

    _, task, net, priors = trained
    stats = classifier_to_statistics(net, priors, {"classifier_accuracy": torch.tensor(0.5)})
    back, back_priors, extra = classifier_from_statistics(stats, task.num_classes, 16)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(back(x), net(x)) and float(extra["classifier_accuracy"]) == 0.5
    assert all(torch.equal(a, b) for a, b in zip(back_priors, priors))
