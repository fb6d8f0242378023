"""Torchvision-compatible 2D ResNets: exact state-dict layout and forward semantics."""

import pytest
import torch
import torch.nn.functional as F

from i2p_ros.models.resnet2d import RESNET_SPECS, ResNet2d, resnet2d, synthetic_resnet_state_dict
from i2p_ros.weights import WeightsError

# Parameter counts of torchvision.models.resnetN(num_classes=1000), as published by torchvision.
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# len(torchvision resnetN().state_dict()): parameters + BN buffers (3 per BatchNorm).
TORCHVISION_SD_LEN = {18: 122, 34: 218, 50: 320, 101: 626, 152: 932}


@pytest.mark.parametrize("depth", sorted(RESNET_SPECS))
def test_keys_shapes_order_match_synthetic_torchvision_layout(depth):
    model_sd = ResNet2d(depth).state_dict()
    synth = synthetic_resnet_state_dict(depth)
    assert list(model_sd) == list(synth)
    for k, v in synth.items():
        assert model_sd[k].shape == v.shape, k
        assert model_sd[k].dtype == v.dtype, k
    assert len(synth) == TORCHVISION_SD_LEN[depth]
    n_params = sum(v.numel() for k, v in synth.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n_params == TORCHVISION_PARAMS[depth]


def test_known_torchvision_key_spellings():
    sd = synthetic_resnet_state_dict(50)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["layer4.2.bn3.running_var"].shape == (2048,)
    assert sd["fc.weight"].shape == (1000, 2048)
    assert "layer1.0.downsample.0.weight" not in synthetic_resnet_state_dict(18)
    assert synthetic_resnet_state_dict(18)["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], training=False, eps=1e-5)


def _reference_forward(sd, depth, x):
    """Functional ResNet written from torchvision's architecture description, driven by the key names."""
    bottleneck = RESNET_SPECS[depth].block == "bottleneck"
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, n in enumerate(RESNET_SPECS[depth].layers, start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            s = 2 if (stage > 1 and j == 0) else 1
            if bottleneck:  # v1.5: stride on the 3x3
                y = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
                y = F.relu(_bn(F.conv2d(y, sd[p + ".conv2.weight"], stride=s, padding=1), sd, p + ".bn2"))
                y = _bn(F.conv2d(y, sd[p + ".conv3.weight"]), sd, p + ".bn3")
            else:
                y = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=s, padding=1), sd, p + ".bn1"))
                y = _bn(F.conv2d(y, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
            if p + ".downsample.0.weight" in sd:
                x = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1")
            x = F.relu(y + x)
    return F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("depth", [18, 50])
def test_forward_matches_functional_reference(depth):
    sd = synthetic_resnet_state_dict(depth, dtype=torch.float64, seed=depth)
    model = ResNet2d(depth).double().eval()
    model.load_state_dict(sd)
    x = torch.randn(2, 3, 70, 52, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        ref = _reference_forward(sd, depth, x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_features_strides():
    model = ResNet2d(18).eval()
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]


def test_load_file_roundtrip_and_old_format(tmp_path):
    sd = synthetic_resnet_state_dict(18, seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    model = resnet2d(18, weights=str(path))
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k
    # Files from before PyTorch 0.4.1 have no num_batches_tracked; they still load.
    old = synthetic_resnet_state_dict(18, seed=3, num_batches_tracked=False)
    assert not any(k.endswith("num_batches_tracked") for k in old)
    torch.save(old, path)
    model = resnet2d(18, weights=str(path))
    assert torch.equal(model.state_dict()["layer3.1.bn2.running_var"], old["layer3.1.bn2.running_var"])


def test_wrong_depth_file_fails_with_named_key(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(synthetic_resnet_state_dict(50), path)
    with pytest.raises(WeightsError) as err:
        resnet2d(18, weights=str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert "'layer1.0.conv3.weight'" in msg and "unexpected" in msg
    assert "'layer1.0.conv1.weight'" in msg and "(64, 64, 3, 3)" in msg and "(64, 64, 1, 1)" in msg


def test_unknown_depth_rejected():
    with pytest.raises(ValueError, match="depth 19"):
        ResNet2d(19)
    with pytest.raises(ValueError, match="depth 20"):
        synthetic_resnet_state_dict(20)
