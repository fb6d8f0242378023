"""Metrics against hand-computed cases."""

import math

import pytest
import torch

from i2p_ros.metrics import ConfusionAccumulator, cdnv, confusion_matrix, segmentation_scores


def test_confusion_and_iou_hand_computed():
    # classes 0,1,2; 255 ignored
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    cm, misses = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert misses.tolist() == [0, 0, 0]
    s = segmentation_scores(pred, target, 3)
    # IoU0 = 2/(2+0+1) ; IoU1 = 1/(1+1+1) ; IoU2 = 1/(1+1+0)
    assert s.iou.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert s.miou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert s.accuracy == pytest.approx(4 / 6)


def test_ignore_index_and_absent_class_and_invalid_predictions():
    target = torch.tensor([0, 1, 255, 1])
    pred = torch.tensor([0, -1, 3, 1])  # -1: unclassified point (counts as a miss of its true class)
    s = segmentation_scores(pred, target, 4)
    assert s.iou[0] == 1.0
    assert s.iou[1] == pytest.approx(1 / 2)  # TP 1, FN 1 (the miss)
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])  # absent from truth and predictions
    assert s.miou == pytest.approx(0.75)
    assert s.accuracy == pytest.approx(2 / 3)


def test_out_of_range_target_is_an_error():
    with pytest.raises(ValueError, match="target classes"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


def test_accumulator_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (1000,), generator=g)
    p = torch.randint(0, 5, (1000,), generator=g)
    acc = ConfusionAccumulator(5)
    for a, b in zip(p.split(137), t.split(137)):
        acc.update(a, b)
    assert torch.equal(acc.scores().confusion, segmentation_scores(p, t, 5).confusion)


def test_cdnv_hand_computed():
    # class 0 at (0,0) and (2,0): mean (1,0), var 1 ; class 1 at (10,0),(10,2): mean (10,1), var 1
    f = torch.tensor([[0.0, 0], [2, 0], [10, 0], [10, 2]])
    y = torch.tensor([0, 0, 1, 1])
    mean, mat = cdnv(f, y)
    expected = (1 + 1) / (2 * (9 ** 2 + 1 ** 2))
    assert mean == pytest.approx(expected)
    assert mat[0, 1] == pytest.approx(expected) and mat[1, 0] == pytest.approx(expected)
    # collapsing each class onto its mean drives CDNV to 0
    assert cdnv(torch.tensor([[1.0, 0], [1, 0], [10, 1], [10, 1]]), y)[0] == 0.0
