"""Model files the deploy backends must refuse at start, with a message naming the file and the problem:
corrupt / non-ONNX files, PyTorch checkpoints, ONNX files that are not ours, inconsistent metadata, and
models whose voxel size or label map contradict the configuration."""

import pytest
from deploy_helpers import exported, one_torch_thread, swapped_label_config  # noqa: F401

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
import onnx  # noqa: E402
import torch  # noqa: E402

from i2p_ros.deploy.metadata import DeployError, MetadataMismatch, read_onnx_metadata  # noqa: E402
from i2p_ros.deploy.ort_backend import OrtNetwork  # noqa: E402
from i2p_ros.ros.backends import BackendError, PipelineRequest, available_backends, create_pipeline  # noqa: E402


def _rewrite_props(src, dst, **changes):
    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key in changes:
            p.value = changes[p.key]
    onnx.save(proto, str(dst))
    return dst


def test_corrupt_files_name_the_file(tmp_path):
    _, good = exported("lite0", 24)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 64)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(DeployError, match=f"{path}.*corrupt"):
            OrtNetwork(path)
        with pytest.raises(DeployError, match=str(path)):
            read_onnx_metadata(path)
    with pytest.raises(DeployError, match="does not exist"):
        OrtNetwork(tmp_path / "missing.onnx")


def test_pytorch_checkpoint_is_refused_with_the_export_command():
    ckpt, _ = exported("lite0", 24)
    with pytest.raises(DeployError, match="i2p-export --checkpoint"):
        OrtNetwork(ckpt)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_without_our_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(4, 19).eval(), (torch.zeros(3, 4),), str(path), input_names=["feats"],
                      output_names=["logits"], dynamo=False)
    with pytest.raises(DeployError, match="not an i2p_ros export"):
        OrtNetwork(path)


def test_inconsistent_metadata_is_refused(tmp_path):
    _, good = exported("lite0", 24)
    voxel = read_onnx_metadata(good)[0].voxel_size
    bad = _rewrite_props(good, tmp_path / "bad_voxel.onnx", voxel_size=repr(voxel * 2))
    with pytest.raises(MetadataMismatch, match=f"voxel_size {voxel * 2} != model_config.voxel_size {voxel}"):
        OrtNetwork(bad)
    bad = _rewrite_props(good, tmp_path / "bad_inputs.onnx", inputs='["feats"]')
    with pytest.raises(MetadataMismatch, match="inputs"):
        OrtNetwork(bad)
    bad = _rewrite_props(good, tmp_path / "bad_classes.onnx", raw_ids="[40, 48]")
    with pytest.raises(MetadataMismatch, match="19 classes"):
        OrtNetwork(bad)


def _request(path, **kw):
    return PipelineRequest(path, device="cpu", num_threads=1, warmup=False, **kw)


def test_backend_refuses_a_model_whose_voxel_size_differs_from_the_parameter():
    _, good = exported("lite0", 24)
    voxel = read_onnx_metadata(good)[0].voxel_size
    with pytest.raises(BackendError, match=f"voxel_size = {voxel * 2} m .*trained with {voxel} m"):
        create_pipeline("onnxruntime", _request(good, voxel_size=voxel * 2))
    pipe = create_pipeline("onnxruntime", _request(good, voxel_size=voxel))
    assert {"onnxruntime", "torch"} <= set(available_backends())
    assert pipe.config.name == "lite0" and pipe.config.voxel_size == voxel


def test_backend_refuses_a_model_whose_label_map_differs_from_the_label_config(tmp_path, monkeypatch):
    _, good = exported("lite0", 24)
    other = swapped_label_config(tmp_path)
    monkeypatch.setenv("I2P_ROS_LABEL_CONFIG", str(other))
    with pytest.raises(BackendError, match=f"{good}.*label map differ.*swapped.yaml.*0: model car/10"):
        create_pipeline("onnxruntime", _request(good))


def test_tensorrt_backend_here_fails_with_the_reason():
    from i2p_ros.deploy.trt_backend import trt_unavailable_reason

    reason = trt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and CUDA are available: this checks the error path of machines without them")
    _, good = exported("lite0", 24)
    with pytest.raises(BackendError, match="tensorrt.*(CUDA|tensorrt)"):
        create_pipeline("tensorrt", _request(good))
