"""Segmentation metrics (confusion matrix, IoU, accuracy) and the neural-collapse measure CDNV.

All functions take torch tensors on any device and never loop over points: the confusion matrix is
one ``bincount``. Rows of the confusion matrix are ground truth, columns are predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = 255


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """``([C, C], [C])`` int64 counts: ``cm[t, p]`` = points of true class ``t`` predicted as ``p``, and misses.

    Points whose target is ``ignore_index`` are left out. A prediction outside ``0..C-1`` (e.g. a point that
    could not be classified) lands in no column but in ``misses[t]``: it still lowers recall (a false negative),
    which is what an evaluation that keeps every point must do.
    """
    pred = pred.reshape(-1).to(torch.int64)
    target = target.reshape(-1).to(torch.int64)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: {pred.numel()} predictions for {target.numel()} targets")
    keep = target != ignore_index
    bad = keep & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"confusion_matrix: target classes must be in 0..{num_classes - 1} or "
                         f"{ignore_index}; found {torch.unique(target[bad]).tolist()[:10]}")
    pred, target = pred[keep], target[keep]
    valid_pred = (pred >= 0) & (pred < num_classes)
    flat = target[valid_pred] * num_classes + pred[valid_pred]
    cm = torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    # points with an out-of-range prediction: count them as misses without a column
    misses = torch.bincount(target[~valid_pred], minlength=num_classes)
    return cm, misses


@dataclass
class SegmentationScores:
    """IoU per class (NaN where a class is absent from both truth and prediction), mIoU, accuracy."""

    iou: Tensor            # [C] float64
    miou: float            # mean over classes with a defined IoU
    accuracy: float        # overall point accuracy over non-ignored points
    confusion: Tensor      # [C, C] int64

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "iou": {n: (None if torch.isnan(v) else float(v)) for n, v in zip(names, self.iou)},
            "confusion": self.confusion.tolist(),
        }


class ConfusionAccumulator:
    """Sums confusion matrices over many scans (and, with DDP, over ranks) before computing IoU."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.misses = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        cm, misses = confusion_matrix(pred.to(self.cm.device), target.to(self.cm.device),
                                      self.num_classes, self.ignore_index)
        self.cm += cm
        self.misses += misses

    def all_reduce(self) -> None:
        """Sum over DDP ranks (no-op without an initialised process group)."""
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.cm)
            dist.all_reduce(self.misses)

    def scores(self) -> SegmentationScores:
        return scores_from_confusion(self.cm, self.misses)


def scores_from_confusion(cm: Tensor, misses: Tensor | None = None) -> SegmentationScores:
    """IoU_c = TP / (TP + FP + FN); FN includes ``misses`` (points with no valid prediction)."""
    cm64 = cm.to(torch.float64)
    tp = cm64.diagonal()
    fn = cm64.sum(1) - tp
    if misses is not None:
        fn = fn + misses.to(torch.float64)
    fp = cm64.sum(0) - tp
    denom = tp + fp + fn
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))
    defined = ~torch.isnan(iou)
    miou = float(iou[defined].mean()) if bool(defined.any()) else float("nan")
    total = cm64.sum() + (misses.sum().to(torch.float64) if misses is not None else 0.0)
    accuracy = float(tp.sum() / total) if float(total) > 0 else float("nan")
    return SegmentationScores(iou=iou.cpu(), miou=miou, accuracy=accuracy, confusion=cm.cpu())


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int,
                        ignore_index: int = IGNORE_INDEX) -> SegmentationScores:
    acc = ConfusionAccumulator(num_classes, ignore_index, device=pred.device)
    acc.update(pred, target)
    return acc.scores()


def cdnv(features: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[float, Tensor]:
    """Class-distance normalised variance (Galanti et al., 2022), the paper's neural-collapse measure.

    ``CDNV(i, j) = (Var_i + Var_j) / (2 * ||mu_i - mu_j||^2)`` with ``Var_c`` the mean squared distance of class
    ``c``'s features to their mean ``mu_c``. Lower means more collapsed, better separated classes.
    Returns the mean over ordered pairs of present classes and the ``[C', C']`` matrix (diagonal NaN)
    over the present classes in increasing label order.
    """
    features = features.to(torch.float64)
    labels = labels.reshape(-1)
    keep = labels != ignore_index
    features, labels = features[keep], labels[keep].to(torch.int64)
    classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if classes.numel() < 2:
        raise ValueError("cdnv needs features of at least two classes")
    k, d = classes.numel(), features.shape[1]
    sums = torch.zeros(k, d, dtype=torch.float64, device=features.device).index_add_(0, inv, features)
    mu = sums / counts.unsqueeze(1)
    sq = ((features - mu[inv]) ** 2).sum(1)
    var = torch.zeros(k, dtype=torch.float64, device=features.device).index_add_(0, inv, sq) / counts
    dist2 = torch.cdist(mu, mu) ** 2
    mat = (var.unsqueeze(0) + var.unsqueeze(1)) / (2 * dist2)
    mat.fill_diagonal_(float("nan"))
    off = ~torch.eye(k, dtype=torch.bool, device=features.device)
    return float(mat[off].mean()), mat.cpu()
