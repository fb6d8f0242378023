"""``i2p-train``: FIP finetuning on SemanticKITTI-format data, from one CPU to many GPUs (``torchrun``).

    i2p-train --config config/train/sim.yaml --data /tmp/sim --out runs/sim
    torchrun --nproc_per_node 8 -m i2p_ros.train --config r18_semantickitti --data /data/semantic_kitti

Reproducibility: every random choice derives from the config's seed — the per-epoch order (shuffled per
epoch, sharded per rank), each scan's augmentation and voxel cap (seeded by ``(seed, epoch, index)``),
and the torch RNG (dropout), which checkpoints carry. ``--resume`` therefore continues exactly where a
run stopped, also in the middle of an epoch when ``checkpoint_every_steps`` is set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .checkpoint import make_checkpoint, read_checkpoint, save_atomic
from .config import ConfigError, to_mapping
from .data.dataset import AugmentConfig, Sample, collate, make_sample
from .data.labels import LabelConfig, load_label_config
from .data.semantic_kitti import list_scans, read_scan, resolve_split
from .distributed import DistInfo, cleanup, convert_sync_batchnorm, init_distributed
from .evaluate import check_classes, evaluate_model
from .fip import apply_fip, optimizer_groups, uses_prior
from .losses import SegmentationLoss, class_weights_from_frequencies
from .memory import rss_mb
from .metrics import ConfusionAccumulator
from .models.build import ModelConfig, build_model, load_model_config
from .run_log import RunLog
from .train_config import TrainConfig, load_train_config

__all__ = ["SeededScans", "EpochSampler", "Trainer", "main"]


class SeededScans(Dataset):
    """SemanticKITTI scans whose augmentation / voxel cap is seeded by ``(seed, epoch, index)``."""

    def __init__(self, root: str, split, labels: LabelConfig, voxel_size: float, *, max_voxels: int | None,
                 augment: AugmentConfig | None, bounds, seed: int) -> None:
        sequences, labeled = resolve_split(split, labels)
        self.refs = list_scans(root, sequences, labeled=labeled)
        self.labels, self.voxel_size, self.max_voxels = labels, voxel_size, max_voxels
        self.augment, self.bounds, self.seed, self.epoch = augment, bounds, seed, 0

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Sample:
        ref = self.refs[index]
        scan = read_scan(ref, self.labels)
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0] >> 2)
        return make_sample(scan.points, scan.semantic, label_config=self.labels, voxel_size=self.voxel_size,
                           max_voxels=self.max_voxels, augment=self.augment, bounds=self.bounds, seed=seed,
                           sequence=ref.sequence, frame=ref.frame, source=str(ref.label or ref.velodyne))


class EpochSampler(Sampler[int]):
    """Per-epoch permutation (seed + epoch), this rank's share, optionally skipping consumed batches."""

    def __init__(self, n: int, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world_size
        self.seed, self.shuffle, self.epoch, self.skip_batches = seed, shuffle, 0, 0
        # equal share per rank (drop the remainder) so every rank runs the same number of steps
        self.per_rank = (n // world_size) // batch_size * batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        return perm[self.rank::self.world][: self.per_rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip_batches * self.batch_size:])

    def __len__(self) -> int:
        return self.per_rank - self.skip_batches * self.batch_size


def warmup_cosine(total_steps: int, warmup_steps: int, schedule: str):
    """LR multiplier per step: linear warm-up, then cosine to 0 (or constant)."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def class_frequencies(labels: LabelConfig) -> torch.Tensor:
    """Training-class frequencies from the label YAML's ``content`` (fraction of points per raw id)."""
    freq = torch.zeros(labels.num_classes, dtype=torch.float64)
    for raw, share in labels.content.items():
        t = int(labels.raw_to_train_lut[raw])
        if t < labels.num_classes:
            freq[t] += float(share)
    return freq / freq.sum().clamp(min=1e-12)


class Trainer:
    """Owns model, optimizer, data and state of one training run (one per process under torchrun)."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, dist: DistInfo, *, resume: bool = False,
                 progress: bool = True, stop_after_steps: int | None = None) -> None:
        self.cfg, self.dist, self.progress = cfg, dist, progress and dist.is_main
        self.out = Path(out_dir)
        self.stop_after_steps = stop_after_steps
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.labels = load_label_config(cfg.data.label_config)
        self.model_cfg: ModelConfig = load_model_config(cfg.model, cfg.model_overrides)
        if self.model_cfg.num_classes != self.labels.num_classes:
            self.model_cfg = replace(self.model_cfg, num_classes=self.labels.num_classes)
        prior = cfg.prior if uses_prior(cfg.fip) else "none"
        if cfg.fip in ("io", "io_bn") and prior == "none" and dist.is_main:
            # the paper's control experiment: the same frozen encoder, but random instead of ImageNet weights
            print(f"note: FIP mode {cfg.fip} with prior none freezes a randomly initialised encoder")
        self.model_cfg = replace(self.model_cfg, prior=prior)
        model, report = build_model(self.model_cfg)
        self.prior_report = report
        self.fip_plan = apply_fip(model, cfg.fip)
        if cfg.sync_bn and dist.enabled:
            model = convert_sync_batchnorm(model)
        self.model = model.to(dist.device)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
            if dist.enabled else self.model)
        d = cfg.data
        augment = AugmentConfig(**to_mapping(d.augment)) if d.augment is not None else None
        if augment is not None and augment.scale is not None:
            augment = replace(augment, scale=tuple(augment.scale))
        self.train_set = SeededScans(d.root, d.train_split, self.labels, self.model_cfg.voxel_size,
                                     max_voxels=d.max_voxels, augment=augment, bounds=d.bounds, seed=cfg.seed)
        if len(self.train_set) == 0:
            raise ConfigError(f"no training scans for split {d.train_split!r} under {d.root}")
        self.val_set = (SeededScans(d.root, d.val_split, self.labels, self.model_cfg.voxel_size, max_voxels=None,
                                    augment=None, bounds=d.bounds, seed=cfg.seed) if d.val_split is not None else None)
        if self.val_set is not None and len(self.val_set) == 0:
            self.val_set = None
        self.sampler = EpochSampler(len(self.train_set), batch_size=cfg.batch_size, rank=dist.rank,
                                    world_size=dist.world_size, seed=cfg.seed)
        if self.sampler.per_rank == 0:
            raise ConfigError(f"{len(self.train_set)} training scans are too few for batch size {cfg.batch_size} "
                              f"on {dist.world_size} processes")
        steps = self.sampler.per_rank // cfg.batch_size
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch or steps)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        o = cfg.optim
        groups = optimizer_groups(self.model, o.weight_decay)
        if o.name == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=o.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, o.warmup_steps, o.schedule))
        weights = (class_weights_from_frequencies(class_frequencies(self.labels))
                   if cfg.loss.class_weighting != "none" else None)
        self.criterion = SegmentationLoss(weights, cfg.loss.lovasz_weight).to(dist.device)
        self.use_amp = cfg.amp and dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch, self.step_in_epoch, self.global_step, self.best_miou = 0, 0, 0, -1.0
        self.log = RunLog(self.out, enabled=dist.is_main)
        if resume:
            self._resume()
        elif dist.is_main:
            self.log.write_config({"train": to_mapping(cfg), "model": to_mapping(self.model_cfg)})
            print(self.fip_plan.summary())
            if report is not None:
                print(report.summary())

    # ------------------------------------------------------------------ checkpoints
    def _train_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.dist.device) if self.dist.device.type == "cuda" else None
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng, "best_miou": self.best_miou,
                "config": to_mapping(self.cfg), "world_size": self.dist.world_size}

    def save(self, name: str, metrics: dict | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        raw_ids = [int(r) for r in self.labels.train_to_raw_lut[: self.labels.num_classes]]
        ckpt = make_checkpoint(self.model, self.model_cfg, self.labels.class_names, raw_ids, self.cfg.fip,
                               train_state=self._train_state(), metrics=metrics)
        return save_atomic(ckpt, self.out / name)

    def _resume(self) -> None:
        path = self.out / "last.pt"
        ckpt = read_checkpoint(path, map_location="cpu")
        state = ckpt.get("train")
        if state is None:
            raise ConfigError(f"{path} has no training state to resume from")
        check_classes(ckpt["classes"]["names"], ckpt["classes"]["raw_ids"], self.labels, str(path))
        if state.get("world_size", 1) != self.dist.world_size:
            raise ConfigError(f"{path} was written by a run with {state['world_size']} processes; resuming with "
                              f"{self.dist.world_size} would change the data order")
        self.model.load_state_dict({k: v.to(self.model.state_dict()[k].dtype) for k, v in ckpt["model"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.dist.device)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best_miou = state["global_step"], state["best_miou"]
        if self.dist.is_main:
            print(f"resumed {path}: epoch {self.epoch}, step {self.step_in_epoch}/{self.steps_per_epoch}")

    # ------------------------------------------------------------------ loop
    def _loader(self) -> DataLoader:
        self.train_set.epoch = self.epoch
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        workers = self.cfg.data.num_workers
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, sampler=self.sampler, collate_fn=collate,
                          num_workers=workers, pin_memory=self.dist.device.type == "cuda",
                          persistent_workers=False, drop_last=True)

    def train_step(self, batch) -> float:
        batch = batch.to(self.dist.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            logits = self.ddp(batch.sparse())
            loss = self.criterion(logits, batch.voxel_labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self._train_acc.update(logits.detach().argmax(1), batch.voxel_labels)
        return float(loss.detach())

    def _memory(self) -> dict[str, float]:
        """Host RSS (and CUDA peak) for the metrics log: a leak shows up as a rising line."""
        out = {}
        rss = rss_mb()
        if rss is not None:
            out["sys/rss_mb"] = rss
        if self.dist.device.type == "cuda":
            out["sys/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**20
        return out

    def fit(self) -> dict:
        from tqdm import tqdm

        summary: dict = {}
        while self.epoch < self.cfg.epochs:
            self.model.train()
            self._train_acc = ConfusionAccumulator(self.labels.num_classes, device=self.dist.device)
            remaining = self.steps_per_epoch - self.step_in_epoch
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}",
                       unit="step", disable=not self.progress, dynamic_ncols=True)
            t0, seen = time.perf_counter(), 0
            for i, batch in enumerate(self._loader()):
                if i >= remaining:
                    break
                loss = self.train_step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                seen += batch.batch_size * self.dist.world_size
                lr = self.scheduler.get_last_lr()[0]
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", scans_s=f"{rate:.1f}")
                bar.update(1)
                if self.global_step % self.cfg.log_every_steps == 0:
                    self.log.scalars(self.global_step, {"train/loss": loss, "train/lr": lr, "train/scans_per_s": rate,
                                                        **self._memory()}, epoch=self.epoch)
                if self.cfg.checkpoint_every_steps and self.global_step % self.cfg.checkpoint_every_steps == 0:
                    self.save("last.pt")
                if self.stop_after_steps is not None and self.global_step >= self.stop_after_steps:
                    bar.close()
                    self.save("last.pt")
                    return {"stopped_at_step": self.global_step}
            bar.close()
            self._train_acc.all_reduce()
            train_scores = self._train_acc.scores()
            self.epoch += 1
            self.step_in_epoch = 0
            metrics = {"epoch": self.epoch, "train/miou": train_scores.miou, "train/accuracy": train_scores.accuracy}
            if self.val_set is not None and (self.epoch % self.cfg.val_every_epochs == 0
                                             or self.epoch == self.cfg.epochs):
                val = evaluate_model(self.model, self.val_set, self.labels, self.dist.device,
                                     batch_size=self.cfg.batch_size, rank=self.dist.rank,
                                     world_size=self.dist.world_size, progress=self.progress)
                metrics.update({"val/miou": val.miou, "val/accuracy": val.accuracy})
                if val.miou > self.best_miou:
                    self.best_miou = val.miou
                    self.save("best.pt", metrics={"val_miou": val.miou, "epoch": self.epoch})
            self.log.scalars(self.global_step, metrics, epoch=self.epoch)
            self.save("last.pt", metrics=metrics)
            self.log.plot_curves()
            if self.dist.is_main:
                print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
            summary = metrics
        return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-train", description=__doc__.split("\n\n")[0],
                                epilog="Extra arguments key.path=value override the config (e.g. optim.lr=0.1).")
    p.add_argument("--config", required=True, help="config/train/<name>.yaml or a shipped recipe name")
    p.add_argument("--data", help="dataset root holding sequences/ (overrides data.root)")
    p.add_argument("--fip", choices=("scratch", "io", "io_bn", "all"), help="FIP mode (overrides fip)")
    p.add_argument("--prior", help="imagenet | none | path to a 2D weight file (overrides prior)")
    p.add_argument("--out", default="runs/latest", help="run folder (checkpoints, metrics.jsonl, curves.png)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # interruption tests
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.fip:
        overrides.append(f"fip={args.fip}")
    if args.prior:
        overrides.append(f"prior={args.prior}")
    try:
        cfg = load_train_config(args.config, overrides)
    except ConfigError as err:
        print(f"i2p-train: {err}", file=sys.stderr)
        return 2
    dist = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, args.out, dist, resume=args.resume, progress=not args.no_progress,
                          stop_after_steps=args.stop_after_steps)
        summary = trainer.fit()
        if dist.is_main:
            (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"i2p-train: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
