"""``i2p-eval``: score a checkpoint on a SemanticKITTI split over **every** point.

Per-class IoU table, mIoU, accuracy and the confusion matrix (PNG + JSON); ``--save-labels`` writes the
predictions as official ``.label`` files (raw ids) in the benchmark's submission layout
(``OUT/sequences/NN/predictions/NNNNNN.label``). The same :func:`evaluate_model` scores validation
during training, sharded over DDP ranks with the confusion matrices summed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import CheckpointError, load_model
from .data.dataset import SemanticKittiDataset, collate
from .data.labels import LabelConfig, load_label_config
from .data.semantic_kitti import write_predictions
from .metrics import ConfusionAccumulator, SegmentationScores

__all__ = ["evaluate_model", "check_classes", "format_iou_table", "save_confusion_png", "main"]


def check_classes(class_names: list[str], raw_ids: list[int], labels: LabelConfig, source: str) -> None:
    """Refuse a model whose classes are not the label config's (names and raw ids, in order)."""
    want_names = labels.class_names
    want_raw = [int(r) for r in labels.train_to_raw_lut[: labels.num_classes]]
    if list(class_names) != want_names or [int(r) for r in raw_ids] != want_raw:
        raise CheckpointError(
            f"{source}: the model's classes do not match {labels.source}:\n"
            f"  model: {len(class_names)} classes {list(zip(class_names, raw_ids))[:6]}...\n"
            f"  data:  {len(want_names)} classes {list(zip(want_names, want_raw))[:6]}...")


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, labels: LabelConfig, device: torch.device, *,
                   batch_size: int = 1, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                   save_labels: str | os.PathLike | None = None, progress: bool = True) -> SegmentationScores:
    """Confusion over every point of ``dataset`` (this rank's share), summed over ranks; model in eval mode."""
    from tqdm import tqdm

    indices = list(range(rank, len(dataset), world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    acc = ConfusionAccumulator(labels.num_classes, device=device)
    was_training = model.training
    model.eval()
    for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        batch = batch.to(device)
        logits = model(batch.sparse())
        pred = batch.point_predictions(logits)
        if batch.point_labels is not None:
            acc.update(pred, batch.point_labels)
        if save_labels is not None:
            for seq, frame, p in zip(batch.sequences, batch.frames, batch.split_points(pred)):
                write_predictions(save_labels, seq, frame, labels.to_raw(p.cpu().numpy()))
    model.train(was_training)
    acc.all_reduce()
    return acc.scores()


def format_iou_table(scores: SegmentationScores, class_names: list[str]) -> str:
    rows = [f"{'class':<16}{'IoU %':>8}"]
    for name, iou in zip(class_names, scores.iou.tolist()):
        rows.append(f"{name:<16}{'n/a' if np.isnan(iou) else f'{100 * iou:.1f}':>8}")
    rows.append(f"{'mIoU':<16}{100 * scores.miou:>8.1f}")
    rows.append(f"{'accuracy':<16}{100 * scores.accuracy:>8.1f}")
    return "\n".join(rows)


def save_confusion_png(path: str | os.PathLike, confusion: torch.Tensor, class_names: list[str]) -> Path:
    """Row-normalised confusion matrix (recall per true class) as a heat map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = confusion.to(torch.float64)
    norm = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) from i2p-train")
    p.add_argument("--data", required=True, help="SemanticKITTI root (holds sequences/)")
    p.add_argument("--split", default="val", help="split name (train/val/test) or comma-separated sequences")
    p.add_argument("--label-config", default=None, help="label YAML (default: config/semantic-kitti.yaml)")
    p.add_argument("--save-labels", default=None, help="write official .label predictions under this folder")
    p.add_argument("--out", default=None, help="folder for metrics.json and confusion.png")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    labels = load_label_config(args.label_config)
    try:
        loaded = load_model(args.checkpoint, device)
        check_classes(loaded.class_names, loaded.raw_ids, labels, args.checkpoint)
    except CheckpointError as err:
        print(f"i2p-eval: {err}", file=sys.stderr)
        return 2
    split = args.split if not args.split[0].isdigit() else [int(s) for s in args.split.split(",")]
    dataset = SemanticKittiDataset(args.data, split, label_config=labels, voxel_size=loaded.config.voxel_size,
                                   )
    if len(dataset) == 0:
        print(f"i2p-eval: no scans for split {args.split!r} under {args.data}", file=sys.stderr)
        return 2
    scores = evaluate_model(loaded.model, dataset, labels, device, batch_size=args.batch_size,
                            num_workers=args.num_workers, save_labels=args.save_labels)
    has_labels = dataset.labeled
    if has_labels:
        print(format_iou_table(scores, labels.class_names))
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix("").parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if has_labels:
        report = {"checkpoint": str(args.checkpoint), "split": args.split, "scans": len(dataset),
                  **scores.as_dict(labels.class_names)}
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        save_confusion_png(out / "confusion.png", scores.confusion, labels.class_names)
        print(f"wrote {out / 'metrics.json'} and {out / 'confusion.png'}")
    if args.save_labels:
        print(f"wrote predictions under {args.save_labels}/sequences/*/predictions/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
