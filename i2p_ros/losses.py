"""Segmentation losses: cross-entropy (ignore 255, optional class weights) plus an optional Lovász-softmax term.

Lovász-softmax (Berman et al., CVPR 2018) is the convex surrogate of the per-class Jaccard loss that
LiDAR segmentation networks commonly add to cross-entropy; it optimises IoU directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import IGNORE_INDEX

__all__ = ["lovasz_grad", "lovasz_softmax", "SegmentationLoss", "class_weights_from_frequencies"]


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
                   classes: str = "present") -> Tensor:
    """Mean over classes of the Lovász hinge on ``1 - p_c`` errors; ``probs`` ``[N, C]`` softmax outputs.

    ``classes="present"`` averages only over classes present in ``labels`` (the usual choice).
    """
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def class_weights_from_frequencies(freq: Tensor, power: float = 0.5, eps: float = 1e-3) -> Tensor:
    """``1 / (freq + eps)^power`` normalised to mean 1 — frequent classes (road) count less, rare more."""
    w = 1.0 / (freq.to(torch.float64) + eps) ** power
    return (w / w.mean()).to(torch.float32)


class SegmentationLoss(torch.nn.Module):
    """``CE(weights, ignore 255) + lovasz_weight * Lovász-softmax``."""

    def __init__(self, class_weights: Tensor | None = None, lovasz_weight: float = 0.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights if class_weights is not None else None)
        self.lovasz_weight = float(lovasz_weight)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.lovasz_weight > 0:
            loss = loss + self.lovasz_weight * lovasz_softmax(logits.float().softmax(1), labels, self.ignore_index)
        return loss
