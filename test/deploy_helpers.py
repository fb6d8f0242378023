"""Shared pieces of the deploy tests (not collected): exported models made once per test process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from i2p_ros.data.labels import default_label_config_path, load_label_config
from i2p_ros.deploy.export import example_scan, network_input
from i2p_ros.sparse import SparseTensor

_TMP = Path(tempfile.mkdtemp(prefix="i2p_deploy_test_"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Deploy tests run torch single-threaded (import this fixture into a test module to apply it): they run
    many small ops, which on a shared 2-core machine wait on thread barriers far more than they compute."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def raw_ids() -> list[int]:
    lc = load_label_config()
    return [int(r) for r in lc.train_to_raw_lut[: lc.num_classes]]


def save_untrained(name: str, path: Path, seed: int = 0) -> Path:
    """A real (random-init) checkpoint of the shipped model config ``name`` whose BatchNorms have non-trivial
    running statistics and affine parameters (so folding them is actually tested)."""
    from i2p_ros.checkpoint import make_checkpoint, save_atomic
    from i2p_ros.models.build import build_model, load_model_config
    from i2p_ros.sparse import BatchNorm

    torch.manual_seed(seed)
    cfg = load_model_config(name)
    model, _ = build_model(cfg, prior="none")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                # signed scales: each layer's ReLU then keeps a different mix of channels, so an untrained
                # network's features (and argmax) still vary from voxel to voxel
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        # a random linear classifier over features of similar sign is dominated by a few classes; centring it
        # spreads the argmax over many classes, so label comparisons mean something
        w = torch.randn(model.classifier.weight.shape, generator=g)
        model.classifier.weight.copy_(w - w.mean(0, keepdim=True))
        model.classifier.bias.zero_()
    lc = load_label_config()
    return save_atomic(make_checkpoint(model, cfg, lc.class_names, raw_ids(), "scratch"), path)


@functools.cache
def exported(name: str, example_azimuth_steps: int, fp16: bool = False) -> tuple[Path, Path]:
    """``(checkpoint, onnx)`` of an untrained ``name`` model, exported once per process through the CLI."""
    from i2p_ros.deploy.export import main

    ckpt = _TMP / f"{name}.pt"
    if not ckpt.exists():
        save_untrained(name, ckpt)
    onnx_path = _TMP / f"{name}{'_fp16' if fp16 else ''}.onnx"
    argv = ["--checkpoint", str(ckpt), "--out", str(onnx_path), "--example-azimuth-steps",
            str(example_azimuth_steps), "--no-verify"] + (["--fp16"] if fp16 else [])
    assert main(argv) == 0
    return ckpt, onnx_path


def swapped_label_config(directory: Path) -> Path:
    """The package's label config with car and bicycle swapped: same class count, another label map."""
    doc = yaml.safe_load(default_label_config_path().read_text())
    inv = doc["learning_map_inv"]
    inv[1], inv[2] = inv[2], inv[1]
    for raw, cls in list(doc["learning_map"].items()):
        doc["learning_map"][raw] = {1: 2, 2: 1}.get(cls, cls)
    path = directory / "swapped.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def scan(azimuth_steps: int, seed: int) -> np.ndarray:
    return example_scan(azimuth_steps, seed=seed)


def eager_logits(model, cfg, points: np.ndarray) -> torch.Tensor:
    x = network_input(points, cfg)
    with torch.inference_mode():
        return model(x)


def ort_logits(net, cfg, points: np.ndarray) -> torch.Tensor:
    x = network_input(points, cfg)
    with torch.inference_mode():
        return net(SparseTensor(x.feats, x.coords))
