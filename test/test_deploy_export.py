"""i2p-export -> ONNX Runtime: the exported graph matches the eager PyTorch model on simulated scans of other
sizes than it was traced on (lite0 and r18), holds only standard operators with the neighbour tables as
inputs, and carries the metadata the runners rebuild the pipeline from."""

import json
import re

import numpy as np
import pytest
import torch
from deploy_helpers import eager_logits, exported, one_torch_thread, ort_logits, raw_ids, scan  # noqa: F401

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
import onnx  # noqa: E402

from i2p_ros.checkpoint import load_model  # noqa: E402
from i2p_ros.config import to_mapping  # noqa: E402
from i2p_ros.data.labels import load_label_config  # noqa: E402
from i2p_ros.deploy.export import ALLOWED_OPS, network_input  # noqa: E402
from i2p_ros.deploy.ort_backend import OrtNetwork  # noqa: E402
from i2p_ros.pipeline import SegmentationPipeline  # noqa: E402
from i2p_ros.sparse import strategy  # noqa: E402

BOUNDS = ((-51.2, -51.2, -4.0), (51.2, 51.2, 4.4))


def _compare(ckpt, onnx_path, scans):
    """Per scan: logits of ONNX Runtime vs the eager model (default strategy) and per-point labels through the
    pipeline with each network."""
    loaded = load_model(ckpt)
    net = OrtNetwork(onnx_path, device="cpu", num_threads=1)
    torch_pipe = SegmentationPipeline(loaded.model, loaded.config, loaded.raw_ids, device="cpu", bounds=BOUNDS,
                                      warmup=False)
    ort_pipe = SegmentationPipeline(None, net.meta.model_config, net.meta.raw_ids, network=net, device="cpu",
                                    bounds=BOUNDS, warmup=False)
    sizes = []
    for pts in scans:
        ref = eager_logits(loaded.model, loaded.config, pts)
        got = ort_logits(net, loaded.config, pts)
        assert got.shape == ref.shape
        scale = max(1.0, ref.abs().max().item())
        assert (got - ref).abs().max().item() <= 1e-4 * scale
        a, b = torch_pipe.segment(pts).labels, ort_pipe.segment(pts).labels
        assert len(np.unique(a)) >= 3, "untrained model predicts too few classes: the comparison would be weak"
        assert (a == b).mean() >= 0.999
        sizes.append(ref.shape[0])
    return sizes


def test_lite0_onnxruntime_matches_eager_on_scans_of_other_sizes():
    ckpt, onnx_path = exported("lite0", 24)
    sizes = _compare(ckpt, onnx_path, [scan(64, seed=21), scan(160, seed=22)])
    example_voxels = network_input(scan(24, seed=7), load_model(ckpt).config).coords.shape[0]  # the traced scan
    assert len(set(sizes + [example_voxels])) == 3, "every scan must have another voxel count (dynamic N)"


def test_lite0_onnxruntime_matches_eager_on_a_large_scan():
    ckpt, onnx_path = exported("lite0", 24)
    (n,) = _compare(ckpt, onnx_path, [scan(2200, seed=24)])  # a full-size HDL-64 scan, ~120k points
    assert n > 20_000


def test_r18_onnxruntime_matches_eager_on_scans_of_other_sizes():
    ckpt, onnx_path = exported("r18", 24)   # ~87M parameters: a 330 MB graph, ~4 GB RSS while exporting
    sizes = _compare(ckpt, onnx_path, [scan(48, seed=31), scan(96, seed=32)])
    assert sizes[0] != sizes[1]


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_graph_holds_standard_ops_and_takes_the_tables_as_inputs():
    ckpt, onnx_path = exported("lite0", 24)
    proto = onnx.load(str(onnx_path))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= ALLOWED_OPS and {"Gather", "MatMul", "Add", "Mul", "Clip"} <= ops
    assert "BatchNormalization" not in ops, "BatchNorms are folded into the convs"
    onnx.checker.check_model(proto)
    loaded = load_model(ckpt)
    # the graph inputs are feats + exactly the tables the engine builds, in first-use order
    x = network_input(scan(48, seed=7), loaded.config)
    with torch.inference_mode(), strategy("gather"):
        loaded.model(x)
    engine_tables = list(x.cache.neighbour_tables())
    inputs = proto.graph.input
    assert [i.name for i in inputs] == ["feats", *engine_tables]
    elem = {i.name: i.type.tensor_type.elem_type for i in inputs}
    assert elem["feats"] == onnx.TensorProto.FLOAT
    assert all(elem[n] == onnx.TensorProto.INT64 for n in engine_tables)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs}
    assert dims["feats"] == ["n0", 4]
    for name in engine_tables:  # [N_out, k³]: a dynamic row count, one column per kernel offset
        k = int(re.search(r"_k(\d+)_", name).group(1))
        assert dims[name][1] == k ** 3, (name, dims[name])
    assert dims["sub_c1_k3_d1"] == ["n1", 27]  # the stride-2 set (lite0: the first level with 3³ convs)
    assert all(isinstance(d[0], str) and d[0].startswith("n") for d in dims.values()), "voxel counts are dynamic"
    out = proto.graph.output[0]
    assert out.name == "logits" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["n0", 19]
    assert not any(len(init.dims) == 2 and init.dims[1] == 4 and init.data_type in (6, 7)
                   for init in proto.graph.initializer), "no coordinates baked into the graph"


def test_metadata_describes_the_model_and_the_label_map():
    ckpt, onnx_path = exported("lite0", 24)
    props = _props(onnx_path)
    loaded = load_model(ckpt)
    lc = load_label_config()
    assert props["i2p_ros.format"] == "i2p_ros-onnx/1"
    assert props["model_name"] == "lite0"
    assert json.loads(props["model_config"]) == to_mapping(loaded.config)
    assert json.loads(props["class_names"]) == lc.class_names
    assert json.loads(props["raw_ids"]) == raw_ids()
    assert float(props["voxel_size"]) == loaded.config.voxel_size
    assert json.loads(props["in_features"]) == ["x", "y", "z", "intensity"]
    assert props["precision"] == "fp32" and props["opset"] == "17"
    import hashlib
    assert props["source_checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    n_bn = sum(k.endswith("running_var") for k in loaded.model.state_dict())
    assert int(props["bn_folded"]) == n_bn
    proto = onnx.load(str(onnx_path))
    assert json.loads(props["inputs"]) == [i.name for i in proto.graph.input]


def test_cli_fp16_export_runs_with_fp32_io(capsys):
    ckpt, onnx_path = exported("lite0", 24, fp16=True)
    props = _props(onnx_path)
    assert props["precision"] == "fp16"
    proto = onnx.load(str(onnx_path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer)
    loaded = load_model(ckpt)
    pts = scan(96, seed=41)
    ref = eager_logits(loaded.model, loaded.config, pts)
    got = ort_logits(OrtNetwork(onnx_path), loaded.config, pts)
    scale = max(1.0, ref.abs().max().item())
    assert (got - ref).abs().max().item() <= 2e-2 * scale   # half precision inside the graph
    assert (got.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.99


def test_cli_verifies_and_reports(tmp_path, capsys):
    from deploy_helpers import save_untrained

    from i2p_ros.deploy.export import main

    ckpt = save_untrained("lite0", tmp_path / "m.pt", seed=3)
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--example-azimuth-steps", "32",
                 "--verify-azimuth-steps", "48"]) == 0
    out = capsys.readouterr().out
    import re
    agree = re.search(r"same class on ([0-9.]+)% of voxels", out)
    assert "verified with ONNX Runtime" in out and agree and float(agree.group(1)) >= 99.9
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
