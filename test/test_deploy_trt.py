"""TensorRT backend: the optimization profile and the engine cache key (checked here, no GPU needed), and the
engine itself against ONNX Runtime (needs CUDA + TensorRT; skipped with the reason otherwise)."""

import dataclasses

import pytest
import torch
from deploy_helpers import exported, one_torch_thread, scan  # noqa: F401

pytest.importorskip("onnx", reason="onnx not installed")

from i2p_ros.deploy.export import PROFILE_AZIMUTH_STEPS, example_scan, network_input  # noqa: E402
from i2p_ros.deploy.metadata import read_onnx_metadata  # noqa: E402
from i2p_ros.deploy.trt_backend import (  # noqa: E402
    TrtSettings,
    engine_cache_key,
    profile_shapes,
    trt_unavailable_reason,
)

REASON = trt_unavailable_reason()


def test_profile_covers_every_graph_input_with_the_sets_sizes():
    _, onnx_path = exported("lite0", 24)
    meta, proto = read_onnx_metadata(onnx_path)
    # the typical scan the export measured the coordinate sets on
    x = network_input(example_scan(PROFILE_AZIMUTH_STEPS), meta.model_config)
    n0 = int(x.coords.shape[0])
    assert n0 == meta.set_sizes_example[0]
    tables = meta.recipe.build(x)
    shapes = profile_shapes(meta, TrtSettings(min_voxels=10, max_voxels=4 * n0))   # opt: the typical scan
    graph_dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                  for i in proto.graph.input}
    assert list(shapes) == list(graph_dims) == meta.inputs
    assert shapes["feats"] == ((10, 4), (n0, 4), (4 * n0, 4))
    for name, t in tables.items():
        lo, opt, hi = shapes[name]
        assert lo[1] == opt[1] == hi[1] == graph_dims[name][1] == t.shape[1], name
        # opt = the example's own rows for this table: each table is mapped to the right coordinate set
        assert opt[0] == t.shape[0], name
        assert lo[0] >= 1 and hi[0] >= opt[0]
    # another scan within the voxel range fits every table's range
    y = network_input(scan(160, seed=61), meta.model_config)
    n = int(y.coords.shape[0])
    big = profile_shapes(meta, TrtSettings(min_voxels=1, opt_voxels=n, max_voxels=n))
    for name, t in meta.recipe.build(y).items():
        lo, _, hi = big[name]
        assert lo[0] <= t.shape[0] <= hi[0], name


def test_engine_cache_key_changes_with_every_ingredient_but_the_cache_dir(tmp_path):
    s = TrtSettings(cache_dir=tmp_path / "a")
    base = engine_cache_key("ab" * 32, "NVIDIA A100 sm_80", "10.7.0", s)
    moved = dataclasses.replace(s, cache_dir=tmp_path)
    assert base == engine_cache_key("ab" * 32, "NVIDIA A100 sm_80", "10.7.0", moved)
    others = [engine_cache_key("cd" * 32, "NVIDIA A100 sm_80", "10.7.0", s),
              engine_cache_key("ab" * 32, "NVIDIA Orin sm_87", "10.7.0", s),
              engine_cache_key("ab" * 32, "NVIDIA A100 sm_80", "10.8.0", s),
              engine_cache_key("ab" * 32, "NVIDIA A100 sm_80", "10.7.0", dataclasses.replace(s, fp16=False)),
              engine_cache_key("ab" * 32, "NVIDIA A100 sm_80", "10.7.0", dataclasses.replace(s, max_voxels=300_000))]
    assert len({base, *others}) == 6


def test_settings_reject_an_empty_profile():
    with pytest.raises(ValueError, match="min_voxels <= opt_voxels <= max_voxels"):
        TrtSettings(min_voxels=10, opt_voxels=5, max_voxels=100)


def test_unavailable_reason_is_specific():
    if REASON is None:
        pytest.skip("CUDA and TensorRT are available here")
    assert ("CUDA" in REASON) or ("tensorrt" in REASON)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_matches_onnxruntime_and_caches_the_engine(tmp_path, fp16):
    from i2p_ros.checkpoint import load_model
    from i2p_ros.deploy.trt_backend import TrtNetwork
    from i2p_ros.sparse import SparseTensor

    ckpt, onnx_path = exported("lite0", 24)
    settings = TrtSettings(min_voxels=100, opt_voxels=5000, max_voxels=60000, fp16=fp16, cache_dir=tmp_path)
    net = TrtNetwork(onnx_path, device="cuda", settings=settings)
    engine = net.engine_path
    assert engine.is_file() and engine.parent == tmp_path
    mtime = engine.stat().st_mtime_ns
    again = TrtNetwork(onnx_path, device="cuda", settings=settings)
    assert again.engine_path == engine and engine.stat().st_mtime_ns == mtime, "second start loads the cache"
    loaded = load_model(ckpt)
    model = loaded.model.cuda()
    for az, seed in ((96, 71), (320, 72)):
        x = network_input(scan(az, seed=seed), loaded.config)
        feats, coords = x.feats.cuda(), x.coords.cuda()
        with torch.inference_mode():
            ref = model(SparseTensor(feats, coords))
            got = net(SparseTensor(feats, coords))
        assert got.device == ref.device and got.shape == ref.shape
        scale = max(1.0, ref.abs().max().item())
        assert (got - ref).abs().max().item() <= (2e-2 if fp16 else 1e-3) * scale
        assert (got.argmax(1) == ref.argmax(1)).float().mean().item() >= (0.99 if fp16 else 0.999)
