"""Lovász-softmax against a brute-force Jaccard on hard predictions; weights; ignore index."""

import pytest
import torch

from i2p_ros.losses import SegmentationLoss, class_weights_from_frequencies, lovasz_softmax


def _hard(labels_pred, c):
    return torch.nn.functional.one_hot(labels_pred, c).float()


def test_lovasz_equals_jaccard_loss_on_one_hot_predictions():
    # On 0/1 "probabilities" the Lovász extension equals the Jaccard loss 1 - |A∩B|/|A∪B| of each class.
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=g)
    pred = torch.randint(0, 4, (200,), generator=g)
    got = lovasz_softmax(_hard(pred, 4), labels)
    expected = []
    for c in range(4):
        a, b = labels == c, pred == c
        if a.any():
            expected.append(1 - (a & b).sum() / (a | b).sum())
    assert float(got) == pytest.approx(float(torch.stack(expected).mean()), abs=1e-6)


def test_lovasz_is_zero_for_perfect_prediction_and_ignores_255():
    labels = torch.tensor([0, 1, 2, 255, 255])
    probs = _hard(torch.tensor([0, 1, 2, 0, 1]), 3)
    assert float(lovasz_softmax(probs, labels)) == 0.0


def test_lovasz_has_gradients():
    logits = torch.randn(50, 3, requires_grad=True)
    labels = torch.randint(0, 3, (50,))
    SegmentationLoss(lovasz_weight=1.0)(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_class_weights_favour_rare_classes():
    w = class_weights_from_frequencies(torch.tensor([0.7, 0.2, 0.1]))
    assert w[0] < w[1] < w[2]
    assert float(w.mean()) == pytest.approx(1.0)


def test_loss_ignores_index_255():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 255, 2, 255])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert float(SegmentationLoss()(logits, labels)) == pytest.approx(float(expected))
